"""The dead-letter store: every rejected message, as rotating JSON lines on disk.

A record is written and fsynced before its message is acknowledged, so a rejection is
never silently lost either. Files: ``deadletter.jsonl`` (current) and
``deadletter-<UTC time>.jsonl`` (rotated, oldest removed beyond ``keep``).

Torn lines: a crash mid-append leaves a partial last line, and the next record would be
glued onto it (both then unreadable). On open, such a tail is cut off into
``deadletter-<UTC time>.torn`` before anything is appended; a write the disk refuses
(ENOSPC) is cut back the same moment and raises StoreUnwritable, so the file always ends
on a whole record. The reader reports torn bytes instead of skipping them silently.
"""

from __future__ import annotations

import base64
import contextlib
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import structlog

from ingest.batch import DeadLetter
from ingest.errors import StoreUnwritable

log = structlog.get_logger("ingest.deadletter")

CURRENT = "deadletter.jsonl"


class DeadLetterStore:
    def __init__(self, directory: Path, *, file_bytes: int = 64 << 20, keep: int = 20) -> None:
        self.directory = directory
        self.file_bytes = file_bytes
        self.keep = keep
        directory.mkdir(parents=True, exist_ok=True)
        self._path = directory / CURRENT
        self.torn_bytes = _repair_torn_tail(self._path)
        self._fd = self._open()

    def _open(self) -> int:
        # Unbuffered: after a failed write no half record waits in a buffer to be glued on.
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.lseek(fd, 0, os.SEEK_END)
        return fd

    def append(self, letters: Iterable[DeadLetter]) -> int:
        """Write and fsync; raise StoreUnwritable (having written nothing) if the disk won't."""
        data = b"".join(orjson.dumps(d.to_record()) + b"\n" for d in letters)
        if not data:
            return 0
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
                os.fsync(self._fd)
            raise StoreUnwritable("deadletter", exc) from exc
        if start + len(data) >= self.file_bytes:
            with contextlib.suppress(OSError):  # recorded already; rotation can wait
                self._rotate()
        return data.count(b"\n")

    def _rotate(self) -> None:
        rotated_path = self.directory / f"deadletter-{_stamp()}.jsonl"
        os.rename(self._path, rotated_path)
        try:
            fd = self._open()
        except OSError:
            os.rename(rotated_path, self._path)  # keep appending to the one we have
            raise
        os.close(self._fd)
        self._fd = fd
        rotated = sorted(self.directory.glob("deadletter-*.jsonl"))
        for old in rotated[: max(0, len(rotated) - self.keep)]:
            old.unlink()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _repair_torn_tail(path: Path) -> int:
    """Cut bytes after the last newline into a ``.torn`` file; return how many."""
    try:
        fh = open(path, "r+b")  # noqa: SIM115 - closed below, truncated in place
    except FileNotFoundError:
        return 0
    with fh:
        size = fh.seek(0, os.SEEK_END)
        keep = size
        while keep > 0:
            step = min(keep, 1 << 16)
            fh.seek(keep - step)
            chunk = fh.read(step)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = keep - step + newline + 1
                break
            keep -= step
        if keep == size:
            return 0
        fh.seek(keep)
        torn = fh.read()
        target = path.with_name(f"deadletter-{_stamp()}.torn")
        kept_in: str | None = str(target)
        try:  # kept first: a crash here leaves the bytes twice, not never
            _write_durably(target, torn)
        except OSError as exc:  # a full disk must not stop the start; the bytes are logged
            kept_in = None
            log.error("deadletter_torn_tail_not_kept", error=str(exc), head=repr(torn[:200]))
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    log.warning(
        "deadletter_torn_tail_repaired",
        file=str(path),
        torn_bytes=len(torn),
        kept_in=kept_in,
        reason="a previous run stopped mid-append; that record was never acknowledged",
    )
    return len(torn)


def _write_durably(path: Path, data: bytes) -> None:
    try:
        with open(path, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError:
        with contextlib.suppress(OSError):
            path.unlink()
        raise


@dataclass(frozen=True, slots=True)
class Torn:
    """Bytes of the store that are not a whole record: where, and how many."""

    file: str
    offset: int
    bytes: int


@dataclass(slots=True)
class Scan:
    records: list[dict[str, Any]] = field(default_factory=list)
    torn: list[Torn] = field(default_factory=list)

    @property
    def torn_bytes(self) -> int:
        return sum(t.bytes for t in self.torn)


def scan(directory: Path) -> Scan:
    """Every record, oldest first, and every torn part: unreadable lines and cut-off tails
    (``.torn`` files) are reported, never skipped silently."""
    out = Scan()
    files = sorted(directory.glob("deadletter-*.jsonl"))
    if (directory / CURRENT).exists():
        files.append(directory / CURRENT)
    for path in files:
        offset = 0
        with open(path, "rb") as fh:
            for raw in fh:
                record: object = None
                with contextlib.suppress(orjson.JSONDecodeError):
                    record = orjson.loads(raw)
                if isinstance(record, dict) and raw.endswith(b"\n"):
                    out.records.append(record)
                else:
                    out.torn.append(Torn(str(path), offset, len(raw)))
                offset += len(raw)
    for path in sorted(directory.glob("deadletter-*.torn")):
        out.torn.append(Torn(str(path), 0, path.stat().st_size))
    return out


def read_records(directory: Path) -> Iterator[dict[str, Any]]:
    """Oldest first; torn parts are in ``scan(directory).torn``."""
    yield from scan(directory).records


def decode_payload(record: dict[str, Any]) -> bytes:
    return base64.b64decode(record.get("payload", ""))


def summarise(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    by_reason: Counter[str] = Counter()
    by_device: Counter[str] = Counter()
    first = last = None
    total = 0
    for rec in records:
        total += 1
        by_reason[str(rec.get("reason"))] += 1
        parts = str(rec.get("topic", "")).split("/")
        by_device[parts[4] if len(parts) == 6 else "(bad topic)"] += 1
        ts = rec.get("received_at")
        first = first or ts
        last = ts
    return {
        "total": total,
        "by_reason": dict(by_reason.most_common()),
        "top_devices": dict(by_device.most_common(10)),
        "first_received_at": first,
        "last_received_at": last,
    }
