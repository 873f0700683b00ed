"""The service: builds the stages, wires them into one path, and owns their tasks.

    broker ─PUBLISH─▶ MqttIntake ─Incoming─▶ intake queue ─▶ Pipeline ─Batch─▶ batch queue ─┐
                      paho, manual PUBACK,   (bounded)       decode → registry  (2 batches)  │
                      Receive Maximum                        → line protocol                 │
    ┌────────────────────────────────────────────────────────────────────────────────────────┘
    └▶ Delivery ─ rejects ─▶ dead-letter store (fsync)
                ─ lines ───▶ database, or spool (fsync) ◀─▶ replay: spool → database, in order
                │   then, only for a stored batch (the next batch is stored meanwhile):
                ├─▶ DeliveredSink: each stored batch's Accepted messages (decoded message +
                │   registry entry), once, in order, before the PUBACK. By default the
                │   fleet-state / alert stage (``FleetStage``, ``TAZA_ALERTS_ENABLED``):
                │   journal → Fleet.apply → alerts published via the intake (QoS 1,
                │   retained per topic) → history lines → database, or fleet-spool.
                └─▶ Acknowledger: PUBACK on the message's own connection

One way only: no stage calls back into the service. Queues are bounded and the broker's
Receive Maximum bounds what is unacknowledged, so a slow database leaves the backlog with
the broker. Every stage runs as one task; if any ends unexpectedly the service stops at
once (``StageFailed``, exit 1, the reason logged) rather than live on as a zombie. The
watchdog turns a stage that is stuck with work into ``/healthz`` 503. On stop, what is in
flight gets ``drain_timeout_s`` to be stored and acknowledged; a thread ends the process
should the shutdown itself hang.

``Service.fleet`` is the ``FleetStage`` (``None`` when disabled); the HTTP API reads the current
state through its read-only accessors only: ``states()`` (every ``DeviceState``),
``get(device_id)`` (one, or None), ``firing()`` (every firing ``AlertTransition``), ``len()``.
Its tasks (``fleet-clock``, ``fleet-history``, ``fleet-replay``) are in the task set and
watched like the others; at stop it flushes its history and writes its snapshot.

The writer is built through the module's ``make_writer``: the one seam where tests put a faulty
writer into the real service (``tests/faulty_ingest.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
import structlog

from devices import Registry, RegistryError
from ingest.api.context import ApiContext, auth_for, influx_for
from ingest.batch import Batch, DeadLetter, DeliveredSink, Incoming
from ingest.config import Settings, parse_host_port
from ingest.deadletter import DeadLetterStore
from ingest.delivery import Delivery
from ingest.errors import ConfigError, IngestError, StageFailed
from ingest.feedback import Feedback
from ingest.fleet import rules_build
from ingest.fleet.errors import FleetConfigError
from ingest.fleet.retained import read_retained
from ingest.fleet.stage import FleetStage
from ingest.http import HttpServer
from ingest.inflight import QOS0_HEADROOM
from ingest.intake import make_intake
from ingest.metrics import Metrics
from ingest.mqtt import IntakeOptions
from ingest.pipeline import STOP, Pipeline, limits_from
from ingest.plan import PlanPool
from ingest.ratelimit import DeviceRateLimit
from ingest.spool import Spool
from ingest.watchdog import Watchdog
from ingest.writers import make_writer

log = structlog.get_logger("ingest")

DEADLETTER_TOPIC = "taza/v1/_deadletter/{reason}"
CANCEL_GRACE_S = 5.0  # for cancelled tasks to finish
# Python's (700, 10, 10) ran a collection every 700 net container allocations: while a batch of
# 5,000 messages fills, that is dozens of young and several full scans of the batches in flight,
# ≈ 2.2 µs/message (10-16 % of the service in py-spy --native). Per-message objects are freed by
# reference count; a young scan per 50,000 still collects any cycle (docs/performance.md).
GC_THRESHOLDS = (50_000, 20, 100)
HARD_STOP_MARGIN_S = 10.0  # beyond the drain: last PUBACKs, DISCONNECT, closing files


def intake_options(settings: Settings) -> IntakeOptions:
    broker = settings.broker
    return IntakeOptions(
        host=broker.host,
        port=broker.port,
        client_id=settings.mqtt_client_id,
        subscription=settings.subscription,
        broker_name=broker.redacted(),
        tls=broker.tls,
        username=broker.username,
        password=broker.password,
        ca_file=settings.mqtt_ca_file,
        cert_file=settings.mqtt_cert_file,
        key_file=settings.mqtt_key_file,
        session_expiry_s=settings.mqtt_session_expiry_s,
        keepalive_s=settings.mqtt_keepalive_s,
        receive_maximum=settings.mqtt_receive_maximum,
        qos0_headroom=QOS0_HEADROOM,
    )


def _hard_stop(after_s: float, why: str) -> None:
    """Last resort, from a thread: a task that ignores cancellation (or a teardown that hangs)
    must not keep the process up past its deadline."""

    def fire() -> None:
        log.error("shutdown_hung", after_s=after_s, why=why, action="exiting now")
        sys.stderr.flush()
        os._exit(1)

    timer = threading.Timer(after_s, fire)
    timer.daemon = True
    timer.start()


class Service:
    def __init__(self, settings: Settings, *, sink: DeliveredSink | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        try:
            self.registry = Registry.load(settings.registry) if settings.registry else None
        except (RegistryError, OSError) as exc:
            raise ConfigError(f"TAZA_REGISTRY: {exc}") from None
        self.intake_queue: asyncio.Queue[Incoming | None] = asyncio.Queue(
            maxsize=settings.mqtt_receive_maximum + QOS0_HEADROOM
        )
        self.batches: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=2)
        data_dir = settings.data_dir
        try:
            self.spool = Spool(data_dir / "spool", settings.spool_max_bytes)
            self.deadletters = DeadLetterStore(
                data_dir / "deadletter",
                file_bytes=settings.deadletter_file_bytes,
                keep=settings.deadletter_keep_files,
            )
        except OSError as exc:
            raise ConfigError(f"TAZA_DATA_DIR {data_dir}: {exc}") from None
        self.writer = make_writer(settings)
        self.intake = make_intake(
            settings.mqtt_client, intake_options(settings), self.metrics, self.intake_queue
        )
        self.fleet = self._fleet_stage() if settings.alerts_enabled and sink is None else None
        if sink is None:
            sink = self.fleet
        self.rate_limit = (
            DeviceRateLimit(
                settings.rate_limit_per_s,
                settings.rate_limit_burst,
                max_devices=settings.rate_limit_max_devices,
                registry=self.metrics.registry,
            )
            if settings.rate_limit_per_s > 0
            else None
        )
        self.feedback = (
            Feedback(
                self.intake.publish,
                rate_per_s=settings.feedback_rate_per_s,
                burst=settings.feedback_burst,
                total_per_s=settings.feedback_total_per_s,
                max_devices=settings.rate_limit_max_devices,
                max_payload_bytes=settings.max_payload_bytes,
                registry=self.metrics.registry,
            )
            if settings.feedback_enabled
            else None
        )
        self.pipeline = Pipeline(
            self.metrics,
            limits=limits_from(settings.max_payload_bytes, settings.max_age_s, settings.strict),
            registry=self.registry,
            reject_unregistered=settings.reject_unregistered,
            max_lines=settings.batch_max_lines,
            max_age_s=settings.batch_max_age_ms / 1000,
            rate_limit=self.rate_limit,
        )
        self.delivery = Delivery(
            self.writer,
            self.spool,
            self.deadletters,
            self.metrics,
            self.intake.acknowledger,
            sink=sink,
            attempts=settings.write_attempts,
            republish=self._after_dead_letters(),
        )
        self.watchdog = Watchdog(settings.stall_timeout_s)
        self._watch_stages()
        host, port = parse_host_port(settings.http_addr)
        influx, no_history = influx_for(settings)
        plan = settings.plan_settings()
        api = ApiContext(
            self.metrics,
            self.readiness,
            self.watchdog.check,
            fleet=self.fleet,
            registry=self.registry,
            influx=influx,
            history_unsupported=no_history,
            plan_settings=plan,
            plan_pool=PlanPool(workers=plan.workers, cache_ttl_s=plan.cache_ttl_s),
            tile_url=settings.page_tile_url,
            auth=auth_for(settings, self.metrics.registry),
            metrics_public=settings.api_metrics_public,
            health_public=settings.api_health_public,
        )
        self.http = HttpServer(host, port, api)
        self.metrics.queue_depth.set_function(lambda: self.intake.unacked)
        self.metrics.track_service(
            readiness=self.readiness,
            watchdog=self.watchdog,
            spool_max_bytes=settings.spool_max_bytes,
        )

    def _fleet_stage(self) -> FleetStage:
        settings = self.settings
        broker = settings.broker
        ca_file = str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None
        cert = str(settings.mqtt_cert_file) if settings.mqtt_cert_file else None
        key = str(settings.mqtt_key_file) if settings.mqtt_key_file else None
        client_id = f"{settings.mqtt_client_id}-alerts-sync"
        try:
            return FleetStage(
                settings.fleet_settings,
                writer=self.writer,
                publish=self.intake.publish,
                data_dir=settings.data_dir,
                registry=self.registry,
                metrics=self.metrics.registry,
                ready=lambda: self.intake.subscribed,
                read_retained=lambda: read_retained(
                    broker, client_id, ca_file=ca_file, cert_file=cert, key_file=key
                ),
                spool_max_bytes=settings.spool_max_bytes,
                tick_interval_s=settings.alert_tick_interval_s,
                snapshot_interval_s=settings.alert_snapshot_interval_s,
                publishes_dropped=lambda: self.intake.publishes_dropped,
            )
        except FleetConfigError as exc:
            raise ConfigError(f"TAZA_REGISTRY: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"TAZA_DATA_DIR {settings.data_dir}: {exc}") from None

    def _watch_stages(self) -> None:
        intake, pipeline, delivery = self.intake, self.pipeline, self.delivery
        self.watchdog.watch(
            "intake",
            busy=intake.has_connection,
            progress=lambda: intake.ticks,
        )
        self.watchdog.watch(
            "pipeline",
            busy=lambda: self.intake_queue.qsize() > 0,
            progress=lambda: pipeline.processed,
            holding=lambda: "waiting for delivery" if pipeline.waiting_for_delivery else None,
        )
        self.watchdog.watch(
            "delivery",
            busy=lambda: delivery.in_hand or self.batches.qsize() > 0,
            progress=lambda: delivery.handled + self.metrics.write_attempts(),
            holding=lambda: (
                "a durable store is full: acknowledgements held" if delivery.holding else None
            ),
        )
        self.watchdog.watch(
            "replay",
            busy=lambda: not self.spool.empty,
            progress=lambda: self.spool.count + self.metrics.write_attempts(),
        )
        fleet = self.fleet
        if fleet is not None:
            history = fleet.history
            self.watchdog.watch(
                "fleet-history",
                busy=lambda: not history.idle or not history.spool.empty,
                progress=lambda: history.progress,
                holding=lambda: (
                    "the fleet spool is full: acknowledgements held" if history.spool_full else None
                ),
            )
            self.watchdog.watch("fleet-clock", busy=lambda: True, progress=lambda: fleet.ticks)

    def _after_dead_letters(self) -> Callable[[list[DeadLetter]], None] | None:
        """What delivery calls once rejections are stored: the dead-letter copy
        (``TAZA_DEADLETTER_REPUBLISH``) and the device feedback, each if enabled."""
        republish = self.settings.deadletter_republish
        feedback = self.feedback
        if feedback is None:
            return self._republish if republish else None
        if not republish:
            return feedback.send

        def both(letters: list[DeadLetter]) -> None:
            self._republish(letters)
            feedback.send(letters)

        return both

    def _republish(self, letters: list[DeadLetter]) -> None:
        for d in letters:
            self.intake.publish(
                DEADLETTER_TOPIC.format(reason=d.reason.value), orjson.dumps(d.to_record())
            )

    def readiness(self) -> tuple[bool, dict[str, object]]:
        subscribed = self.intake.subscribed
        database = self.delivery.database_up
        spool_ok = not self.delivery.spool_full
        return subscribed and (database or spool_ok) and not self.delivery.deadletter_full, {
            "subscribed": subscribed,
            "database_up": database,
            "spool_bytes": self.spool.bytes,
            "spool_full": not spool_ok,
            "deadletter_full": self.delivery.deadletter_full,
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set (then drain) or a stage fails (then raise StageFailed, or the
        stage's own IngestError such as BrokerRefused)."""
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(self.http)
            except OSError as exc:
                raise ConfigError(
                    f"TAZA_HTTP_ADDR {self.settings.http_addr}: {exc.strerror or exc}"
                ) from None
            stack.push_async_callback(self._close_writer)
            stack.callback(self.deadletters.close)
            await self.writer.start()
            self.delivery.mark_database_up(await self.writer.ping())
            if self.fleet is not None:
                stack.callback(self.fleet.close)
                self.fleet.open()
            log.info(
                "taza_ingest_started",
                **self.settings.summary(),
                database_up=self.delivery.database_up,
                spool_batches=self.spool.count,
                registry_devices=len(self.registry) if self.registry else 0,
                inflight_bound=self.settings.inflight.describe(),
                rate_limit=(
                    f"{self.settings.rate_limit_per_s:g}/s burst {self.settings.rate_limit_burst}"
                    if self.rate_limit is not None
                    else "off"
                ),
                feedback=self.feedback is not None,
                fleet_rules=rules_build() if self.fleet is not None else "off",
            )
            await stack.enter_async_context(self.intake)  # leaves first: PUBACKs, DISCONNECT
            gc.freeze()  # start-up objects (modules, registry) leave the collector's scans
            gc.set_threshold(*GC_THRESHOLDS)
            tasks = self._start_tasks()
            failed = await self._until_stop_or_failure(stop, tasks)
            if failed is None:
                await self._drain(tasks)
                failed = _first_failure(tasks)
            error = self._fail(failed, tasks) if failed is not None else None
            await _cancel(tasks.values())
        if error is not None:
            raise error
        log.info("taza_ingest_stopped", **self._stats())

    def _start_tasks(self) -> dict[str, asyncio.Task[None]]:
        coros: dict[str, Coroutine[Any, Any, None]] = {
            "intake": self.intake.run(),
            "pipeline": self.pipeline.run(self.intake_queue, self.batches),
            "delivery": self.delivery.run(self.batches),
            "replay": self.delivery.replay_forever(),
            "watchdog": self.watchdog.run(),
            "http": self.http.wait(),
        }
        if self.fleet is not None:
            coros.update(self.fleet.tasks())
        if self.settings.stats_interval_s > 0:
            coros["stats"] = self._stats_forever(self.settings.stats_interval_s)
        return {name: asyncio.create_task(coro, name=name) for name, coro in coros.items()}

    async def _until_stop_or_failure(
        self, stop: asyncio.Event, tasks: dict[str, asyncio.Task[None]]
    ) -> str | None:
        """The name of the first task to end, or None when asked to stop first."""
        stopping = asyncio.create_task(stop.wait(), name="stop")
        done, _ = await asyncio.wait(
            {stopping, *tasks.values()}, return_when=asyncio.FIRST_COMPLETED
        )
        stopping.cancel()
        for name, task in tasks.items():
            if task in done:
                return name
        return None

    async def _drain(self, tasks: dict[str, asyncio.Task[None]]) -> None:
        """Intake stops; what was received is stored and acknowledged within the drain
        timeout; then everything else is cancelled."""
        drain_s = self.settings.drain_timeout_s
        _hard_stop(drain_s + CANCEL_GRACE_S + HARD_STOP_MARGIN_S, "stop requested")
        log.info("taza_ingest_stopping", pending=self.intake.unacked)
        self.intake.stop_accepting()
        flow = [tasks["pipeline"], tasks["delivery"]]
        deadline = asyncio.get_running_loop().time() + drain_s
        try:
            async with asyncio.timeout(drain_s):
                await self.intake_queue.put(STOP)
                await asyncio.wait(flow)
            if self.fleet is not None:
                await self.fleet.finish(max(1.0, deadline - asyncio.get_running_loop().time()))
        except TimeoutError:
            log.error(
                "drain_timeout",
                seconds=drain_s,
                stages={t.get_name(): "unfinished" for t in flow if not t.done()},
                action="leaving unacknowledged messages with the broker",
            )
            self.delivery.stopping = True
        await _cancel(tasks.values())

    def _fail(self, name: str, tasks: dict[str, asyncio.Task[None]]) -> IngestError:
        task = tasks[name]
        exc = None if task.cancelled() else task.exception()
        why = (
            "cancelled"
            if task.cancelled()
            else f"{type(exc).__name__}: {exc}"
            if exc is not None
            else "returned while the service was running"
        )
        _hard_stop(CANCEL_GRACE_S + HARD_STOP_MARGIN_S, f"stage {name} failed")
        self.watchdog.failed(name, why)
        self.intake.stop_accepting()
        if isinstance(exc, IngestError):
            log.error("stage_failed", stage=name, error=why)
            return exc
        log.error("stage_failed", stage=name, error=why, exc_info=exc, action="exiting")
        return StageFailed(name, why)

    async def _close_writer(self) -> None:
        with contextlib.suppress(Exception):
            await self.writer.close()

    def _stats(self) -> dict[str, int]:
        sample = self.metrics.registry.get_sample_value
        rejected = sum(
            m.value
            for family in self.metrics.rejected.collect()
            for m in family.samples
            if m.name.endswith("_total")
        )
        return {
            "received": int(sample("taza_messages_received_total") or 0),
            "accepted": int(sample("taza_messages_accepted_total") or 0),
            "rejected": int(rejected),
            "points_written": int(sample("taza_points_written_total") or 0),
            "unacknowledged": self.intake.unacked,
            "spool_batches": self.spool.count,
        }

    async def _stats_forever(self, interval: float) -> None:
        """One summary line per interval, only when something moved: for people reading logs."""
        last: dict[str, int] = {}
        while True:
            await asyncio.sleep(interval)
            now = self._stats()
            if now != last:
                log.info("ingest_stats", interval_s=interval, **now)
                last = now


def _first_failure(tasks: dict[str, asyncio.Task[None]]) -> str | None:
    """A task that raised while draining (cancelled ones were stopped by us)."""
    for name, task in tasks.items():
        if task.done() and not task.cancelled() and task.exception() is not None:
            return name
    return None


async def _cancel(tasks: Any) -> None:
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        _, stuck = await asyncio.wait(pending, timeout=CANCEL_GRACE_S)
        if stuck:
            log.error("stage_ignores_cancel", stages=sorted(t.get_name() for t in stuck))
