"""The durable spool: batches the database could not take, kept on disk until it can.

One file per batch, written to a temporary name, fsynced, renamed and the directory
fsynced — only then is the batch's message acknowledged. Replayed oldest first, removed
once written. Bounded by ``max_bytes``: when full, the caller stops acknowledging and
the broker keeps the messages. A write the disk refuses (ENOSPC, EIO) leaves nothing
behind and raises StoreUnwritable, so the caller holds acknowledgements the same way.

A spool file that cannot be read back (torn or corrupt: a disk or a hand that broke the
rename-after-fsync rule) would block replay for ever or crash it; it is moved to
``quarantine/``, logged and counted, and replay goes on with the next file.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson
import structlog

from ingest.batch import Batch, Source
from ingest.durable import fsync_dir
from ingest.errors import StoreUnwritable

log = structlog.get_logger("ingest.spool")

QUARANTINE = "quarantine"


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    path: Path
    lines: list[str]
    origins: list[int]
    sources: list[Source]


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        for tmp in directory.glob("*.tmp"):
            tmp.unlink()  # never renamed, so never acknowledged
        files = self._files()
        self.bytes = sum(p.stat().st_size for p in files)
        self.count = len(files)
        self.quarantined = 0
        self._next = max((int(p.stem) for p in files if p.stem.isdigit()), default=-1) + 1

    def _files(self) -> list[Path]:
        return sorted(self.directory.glob("*.spool"))

    @property
    def empty(self) -> bool:
        return self.count == 0

    def append(self, batch: Batch) -> bool:
        """Store durably; False (nothing written) when the batch does not fit."""
        data = _serialise(batch)
        if self.bytes + len(data) > self.max_bytes:
            return False
        final = self.directory / f"{self._next:020d}.spool"
        tmp = final.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            tmp.rename(final)
            fsync_dir(self.directory)
        except OSError as exc:
            for path in (tmp, final):
                with contextlib.suppress(OSError):
                    path.unlink()
            raise StoreUnwritable("spool", exc) from exc
        self._next += 1
        self.bytes += len(data)
        self.count += 1
        return True

    def oldest(self) -> SpooledBatch | None:
        """The oldest readable batch; unreadable files on the way are quarantined."""
        for path in self._files():
            try:
                return _deserialise(path)
            except (ValueError, KeyError, TypeError, binascii.Error, OSError) as exc:
                self._quarantine(path, exc)
        return None

    def _quarantine(self, path: Path, exc: Exception) -> None:
        size = path.stat().st_size
        target = self.directory / QUARANTINE / path.name
        target.parent.mkdir(exist_ok=True)
        path.rename(target)
        fsync_dir(self.directory)
        self.bytes -= size
        self.count -= 1
        self.quarantined += 1
        log.error(
            "spool_file_quarantined",
            file=str(target),
            bytes=size,
            error=f"{type(exc).__name__}: {exc}"[:300],
            action="replay continues with the next file; inspect or re-publish this one by hand",
        )

    def remove(self, spooled: SpooledBatch) -> None:
        size = spooled.path.stat().st_size
        spooled.path.unlink()
        fsync_dir(self.directory)
        self.bytes -= size
        self.count -= 1


def _serialise(batch: Batch) -> bytes:
    per_source: list[list[str]] = [[] for _ in batch.sources]
    for line, origin in zip(batch.lines, batch.origins, strict=True):
        per_source[origin].append(line)
    return b"".join(
        orjson.dumps(
            {
                "t": src.topic,
                "p": base64.b64encode(src.payload).decode("ascii"),
                "r": src.received_at.isoformat(),
                "l": lines,
            }
        )
        + b"\n"
        for src, lines in zip(batch.sources, per_source, strict=True)
    )


def _deserialise(path: Path) -> SpooledBatch:
    lines: list[str] = []
    origins: list[int] = []
    sources: list[Source] = []
    with open(path, "rb") as fh:
        for index, raw in enumerate(fh):
            if not raw.endswith(b"\n"):
                raise ValueError(f"torn record at line {index + 1}: no newline")
            rec = orjson.loads(raw)
            sources.append(
                Source(rec["t"], base64.b64decode(rec["p"]), datetime.fromisoformat(rec["r"]))
            )
            lines.extend(rec["l"])
            origins.extend([index] * len(rec["l"]))
    if not sources:
        raise ValueError("empty spool file")
    return SpooledBatch(path, lines, origins, sources)
