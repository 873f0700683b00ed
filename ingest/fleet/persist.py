"""The stage's local files in ``data_dir/fleet/``: the snapshot and the journal since it.

A snapshot of 10k devices takes ~0.3 s to write, so it cannot follow every batch (five a
second). Instead every delivered batch is appended to ``journal`` (one JSON line, fdatasync)
before its PUBACK, and the snapshot is written every few seconds — tmp, fsync, rename,
directory fsync — after which the journal is truncated. At start: restore the snapshot,
re-apply the journal. A message applied twice changes nothing (same ``seq``/``ts``), so a
crash between the rename and the truncation is harmless. A torn last journal line (a crash
mid-write) is skipped.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import orjson
import structlog

from devices import Ignored, Limits, Rejected, decode
from devices.message import Message
from ingest.batch import Accepted, Delivered
from ingest.fleet.journal_line import EPOCH, US, journal_line

log = structlog.get_logger("ingest.fleet")

SNAPSHOT = "snapshot.json"
JOURNAL = "journal"
# The journal holds messages that already passed the contract when they arrived; decoding
# them again must not judge them by the time of the restart, nor by limits changed since (a
# limit only refuses, never changes what a message decodes to).
_REPLAY_LIMITS = Limits(
    max_payload_bytes=1 << 30,
    max_depth=1 << 20,
    max_age=timedelta(days=36500),
    max_future=timedelta(days=36500),
    strict=False,
)
_MS = timedelta(milliseconds=1)


class Journal:
    """Delivered batches since the last snapshot, one JSON line each: ``{"n": now_ms, "r":
    [[topic, payload, received_at µs], ...]}`` — each message as it arrived, so replay is
    the same decode with the same receive time (it anchors ``ts`` and stamps ``state``).
    Raw, not re-encoded: ``to_payload`` per message was 5.5 % of the service's CPU."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries = 0
        self.writing = False
        self._fh = open(path, "ab")  # noqa: SIM115 - owned for the life of the stage

    def append(self, now_ms: int, messages: Sequence[Accepted]) -> None:
        self.write(self.record(now_ms, Delivered.of(messages).sources))

    record = staticmethod(journal_line)
    """One batch's line (:func:`~ingest.fleet.journal_line.journal_line`, compiled)."""

    def write(self, record: bytes) -> None:
        """Append and fdatasync: blocking, so the stage runs it in a worker thread (the
        syscalls release the GIL) while the batch is applied. ``writing`` is the stage's to
        set around it: no truncation while a record is in flight."""
        self._fh.write(record)
        self._fh.flush()
        os.fdatasync(self._fh.fileno())
        self.entries += 1

    def truncate(self) -> None:
        self._fh.truncate(0)
        self._fh.seek(0)
        os.fsync(self._fh.fileno())
        self.entries = 0

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._fh.close()


def read_journal(path: Path) -> Iterator[tuple[int, list[tuple[str, Message]]]]:
    """(now_ms, [(device_id, decoded message)]) per record; a torn tail is skipped. Reads
    the records of the taza before this one too (``"m"``: re-encoded payload, its ``ts``)."""
    if not path.exists():
        return
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            if not raw.endswith(b"\n"):
                log.warning("fleet_journal_torn_tail", line=number, action="skipped")
                return
            try:
                rec = orjson.loads(raw)
                now_ms = int(rec["n"])
                items, unit = (rec["r"], US) if "r" in rec else (rec["m"], _MS)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                log.error("fleet_journal_damaged", line=number, error=str(exc), action="skipped")
                continue
            out: list[tuple[str, Message]] = []
            for topic, payload, at in items:
                try:
                    message = decode(topic, payload.encode(), EPOCH + at * unit, _REPLAY_LIMITS)
                except (Rejected, Ignored) as exc:
                    log.error("fleet_journal_message_refused", topic=topic, error=str(exc))
                    continue
                out.append((message.topic.device_id, message))
            yield now_ms, out
