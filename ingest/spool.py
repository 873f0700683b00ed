"""The durable spool: batches the database could not take, kept on disk until it can.

One file per batch, written to a temporary name, fsynced, renamed and the directory
fsynced — only then is the batch's message acknowledged. Replayed oldest first, removed
once written. Bounded by ``max_bytes``: when full, the caller stops acknowledging and
the broker keeps the messages.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson

from ingest.batch import Batch, Source


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
        self._next = int(files[-1].stem) + 1 if files else 0

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
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.rename(final)
        _fsync_dir(self.directory)
        self._next += 1
        self.bytes += len(data)
        self.count += 1
        return True

    def oldest(self) -> SpooledBatch | None:
        files = self._files()
        if not files:
            return None
        return _deserialise(files[0])

    def remove(self, spooled: SpooledBatch) -> None:
        size = spooled.path.stat().st_size
        spooled.path.unlink()
        _fsync_dir(self.directory)
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
            rec = orjson.loads(raw)
            sources.append(
                Source(rec["t"], base64.b64decode(rec["p"]), datetime.fromisoformat(rec["r"]))
            )
            lines.extend(rec["l"])
            origins.extend([index] * len(rec["l"]))
    return SpooledBatch(path, lines, origins, sources)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
