"""The service: wires the stages and owns their tasks and shutdown.

    MQTT (paho, manual PUBACK) ─▶ intake queue ─▶ Pipeline ─▶ batch queue ─▶ Delivery ─▶ PUBACK
                                                 decode/enrich/encode        DB | spool
                                                                         rejects → dead-letter

Queues are bounded; the broker's Receive Maximum bounds what can be unacknowledged, so a
slow database leaves the backlog with the broker instead of in our memory.
"""

from __future__ import annotations

import asyncio
import contextlib

import orjson
import structlog

from devices import Registry, RegistryError
from ingest.batch import Batch, DeadLetter
from ingest.config import Settings, parse_host_port
from ingest.deadletter import DeadLetterStore
from ingest.delivery import Delivery
from ingest.errors import ConfigError
from ingest.http import HttpServer
from ingest.metrics import Metrics
from ingest.mqtt import Incoming, MqttIntake
from ingest.pipeline import STOP, Pipeline, limits_from
from ingest.spool import Spool
from ingest.writers import make_writer

log = structlog.get_logger("ingest")

DEADLETTER_TOPIC = "taza/v1/_deadletter/{reason}"
QOS0_HEADROOM = 10000


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        try:
            self.registry = Registry.load(settings.registry) if settings.registry else None
        except (RegistryError, OSError) as exc:
            raise ConfigError(f"TAZA_REGISTRY: {exc}") from None
        self.intake: asyncio.Queue[Incoming | None] = asyncio.Queue(
            maxsize=settings.mqtt_receive_maximum + QOS0_HEADROOM
        )
        self.batches: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=2)
        self.pending = 0
        self.dropped = 0
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
        self.mqtt = MqttIntake(settings, self.metrics, self._on_incoming)
        self.pipeline = Pipeline(
            self.metrics,
            limits=limits_from(settings.max_payload_bytes, settings.max_age_s, settings.strict),
            registry=self.registry,
            reject_unregistered=settings.reject_unregistered,
            max_lines=settings.batch_max_lines,
            max_age_s=settings.batch_max_age_ms / 1000,
        )
        self.delivery = Delivery(
            self.writer,
            self.spool,
            self.deadletters,
            self.metrics,
            self._ack,
            attempts=settings.write_attempts,
            republish=self._republish if settings.deadletter_republish else None,
        )
        host, port = parse_host_port(settings.http_addr)
        self.http = HttpServer(host, port, self.metrics, self.readiness)
        self.metrics.queue_depth.set_function(lambda: self.pending)

    def _on_incoming(self, msg: Incoming) -> None:
        try:
            self.intake.put_nowait(msg)
        except asyncio.QueueFull:
            # Only QoS 0 floods escape Receive Maximum; an unacked QoS 1 message comes back.
            self.dropped += 1
            if self.dropped in (1, 1000) or self.dropped % 100000 == 0:
                log.error("intake_full", dropped=self.dropped, qos=msg.qos)
            return
        self.pending += 1

    def _ack(self, acks: list[tuple[int, int]]) -> None:
        self.mqtt.ack(acks)
        self.pending -= len(acks)

    def _republish(self, letters: list[DeadLetter]) -> None:
        for d in letters:
            self.mqtt.publish(
                DEADLETTER_TOPIC.format(reason=d.reason.value), orjson.dumps(d.to_record())
            )

    def readiness(self) -> tuple[bool, dict[str, object]]:
        subscribed = self.mqtt.subscribed
        database = self.delivery.database_up
        spool_ok = not self.delivery.spool_full
        return subscribed and (database or spool_ok) and not self.delivery.deadletter_full, {
            "subscribed": subscribed,
            "database_up": database,
            "spool_bytes": self.spool.bytes,
            "spool_full": not spool_ok,
            "deadletter_full": self.delivery.deadletter_full,
        }

    async def run(self, stop: asyncio.Event, *, drain_timeout_s: float = 30.0) -> None:
        try:
            await self.http.start()
        except OSError as exc:
            raise ConfigError(
                f"TAZA_HTTP_ADDR {self.settings.http_addr}: {exc.strerror or exc}"
            ) from None
        await self.writer.start()
        self.delivery.mark_database_up(await self.writer.ping())
        log.info(
            "taza_ingest_started",
            **self.settings.summary(),
            database_up=self.delivery.database_up,
            spool_batches=self.spool.count,
            registry_devices=len(self.registry) if self.registry else 0,
        )
        try:
            async with asyncio.TaskGroup() as tg:
                mqtt_task = tg.create_task(self.mqtt.run(), name="mqtt")
                pipeline_task = tg.create_task(
                    self.pipeline.run(self.intake, self.batches), name="pipeline"
                )
                delivery_task = tg.create_task(self.delivery.run(self.batches), name="delivery")
                replay_task = tg.create_task(self.delivery.replay_forever(), name="replay")
                stats_task = tg.create_task(self._stats_forever(), name="stats")
                await stop.wait()
                log.info("taza_ingest_stopping", pending=self.pending)
                self.mqtt.stop_accepting()
                await self.intake.put(STOP)
                await pipeline_task
                try:
                    await asyncio.wait_for(asyncio.shield(delivery_task), drain_timeout_s)
                except TimeoutError:
                    log.error(
                        "drain_timeout", action="leaving unacknowledged messages with the broker"
                    )
                    self.delivery.stopping = True
                    await delivery_task
                await self.mqtt.close()
                replay_task.cancel()
                stats_task.cancel()
                await mqtt_task
        finally:
            with contextlib.suppress(Exception):
                await self.writer.close()
            self.deadletters.close()
            await self.http.stop()
        log.info("taza_ingest_stopped", **self._stats())

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
            "unacknowledged": self.pending,
            "spool_batches": self.spool.count,
        }

    async def _stats_forever(self) -> None:
        """One summary line per interval, only when something moved: for people reading logs."""
        interval = self.settings.stats_interval_s
        if interval <= 0:
            return
        last: dict[str, int] = {}
        while True:
            await asyncio.sleep(interval)
            now = self._stats()
            if now != last:
                log.info("ingest_stats", interval_s=interval, **now)
                last = now
