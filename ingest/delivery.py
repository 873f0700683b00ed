"""Delivery: each batch is stored — in the database, or durably in the spool — and only
then acknowledged. The single owner of writes, retries, splitting and the spool.

Per batch (a transaction, as Telegraf's running_output treats its writes):
- rejected messages → dead-letter store (fsync);
- lines → database, retried with exponential backoff and jitter while the database is
  unavailable; a refused write is split in halves until the refused lines are isolated,
  those go to the dead-letter store and the rest is written;
- still unavailable → spool (fsync). While the spool holds anything, new batches join it
  so that replay keeps their order;
- spool full, or a store the disk refuses (ENOSPC, EIO: the spool or the dead-letter
  store) → nothing is acknowledged; one error line says why, a gauge and /readyz show it,
  we keep trying each second and resume by ourselves; the broker keeps the rest;
- then, and only then, the batch's messages are acknowledged.

Waits before a retry or a replay honour the database's Retry-After (429/503), capped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from devices import Reason
from ingest.batch import Acknowledger, Batch, DeadLetter, DeliveredSink, Source
from ingest.deadletter import DeadLetterStore
from ingest.errors import LimitRefusal, StoreUnwritable, WriteRefused, WriteUnavailable
from ingest.metrics import Metrics
from ingest.spool import Spool
from ingest.writers import Writer
from ingest.writers.base import names_line

log = structlog.get_logger("ingest.delivery")

Republisher = Callable[[list[DeadLetter]], None]
AHEAD = 1  # batches stored ahead of the sink (see Delivery.run)


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
        hold_retry_s: float = 1.0,
    ) -> None:
        self.writer = writer
        self.spool = spool
        self.deadletters = deadletters
        self.metrics = metrics
        self.acknowledger = acknowledger
        self.sink = sink
        self.handled = 0  # batches done: the watchdog's measure of progress
        self._in_hand = 0
        self.attempts = attempts
        self.republish = republish
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.hold_retry_s = hold_retry_s
        self.database_up = True
        self.spool_full = False
        self.deadletter_full = False
        self.stopping = False
        self._limits_reported: set[str] = set()
        self._spooled = asyncio.Event()
        if not spool.empty:
            self._spooled.set()
        metrics.spool_bytes.set(spool.bytes)

    @property
    def in_hand(self) -> bool:
        """A batch taken from the queue and not yet acknowledged (or given up)."""
        return self._in_hand > 0

    async def run(self, batches: asyncio.Queue[Batch | None]) -> None:
        """Owner of the batch queue; returns after the sentinel, every batch handled.

        A stored batch's accepted messages go to the sink, in batch order, and only then is
        the batch acknowledged: a message the broker has forgotten is in the database and in
        the sink's own record (the fleet stage's journal), so a crash between the two cannot
        lose its effect on the state — at worst it is redelivered, which changes nothing. A
        batch that was not stored reaches neither; a sink that fails leaves it unacknowledged
        and brings the service down.

        With a sink, the next batch is stored while the sink takes the last one: a write is
        mostly waiting on the database (≈ 85 ms a 5,000-line batch while draining, of which
        ≈ 25 ms its CPU), the fleet stage ≈ 70 ms, and one after the other they were the
        drain's pace. Stores stay one at a time and in order (the spool's replay order
        depends on it), sinks and acknowledgements in batch order; at most ``AHEAD`` batch is
        stored (or being stored) beyond the one the sink has."""
        if self.sink is None:
            while (batch := await batches.get()) is not None:
                self._in_hand += 1
                if await self.store(batch):
                    self._acknowledge(batch)
                self._done()
            return
        stored: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=AHEAD)
        ahead = asyncio.Semaphore(AHEAD + 1)  # taken per batch stored, until acknowledged
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._sink_and_ack(self.sink, stored, ahead), name="sink")
                while (batch := await batches.get()) is not None:
                    await ahead.acquire()
                    self._in_hand += 1
                    if await self.store(batch):
                        await stored.put(batch)
                    else:
                        ahead.release()
                        self._done()
                await stored.put(None)
        except* Exception as group:  # the store's or the sink's own error, not a group of one
            raise group.exceptions[0] from None

    async def _sink_and_ack(
        self, sink: DeliveredSink, stored: asyncio.Queue[Batch | None], ahead: asyncio.Semaphore
    ) -> None:
        while (batch := await stored.get()) is not None:
            if batch.messages:
                await sink.delivered(batch.delivered())
            self._acknowledge(batch)
            ahead.release()
            self._done()

    def _acknowledge(self, batch: Batch) -> None:
        self.acknowledger.ack(batch.acks)
        if batch.first_received:
            self.metrics.ingest_lag.set(time.monotonic() - batch.first_received)

    def _done(self) -> None:
        self._in_hand -= 1
        self.handled += 1

    async def store(self, batch: Batch) -> bool:
        """True once everything in the batch is durable; False only when stopping while a
        store cannot take it (then nothing is acknowledged)."""
        started = time.monotonic()
        if batch.rejects and not await self._dead_letter(batch.rejects):
            return False
        if not batch.lines:
            return True
        try:
            return await self._store_lines(batch, started)
        except _HeldWhileStopping:
            return False

    async def _store_lines(self, batch: Batch, started: float) -> bool:
        if self.spool.empty and self.database_up:
            try:
                batch.refused = await self._write_retrying(
                    batch.lines, batch.origins, batch.sources
                )
                self._log_batch(batch, "database", started)
                return True
            except WriteUnavailable as exc:
                self.mark_database_up(False)
                log.warning("database_unavailable", error=exc.message, action="spooling")
        held = False
        while True:
            try:
                if self.spool.append(batch):
                    break
                cause, reason = (
                    f"TAZA_SPOOL_MAX_BYTES ({self.spool.max_bytes}) reached",
                    "max_bytes",
                )
            except StoreUnwritable as exc:
                cause, reason = exc.message, exc.reason
                self.metrics.store_write_errors.labels(store="spool", reason=reason).inc()
            self._set_spool_full(True)
            if not held:
                log.error(
                    "spool_full",
                    reason=reason,
                    cause=cause,
                    spool_bytes=self.spool.bytes,
                    action="holding acknowledgements, retrying each second; "
                    "the broker keeps the messages",
                )
                held = True
            if self.stopping:
                return False
            await asyncio.sleep(self.hold_retry_s)
            if self.spool.empty and await self._try_database(batch):
                self._set_spool_full(False)
                log.info("spool_full_cleared", destination="database")
                self._log_batch(batch, "database", started)
                return True
        self._set_spool_full(False)
        if held:
            log.info("spool_full_cleared", destination="spool")
        self.metrics.spooled_batches.inc()
        self.metrics.spool_bytes.set(self.spool.bytes)
        self._spooled.set()
        self._log_batch(batch, "spool", started)
        return True

    async def _try_database(self, batch: Batch) -> bool:
        """One write attempt while the spool cannot take the batch and holds nothing older."""
        try:
            batch.refused = await self._write_all(batch.lines, batch.origins, batch.sources)
        except WriteUnavailable:
            return False
        return True

    async def replay_forever(self) -> None:
        """Owner of spool replay: oldest batch first, removed once written."""
        delay = self.retry_initial_s
        while True:
            await self._spooled.wait()
            quarantined = self.spool.quarantined
            spooled = self.spool.oldest()
            self.metrics.spool_quarantined.inc(self.spool.quarantined - quarantined)
            if quarantined != self.spool.quarantined:
                self.metrics.spool_bytes.set(self.spool.bytes)
            if spooled is None:
                self._spooled.clear()
                self.mark_database_up(True)
                continue
            try:
                await self._write_all(spooled.lines, spooled.origins, spooled.sources)
            except _HeldWhileStopping:
                await asyncio.sleep(self.hold_retry_s)
                continue
            except WriteUnavailable as exc:
                wait = max(delay, exc.retry_after or 0.0)
                log.debug("replay_waiting", error=exc.message, retry_in_s=round(wait, 2))
                await asyncio.sleep(wait)
                delay = min(delay * 2, self.retry_max_s)
                continue
            delay = self.retry_initial_s
            self.spool.remove(spooled)
            self.metrics.spool_bytes.set(self.spool.bytes)
            log.info(
                "spool_replayed", lines=len(spooled.lines), spool_batches_left=self.spool.count
            )
            if self.spool.empty:
                self.mark_database_up(True)

    async def _write_retrying(
        self, lines: list[str], origins: list[int], sources: Sequence[Source]
    ) -> set[int]:
        """The indices of the sources the database refused (dead-lettered), once written."""

        def before_sleep(state: RetryCallState) -> None:
            self.metrics.write_retries.inc()

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=_HonourRetryAfter(
                wait_exponential_jitter(
                    multiplier=self.retry_initial_s,
                    max=self.retry_max_s,
                    jitter=self.retry_initial_s,
                )
            ),
            retry=retry_if_exception_type(WriteUnavailable),
            before_sleep=before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._write_all(lines, origins, sources)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _write_all(
        self, lines: list[str], origins: list[int], sources: Sequence[Source]
    ) -> set[int]:
        """One complete write. Refused lines are dead-lettered only once everything else is
        stored: an attempt that fails half-way is retried (or spooled) whole, and must not
        have recorded its refusals already."""
        refused: list[tuple[int, DeadLetter]] = []
        await self._write_split(lines, origins, sources, refused)
        if refused and not await self._dead_letter([d for _, d in refused]):
            raise _HeldWhileStopping
        return {origin for origin, _ in refused}

    async def _write_split(
        self,
        lines: list[str],
        origins: list[int],
        sources: Sequence[Source],
        refused: list[tuple[int, DeadLetter]],
    ) -> None:
        """Write; on refusal, isolate the refused lines and collect them, in as few requests
        as the reply allows: all of them when it says every point was dropped; the lines of
        the series key it names (a limit refusal); else halve until each stands alone.

        Re-writing points that a partial write already stored is harmless: identical
        points overwrite themselves.
        """
        while True:
            started = time.monotonic()
            try:
                await self.writer.write(("\n".join(lines) + "\n").encode())
            except WriteUnavailable:
                self.metrics.write_errors.labels(kind="unavailable").inc()
                raise
            except WriteRefused as exc:
                self.metrics.write_errors.labels(kind="refused").inc()
                if exc.limit is not None:
                    self._report_limit(exc.limit, exc.message)
                if len(lines) == 1 or exc.dropped == len(lines):
                    self._refuse(exc, range(len(lines)), lines, origins, sources, refused)
                    return
                named = (
                    [i for i, line in enumerate(lines) if names_line(exc.limit, line)]
                    if exc.limit is not None
                    else []
                )
                if named:
                    self._refuse(exc, named, lines, origins, sources, refused)
                    gone = set(named)
                    keep = [i for i in range(len(lines)) if i not in gone]
                    if not keep:
                        return
                    lines = [lines[i] for i in keep]
                    origins = [origins[i] for i in keep]
                    left = (exc.dropped or 0) - len(named)
                    if left <= max(1, len(lines).bit_length()):
                        continue  # few left: one request per refused series key
                half = len(lines) // 2
                await self._write_split(lines[:half], origins[:half], sources, refused)
                await self._write_split(lines[half:], origins[half:], sources, refused)
                return
            self.mark_database_up(True)
            self.metrics.points_written.inc(len(lines))
            self.metrics.batch_write_seconds.observe(time.monotonic() - started)
            return

    def _refuse(
        self,
        exc: WriteRefused,
        indices: Iterable[int],
        lines: list[str],
        origins: list[int],
        sources: Sequence[Source],
        refused: list[tuple[int, DeadLetter]],
    ) -> None:
        for i in indices:
            src = sources[origins[i]]
            refused.append(
                (
                    origins[i],
                    DeadLetter(
                        src.topic,
                        src.payload,
                        Reason.REFUSED_BY_DATABASE,
                        f"{exc.message} — line: {lines[i][:300]}",
                        src.received_at,
                    ),
                )
            )
            if exc.limit is not None:
                self.metrics.refused_by_limit.labels(setting=exc.limit.setting).inc()

    def _report_limit(self, limit: LimitRefusal, message: str) -> None:
        """One error line per limit and process: the operator's fix is in influxdb.conf."""
        if limit.setting in self._limits_reported:
            return
        self._limits_reported.add(limit.setting)
        log.error(
            "database_limit_reached",
            setting=limit.setting,
            database_says=message,
            action=f"refused points are dead-lettered as refused_by_database; raise "
            f"{limit.setting} in influxdb.conf [data] (0 = unlimited) and restart influxd. "
            f"Counted in taza_points_refused_by_limit_total; not logged again",
        )

    async def _dead_letter(self, letters: list[DeadLetter]) -> bool:
        """Record durably before anything is acknowledged; while the store cannot write,
        hold (one error line, taza_deadletter_full, /readyz 503) and retry each second.
        False only when stopping before it could."""
        held = False
        while True:
            try:
                self.deadletters.append(letters)
                break
            except StoreUnwritable as exc:
                self.metrics.store_write_errors.labels(store="deadletter", reason=exc.reason).inc()
                self._set_deadletter_full(True)
                if not held:
                    log.error(
                        "deadletter_store_full",
                        reason=exc.reason,
                        cause=exc.message,
                        records=len(letters),
                        action="holding acknowledgements, retrying each second; "
                        "the broker keeps the messages",
                    )
                    held = True
                if self.stopping:
                    return False
                await asyncio.sleep(self.hold_retry_s)
        if held:
            self._set_deadletter_full(False)
            log.info("deadletter_store_full_cleared", records=len(letters))
        for d in letters:
            self.metrics.rejected.labels(reason=d.reason.value).inc()
        if self.republish is not None:
            self.republish(letters)
        return True

    def _set_deadletter_full(self, full: bool) -> None:
        self.deadletter_full = full
        self.metrics.deadletter_full.set(1 if full else 0)

    def _set_spool_full(self, full: bool) -> None:
        self.spool_full = full
        self.metrics.spool_full.set(1 if full else 0)

    @property
    def holding(self) -> bool:
        """Acknowledgements held because a store cannot write: a deliberate wait (retried
        each second, resumed by itself), not a stalled stage — a watchdog must not restart
        the service for it (a restart cannot make disk space)."""
        return self.spool_full or self.deadletter_full

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


class _HonourRetryAfter(wait_base):
    """Our backoff, or the database's Retry-After when it asks for longer (capped in
    ingest/writers/base.py)."""

    def __init__(self, backoff: wait_base) -> None:
        self.backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        wait = self.backoff(retry_state)
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        if isinstance(exc, WriteUnavailable) and exc.retry_after is not None:
            return max(wait, exc.retry_after)
        return wait


class _HeldWhileStopping(Exception):
    """A store could not record a refusal and the service is stopping: nothing of the
    batch is acknowledged, the broker redelivers it."""
