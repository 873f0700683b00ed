"""Delivery: each batch is stored — in the database, or durably in the spool — and only
then acknowledged. The single owner of writes, retries, splitting and the spool.

Per batch (a transaction, as Telegraf's running_output treats its writes):
- rejected messages → dead-letter store (fsync);
- lines → database, retried with exponential backoff and jitter while the database is
  unavailable; a refused write is split in halves until the refused lines are isolated,
  those go to the dead-letter store and the rest is written;
- still unavailable → spool (fsync). While the spool holds anything, new batches join it
  so that replay keeps their order;
- spool full → nothing is acknowledged; we keep trying, and the broker keeps the rest;
- then, and only then, the batch's messages are acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from devices import Reason
from ingest.batch import Acknowledger, Batch, DeadLetter, DeliveredSink, Source
from ingest.deadletter import DeadLetterStore
from ingest.errors import WriteRefused, WriteUnavailable
from ingest.metrics import Metrics
from ingest.spool import Spool
from ingest.writers import Writer

log = structlog.get_logger("ingest.delivery")

Republisher = Callable[[list[DeadLetter]], None]


class Delivery:
    def __init__(
        self,
        writer: Writer,
        spool: Spool,
        deadletters: DeadLetterStore,
        metrics: Metrics,
        acknowledger: Acknowledger,
        *,
        sink: DeliveredSink | None = None,
        attempts: int = 3,
        republish: Republisher | None = None,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
    ) -> None:
        self.writer = writer
        self.spool = spool
        self.deadletters = deadletters
        self.metrics = metrics
        self.acknowledger = acknowledger
        self.sink = sink
        self.handled = 0  # batches done: the watchdog's measure of progress
        self.in_hand = False
        self.attempts = attempts
        self.republish = republish
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.database_up = True
        self.spool_full = False
        self.stopping = False
        self._spooled = asyncio.Event()
        if not spool.empty:
            self._spooled.set()
        metrics.spool_bytes.set(spool.bytes)

    async def run(self, batches: asyncio.Queue[Batch | None]) -> None:
        """Owner of the batch queue; returns after the sentinel, every batch handled.

        A stored batch is acknowledged, then its accepted messages go to the sink, in batch
        order; a batch that was not stored reaches neither."""
        while (batch := await batches.get()) is not None:
            self.in_hand = True
            stored = await self.store(batch)
            if stored:
                self.acknowledger.ack(batch.acks)
                if batch.first_received:
                    self.metrics.ingest_lag.set(time.monotonic() - batch.first_received)
                if self.sink is not None and batch.accepted:
                    await self.sink.delivered(batch.accepted)
            self.in_hand = False
            self.handled += 1

    async def store(self, batch: Batch) -> bool:
        """True once everything in the batch is durable; False only when stopping with
        the spool full and the database down (then nothing is acknowledged)."""
        started = time.monotonic()
        if batch.rejects:
            self._dead_letter(batch.rejects)
        if not batch.lines:
            return True
        return await self._store_lines(batch, started)

    async def _store_lines(self, batch: Batch, started: float) -> bool:
        if self.spool.empty and self.database_up:
            try:
                await self._write_retrying(batch.lines, batch.origins, batch.sources)
                self._log_batch(batch, "database", started)
                return True
            except WriteUnavailable as exc:
                self.mark_database_up(False)
                log.warning("database_unavailable", error=exc.message, action="spooling")
        warned = False
        while not self.spool.append(batch):
            self._set_spool_full(True)
            if not warned:
                log.error(
                    "spool_full",
                    spool_bytes=self.spool.bytes,
                    limit=self.spool.max_bytes,
                    action="holding acknowledgements; the broker keeps the messages",
                )
                warned = True
            if self.stopping:
                return False
            await asyncio.sleep(1.0)
            if self.spool.empty and self.database_up:
                return await self._store_lines(batch, started)
        self._set_spool_full(False)
        self.metrics.spooled_batches.inc()
        self.metrics.spool_bytes.set(self.spool.bytes)
        self._spooled.set()
        self._log_batch(batch, "spool", started)
        return True

    async def replay_forever(self) -> None:
        """Owner of spool replay: oldest batch first, removed once written."""
        delay = self.retry_initial_s
        while True:
            await self._spooled.wait()
            spooled = self.spool.oldest()
            if spooled is None:
                self._spooled.clear()
                self.mark_database_up(True)
                continue
            try:
                await self._write_all(spooled.lines, spooled.origins, spooled.sources)
            except WriteUnavailable as exc:
                log.debug("replay_waiting", error=exc.message, retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            delay = self.retry_initial_s
            self.spool.remove(spooled)
            self.metrics.spool_bytes.set(self.spool.bytes)
            log.info(
                "spool_replayed", lines=len(spooled.lines), spool_batches_left=self.spool.count
            )
            self._set_spool_full(False)
            if self.spool.empty:
                self.mark_database_up(True)

    async def _write_retrying(
        self, lines: list[str], origins: list[int], sources: Sequence[Source]
    ) -> None:
        def before_sleep(state: RetryCallState) -> None:
            self.metrics.write_retries.inc()

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential_jitter(
                multiplier=self.retry_initial_s, max=self.retry_max_s, jitter=self.retry_initial_s
            ),
            retry=retry_if_exception_type(WriteUnavailable),
            before_sleep=before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._write_all(lines, origins, sources)

    async def _write_all(
        self, lines: list[str], origins: list[int], sources: Sequence[Source]
    ) -> None:
        """One complete write. Refused lines are dead-lettered only once everything else is
        stored: an attempt that fails half-way is retried (or spooled) whole, and must not
        have recorded its refusals already."""
        refused: list[DeadLetter] = []
        await self._write_split(lines, origins, sources, refused)
        if refused:
            self._dead_letter(refused)

    async def _write_split(
        self,
        lines: list[str],
        origins: list[int],
        sources: Sequence[Source],
        refused: list[DeadLetter],
    ) -> None:
        """Write; on refusal, halve until each refused line stands alone and collect it.

        Re-writing points that a partial write already stored is harmless: identical
        points overwrite themselves.
        """
        started = time.monotonic()
        try:
            await self.writer.write(("\n".join(lines) + "\n").encode())
        except WriteUnavailable:
            self.metrics.write_errors.labels(kind="unavailable").inc()
            raise
        except WriteRefused as exc:
            self.metrics.write_errors.labels(kind="refused").inc()
            if len(lines) == 1:
                src = sources[origins[0]]
                refused.append(
                    DeadLetter(
                        src.topic,
                        src.payload,
                        Reason.REFUSED_BY_DATABASE,
                        f"{exc.message} — line: {lines[0][:300]}",
                        src.received_at,
                    )
                )
                return
            half = len(lines) // 2
            await self._write_split(lines[:half], origins[:half], sources, refused)
            await self._write_split(lines[half:], origins[half:], sources, refused)
            return
        self.mark_database_up(True)
        self.metrics.points_written.inc(len(lines))
        self.metrics.batch_write_seconds.observe(time.monotonic() - started)

    def _dead_letter(self, letters: list[DeadLetter]) -> None:
        self.deadletters.append(letters)
        for d in letters:
            self.metrics.rejected.labels(reason=d.reason.value).inc()
        if self.republish is not None:
            self.republish(letters)

    def _set_spool_full(self, full: bool) -> None:
        self.spool_full = full
        self.metrics.spool_full.set(1 if full else 0)

    def mark_database_up(self, up: bool) -> None:
        self.database_up = up
        self.metrics.database_up.set(1 if up else 0)

    @staticmethod
    def _log_batch(batch: Batch, destination: str, started: float) -> None:
        log.debug(
            "batch_stored",
            destination=destination,
            messages=len(batch),
            lines=len(batch.lines),
            rejected=len(batch.rejects),
            seconds=round(time.monotonic() - started, 4),
        )
