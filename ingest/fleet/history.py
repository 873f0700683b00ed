"""The stage's history writes: ``collection``, ``anomaly`` and ``alert`` lines → InfluxDB.

One owner (:meth:`History.run`) takes line chunks from a bounded queue and writes them; while
the database is unavailable (after a few quick retries) they go to a spool of their own
(``data_dir/fleet-spool``, the same fsynced files as the raw spool) and :meth:`replay_forever`
writes them back in order. The delivery task only waits when the queue is full, i.e. when the
database is down *and* the fleet spool is full: then acknowledgements are held (one error
line, a gauge), exactly as for the raw spool — raw data is many times larger, so that one
fills first. Lines the database refuses (a field type conflict, say) are isolated by halving,
logged and counted; they cannot be written by any retry.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from ingest.batch import Batch, Source
from ingest.errors import StoreUnwritable, WriteRefused, WriteUnavailable
from ingest.spool import Spool
from ingest.writers import Writer

log = structlog.get_logger("ingest.fleet")

QUEUE_CHUNKS = 64
CHUNK_LINES = 5000
ATTEMPTS = 2
RETRY_S = 0.5
REPLAY_MAX_S = 5.0
HOLD_RETRY_S = 1.0
_SOURCE_TOPIC = "taza/v1/_fleet/history"


class History:
    def __init__(self, writer: Writer, spool: Spool, registry: CollectorRegistry) -> None:
        self.writer = writer
        self.spool = spool
        self.queue: asyncio.Queue[list[str]] = asyncio.Queue(maxsize=QUEUE_CHUNKS)
        self.pending: list[str] = []  # from the journal replay at start, before the queue runs
        self.busy = False
        self.spool_full = False
        self.progress = 0  # chunks stored or attempts made: the watchdog's measure
        self._drained = asyncio.Event()
        self._spooled = asyncio.Event()
        if not spool.empty:
            self._spooled.set()
        self.written = Counter(
            "taza_fleet_history_lines_written_total",
            "collection / anomaly / alert lines written to the database",
            registry=registry,
        )
        self.refused = Counter(
            "taza_fleet_history_lines_refused_total",
            "history lines the database refused (logged; no retry can store them)",
            registry=registry,
        )
        self.spooled = Counter(
            "taza_fleet_history_lines_spooled_total",
            "history lines kept in data_dir/fleet-spool while the database was unavailable",
            registry=registry,
        )
        self.spool_bytes = Gauge(
            "taza_fleet_spool_bytes", "bytes in data_dir/fleet-spool", registry=registry
        )
        self.full_gauge = Gauge(
            "taza_fleet_spool_full",
            "1 while the fleet spool cannot take history lines (acknowledgements held)",
            registry=registry,
        )
        self.spool_bytes.set(spool.bytes)

    @property
    def idle(self) -> bool:
        """Every line handed over so far is in the database or the fleet spool."""
        return not self.busy and self.queue.empty() and not self.pending

    async def put(self, lines: list[str]) -> None:
        if lines:
            self._drained.clear()
            await self.queue.put(lines)

    async def run(self) -> None:
        if self.pending:
            lines, self.pending = self.pending, []
            self.busy = True
            await self._store(lines)
            self.busy = False
        while True:
            if self.queue.empty():
                self._drained.set()
            lines = await self.queue.get()
            self.busy = True
            while len(lines) < CHUNK_LINES and not self.queue.empty():
                lines += self.queue.get_nowait()
            await self._store(lines)
            self.busy = False

    async def flush(self) -> None:
        """Until everything handed over is stored (the caller bounds the wait)."""
        while not self.idle:
            self._drained.clear()
            await self._drained.wait()

    async def _store(self, lines: list[str]) -> None:
        if self.spool.empty:
            for attempt in range(ATTEMPTS):
                try:
                    await self._write(lines)
                    self.progress += 1
                    return
                except WriteUnavailable as exc:
                    self.progress += 1
                    if attempt + 1 < ATTEMPTS:
                        await asyncio.sleep(max(RETRY_S, exc.retry_after or 0.0))
                    else:
                        log.warning(
                            "fleet_history_database_unavailable",
                            error=exc.message,
                            action="spooling to data_dir/fleet-spool",
                        )
        await self._spool(lines)

    async def _spool(self, lines: list[str]) -> None:
        batch = Batch(
            lines=lines,
            origins=[0] * len(lines),
            sources=[Source(_SOURCE_TOPIC, b"", datetime.now(UTC))],
        )
        held = False
        while True:
            try:
                if self.spool.append(batch):
                    break
                why = f"fleet spool full ({self.spool.max_bytes} bytes)"
            except StoreUnwritable as exc:
                why = exc.message
            if not held:
                log.error(
                    "fleet_spool_full",
                    cause=why,
                    action="holding acknowledgements while the database is down; retrying "
                    "each second",
                )
                held = True
                self.spool_full = True
                self.full_gauge.set(1)
            await asyncio.sleep(HOLD_RETRY_S)
            if self.spool.empty:
                try:
                    await self._write(lines)
                    break
                except WriteUnavailable:
                    continue
        if held:
            self.spool_full = False
            self.full_gauge.set(0)
            log.info("fleet_spool_full_cleared")
        self.progress += 1
        self.spooled.inc(len(lines))
        self.spool_bytes.set(self.spool.bytes)
        self._spooled.set()

    async def replay_forever(self) -> None:
        """Owner of fleet-spool replay: oldest first, removed once written."""
        delay = RETRY_S
        while True:
            await self._spooled.wait()
            spooled = self.spool.oldest()
            if spooled is None:
                self._spooled.clear()
                continue
            try:
                await self._write(spooled.lines)
            except WriteUnavailable as exc:
                self.progress += 1
                await asyncio.sleep(max(delay, exc.retry_after or 0.0))
                delay = min(delay * 2, REPLAY_MAX_S)
                continue
            delay = RETRY_S
            self.spool.remove(spooled)
            self.progress += 1
            self.spool_bytes.set(self.spool.bytes)
            log.info("fleet_spool_replayed", lines=len(spooled.lines), left=self.spool.count)

    async def _write(self, lines: list[str]) -> None:
        """Write all; refused lines are isolated by halving, logged and counted."""
        try:
            await self.writer.write(("\n".join(lines) + "\n").encode())
        except WriteRefused as exc:
            if len(lines) == 1:
                self.refused.inc()
                log.error("fleet_history_line_refused", error=exc.message, line=lines[0][:300])
                return
            half = len(lines) // 2
            await self._write(lines[:half])
            await self._write(lines[half:])
            return
        self.written.inc(len(lines))
