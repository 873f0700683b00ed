"""The dead-letter store: every rejected message, as rotating JSON lines on disk.

A record is written and fsynced before its message is acknowledged, so a rejection is
never silently lost either. Files: ``deadletter.jsonl`` (current) and
``deadletter-<UTC time>.jsonl`` (rotated, oldest removed beyond ``keep``).
"""

from __future__ import annotations

import base64
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ingest.batch import DeadLetter

CURRENT = "deadletter.jsonl"


class DeadLetterStore:
    def __init__(self, directory: Path, *, file_bytes: int = 64 << 20, keep: int = 20) -> None:
        self.directory = directory
        self.file_bytes = file_bytes
        self.keep = keep
        directory.mkdir(parents=True, exist_ok=True)
        self._path = directory / CURRENT
        self._fh = open(self._path, "ab")  # noqa: SIM115 - owned for the store's lifetime

    def append(self, letters: Iterable[DeadLetter]) -> int:
        data = b"".join(orjson.dumps(d.to_record()) + b"\n" for d in letters)
        if not data:
            return 0
        self._fh.write(data)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        if self._fh.tell() >= self.file_bytes:
            self._rotate()
        return data.count(b"\n")

    def _rotate(self) -> None:
        self._fh.close()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self._path.rename(self.directory / f"deadletter-{stamp}.jsonl")
        rotated = sorted(self.directory.glob("deadletter-*.jsonl"))
        for old in rotated[: max(0, len(rotated) - self.keep)]:
            old.unlink()
        self._fh = open(self._path, "ab")  # noqa: SIM115

    def close(self) -> None:
        self._fh.close()


def read_records(directory: Path) -> Iterator[dict[str, Any]]:
    """Oldest first; a torn last line (crash mid-write, never acknowledged) is skipped."""
    files = sorted(directory.glob("deadletter-*.jsonl"))
    if (directory / CURRENT).exists():
        files.append(directory / CURRENT)
    for path in files:
        with open(path, "rb") as fh:
            for raw in fh:
                try:
                    record = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(record, dict):
                    yield record


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
