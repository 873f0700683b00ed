"""The pipeline stage: rate limit → decode (devices) → enrich from the registry → line
protocol → batch.

The per-device rate limit (ingest/ratelimit.py) comes first, from the topic alone: a message
over its device's budget becomes a ``rate_limited`` dead letter without being decoded.

Owns the intake queue and the current batch. A batch is handed to delivery when it
holds ``max_lines`` lines or its oldest message is ``max_age_s`` old, whichever first
(Telegraf's flush on size *or* age). Every received message ends up in exactly one
batch — as lines, as a dead letter, or as a bare acknowledgement — so acknowledgements
leave in arrival order.

No ``asyncio.wait_for`` here: on Python 3.11 it can swallow the cancellation of the task
that awaits it, and a pipeline that ignores cancellation keeps a failed service alive.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import timedelta

import structlog

import devices
from devices import DeviceInfo, Ignored, Limits, Reason, Registry, Rejected
from ingest.batch import Batch, DeadLetter, Incoming, Source, new_tuple
from ingest.metrics import Metrics
from ingest.ratelimit import DeviceRateLimit

log = structlog.get_logger("ingest.pipeline")

STOP = None
STATE_TIMES_KEPT = 4096


class Pipeline:
    def __init__(
        self,
        metrics: Metrics,
        *,
        limits: Limits,
        registry: Registry | None = None,
        reject_unregistered: bool = False,
        max_lines: int = 5000,
        max_age_s: float = 0.2,
        rate_limit: DeviceRateLimit | None = None,
    ) -> None:
        self.metrics = metrics
        self.limits = limits
        self.registry = registry
        self.reject_unregistered = reject_unregistered
        self.max_lines = max_lines
        self.max_age_s = max_age_s
        self.rate_limit = rate_limit
        self.processed = 0
        self.waiting_for_delivery = False
        self._extra = 0  # unknown fields seen since the last hand-over
        self._state_ms: dict[str, int] = {}  # device → time given to its last state message

    async def _hand_over(self, out: asyncio.Queue[Batch | None], batch: Batch | None) -> None:
        if batch is not None:
            self._count(batch)
        self.waiting_for_delivery = True
        try:
            await out.put(batch)
        finally:
            self.waiting_for_delivery = False

    async def run(
        self, intake: asyncio.Queue[Incoming | None], out: asyncio.Queue[Batch | None]
    ) -> None:
        """Until the STOP sentinel: then flush what is left and pass STOP on."""
        batch = Batch()
        while True:
            if intake.empty() and len(batch):
                remaining = batch.first_received + self.max_age_s - time.monotonic()
                if remaining <= 0:
                    await self._hand_over(out, batch)
                    batch = Batch()
                    continue
                try:
                    async with asyncio.timeout(remaining):
                        item = await intake.get()
                except TimeoutError:
                    continue
            else:
                item = await intake.get()
            if item is STOP:
                if len(batch):
                    await self._hand_over(out, batch)
                await self._hand_over(out, STOP)
                return
            self.process(item, batch)
            if len(batch.lines) >= self.max_lines:
                await self._hand_over(out, batch)
                batch = Batch()

    def _count(self, batch: Batch) -> None:
        """Hot counters once per batch, not per message (a prometheus ``inc`` takes a lock)."""
        if batch.messages:
            self.metrics.accepted.inc(len(batch.messages))
        if self._extra:
            self.metrics.extra_fields.inc(self._extra)
            self._extra = 0
        if self.rate_limit is not None:
            self.rate_limit.flush_counts()

    def process(self, msg: Incoming, batch: Batch) -> None:
        self.processed += 1
        if not batch.acks:
            batch.first_received = msg.received_mono
        batch.acks.append((msg.mid, msg.generation))
        if msg.retained and msg.topic.endswith("/state"):
            # A retained state replayed on (re)subscribe is old news; stored with the
            # receive time it would claim the device changed state now.
            self.metrics.ignored.inc()
            return
        limit = self.rate_limit
        if limit is not None and not limit.allow(msg.topic, msg.received_mono):
            # Before the decode: a flood costs a dict look-up per message, not a parse.
            batch.rejects.append(
                DeadLetter(
                    msg.topic, msg.payload, Reason.RATE_LIMITED, limit.detail, msg.received_at
                )
            )
            return
        try:
            message = devices.decode(msg.topic, msg.payload, msg.received_at, self.limits)
            if message.seq is None:
                message = self._distinct_state_time(message)
            device = self._enrich(message)
            lines = devices.encode(message, device)
        except Rejected as rej:
            batch.rejects.append(
                DeadLetter(
                    msg.topic, msg.payload, rej.reason, rej.detail, msg.received_at, rej.field
                )
            )
            return
        except Ignored:
            self.metrics.ignored.inc()
            return
        except Exception as exc:
            # A bug, not bad input. Failing the stage would make the broker redeliver the same
            # message to every restart; a dead letter keeps it, acknowledged and replayable.
            log.exception("pipeline_internal_error", topic=msg.topic, error=repr(exc))
            batch.rejects.append(
                DeadLetter(
                    msg.topic,
                    msg.payload,
                    Reason.INTERNAL_ERROR,
                    f"{type(exc).__name__}: {exc}"[:500],
                    msg.received_at,
                )
            )
            return
        if message.extra_fields:
            self._extra += len(message.extra_fields)
        # Batch.add_accepted, inlined: compiled, its two interpreted calls were ≈ 2,300 of the
        # ≈ 28,000 instructions a message here (bench/instructions.py).
        sources = batch.sources
        index = len(sources)
        sources.append(new_tuple(Source, (msg.topic, msg.payload, msg.received_at)))
        batch.lines.extend(lines)
        origins = batch.origins
        for _ in lines:
            origins.append(index)
        batch.messages.append(message)
        batch.devices.append(device)

    def _distinct_state_time(self, message: devices.Message) -> devices.Message:
        """A ``state`` point is timed by its receive time in ms, and one receive buffer shares
        one receive time: a device's ``offline`` then ``online`` queued at the broker during
        an outage would be one point, the later overwriting the earlier. Each later state of
        a device gets at least 1 ms more than the one before, so both are kept, in order."""
        key = message.topic.device_id
        last = self._state_ms.pop(key, None)
        if last is not None and message.ts_ms <= last:
            message = dataclasses.replace(message, ts_ms=last + 1)
        elif len(self._state_ms) >= STATE_TIMES_KEPT:
            del self._state_ms[next(iter(self._state_ms))]  # the least recently changed
        self._state_ms[key] = message.ts_ms
        return message

    def _enrich(self, message: devices.Message) -> DeviceInfo | None:
        if self.registry is None:
            return None
        device = self.registry.get(message.topic.device_id)
        if device is None:
            if self.reject_unregistered:
                raise Rejected(
                    Reason.UNREGISTERED,
                    f"device {message.topic.device_id!r} is not in the registry",
                )
            self.metrics.unregistered.inc()
            return None
        if device.kind != message.topic.kind or device.region != message.topic.region:
            raise Rejected(
                Reason.DEVICE_MISMATCH,
                f"registry lists {device.device_id!r} as {device.kind} in {device.region}, "
                f"topic says {message.topic.kind} in {message.topic.region}",
            )
        return device


def limits_from(max_payload_bytes: int, max_age_s: int, strict: bool) -> Limits:
    return Limits(
        max_payload_bytes=max_payload_bytes, max_age=timedelta(seconds=max_age_s), strict=strict
    )
