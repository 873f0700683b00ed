"""The fleet stage wired into taza-ingest: the ``DeliveredSink`` that keeps fleet state,
writes its history and publishes crew alerts.

Per delivered batch (in the delivery task, before its PUBACK): journal the batch
(:mod:`ingest.fleet.persist`), ``Fleet.apply`` each message with the delivery time as
``now_ms``, publish :func:`plan_mqtt`'s messages (QoS 1, retained per message) through the
intake's ``publish``, and hand the events' lines to :class:`History` (database, else
``data_dir/fleet-spool``). ``apply`` costs 2–6 µs a message compiled (docs/performance.md), so it
runs right there; the delivery task waits only when history can be neither written nor
spooled.

The clock task (``fleet-clock``) judges ``offline`` on the wall clock every
``alert_tick_interval_s``, writes the snapshot at most every ``alert_snapshot_interval_s``
(only when every line handed to history so far is stored, so the journal it truncates is no
longer needed), and each time the intake becomes ready (start, reconnect) — or, at a tick,
once the intake has had to drop publishes (its outbox full while the broker's PUBACKs lag) —
brings the retained alert topics in line with what fires: every firing alert the broker
does not retain — and that the stage has not just published, still on its way — is published
again (retained) and a retained alert topic that no longer fires is cleared.

Read-only accessors for the HTTP API (stable names): :meth:`states`, :meth:`get`,
:meth:`firing`, ``len(stage)``.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from devices.message import Message
from devices.registry import DeviceInfo
from ingest.batch import Accepted, Delivered
from ingest.durable import write_atomically
from ingest.fleet.errors import FleetConfigError, SnapshotError
from ingest.fleet.events import AlertTransition, Anomaly, Collection, Event
from ingest.fleet.fleet import Fleet
from ingest.fleet.history import History
from ingest.fleet.output import alert_payload, alert_topic, lines, plan_mqtt
from ingest.fleet.persist import JOURNAL, SNAPSHOT, Journal, read_journal
from ingest.fleet.retained import RetainedReadError
from ingest.fleet.settings import FleetSettings
from ingest.fleet.state import DeviceState
from ingest.spool import Spool
from ingest.writers import Writer

log = structlog.get_logger("ingest.fleet")

CLOCK_STEP_S = 0.5
# The rules of 5,000 messages take 15-35 ms of the one event loop; run whole, the intake
# reads nothing meanwhile and the broker's sends back up. Applied this many at a time, with
# the loop free in between (the journal record's write is in flight, so no snapshot meanwhile).
APPLY_CHUNK = 1000
_EVENT_KIND: dict[type, str] = {
    AlertTransition: "alert",
    Collection: "collection",
    Anomaly: "anomaly",
}


class Publish(Protocol):
    """The intake's ``publish``."""

    def __call__(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None: ...


RetainedReader = Callable[[], Awaitable[dict[str, bytes]]]
"""{topic: payload} retained under taza/v1/alerts/# (``ingest.fleet.retained``)."""


def check_registry(settings: FleetSettings, registry: Mapping[str, DeviceInfo] | None) -> None:
    """Resolve every device's thresholds once, at start: a ``full_threshold_pct`` at or below
    the clear level must stop the start, not the delivery task at that bin's first reading."""
    for device_id, info in (registry or {}).items():
        try:
            settings.thresholds_for(info.fraction, info.site, info.full_threshold_pct)
        except FleetConfigError as exc:
            raise FleetConfigError(f"fleet file, device {device_id}: {exc}") from None


class FleetStage:
    def __init__(
        self,
        settings: FleetSettings,
        *,
        writer: Writer,
        publish: Publish,
        data_dir: Path,
        registry: Mapping[str, DeviceInfo] | None,
        metrics: CollectorRegistry,
        ready: Callable[[], bool],
        read_retained: RetainedReader | None,
        spool_max_bytes: int,
        tick_interval_s: float = 10.0,
        snapshot_interval_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        publishes_dropped: Callable[[], int] = lambda: 0,
    ) -> None:
        check_registry(settings, registry)
        self.settings = settings
        self.registry = registry
        self.publish = publish
        self.ready = ready
        self.read_retained = read_retained
        self.tick_interval_s = tick_interval_s
        self.snapshot_interval_s = snapshot_interval_s
        self.clock = clock
        self.publishes_dropped = publishes_dropped
        self._drops_synced = 0
        # The episodes of the retained firing messages published since the intake last went
        # down or dropped a publish, by topic: on their way to the broker, so a sync that reads
        # the retained topics before they arrive must not publish them again (crews would get
        # two). One short string per firing alert.
        self._sent: dict[str, str] = {}
        self.directory = data_dir / "fleet"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fleet = Fleet(settings)
        self.history = History(writer, Spool(data_dir / "fleet-spool", spool_max_bytes), metrics)
        self.journal: Journal | None = None
        self.ticks = 0  # the clock task's progress, for the watchdog
        self.applied = 0
        self.restore_seconds = 0.0
        self._last_snapshot = time.monotonic()
        self.published = Counter(
            "taza_alert_messages_published_total",
            "alert messages published for crews (retain: retained firing or clearing payload)",
            ["retain"],
            registry=metrics,
        )
        self.events = Counter(
            "taza_fleet_events_total",
            "fleet events by kind: collection, anomaly, alert (transitions)",
            ["event"],
            registry=metrics,
        )
        for retain in ("true", "false"):
            self.published.labels(retain=retain)  # every series from start, as Prometheus expects
        for kind in (*_EVENT_KIND.values(), "other"):
            self.events.labels(event=kind)
        self.apply_seconds = Counter(
            "taza_fleet_apply_seconds_total",
            "CPU time of the fleet stage's per-message rules (divide by messages applied)",
            registry=metrics,
        )
        self.applied_total = Counter(
            "taza_fleet_messages_applied_total",
            "delivered messages applied to the fleet state",
            registry=metrics,
        )
        self.apply_failed = Counter(
            "taza_fleet_apply_failures_total",
            "stored messages the fleet rules failed on (a bug): skipped for the state, logged",
            registry=metrics,
        )
        self.firing_gauge = Gauge(
            "taza_alerts_firing", "alerts firing now (updated each tick)", registry=metrics
        )
        self.snapshot_seconds = Gauge(
            "taza_fleet_snapshot_seconds", "time to write the last snapshot", registry=metrics
        )
        Gauge("taza_fleet_devices", "devices in the fleet state", registry=metrics).set_function(
            lambda: len(self.fleet)
        )

    # ----- read-only accessors (the HTTP API) -----------------------------------------------

    def __len__(self) -> int:
        return len(self.fleet)

    def states(self) -> Iterator[DeviceState]:
        """Every device's current state (do not mutate; iterate within one loop step)."""
        return self.fleet.states()

    def get(self, device_id: str) -> DeviceState | None:
        return self.fleet.get(device_id)

    def firing(self) -> Iterator[AlertTransition]:
        """Every alert firing now, as its firing transition (what the retained topics show)."""
        return self.fleet.firing()

    # ----- life -----------------------------------------------------------------------------

    def open(self) -> None:
        """Restore the snapshot, re-apply the journal since it; the regenerated history lines
        are written first thing (identical points overwrite themselves)."""
        started = time.monotonic()
        snapshot = self.directory / SNAPSHOT
        from_snapshot = False
        if snapshot.exists():
            try:
                self.fleet = Fleet.restore(snapshot.read_bytes(), self.settings, self.registry)
                from_snapshot = True
            except (SnapshotError, OSError) as exc:
                kept = snapshot.with_name(SNAPSHOT + ".refused")
                snapshot.rename(kept)
                log.error(
                    "fleet_snapshot_refused",
                    error=str(exc),
                    kept_as=str(kept),
                    action="starting from the journal only: alerts may fire again",
                )
        snapshot_s = time.monotonic() - started
        journal = self.directory / JOURNAL
        events: list[Event] = []
        records = messages = 0
        registry = self.registry
        for now_ms, items in read_journal(journal):
            records += 1
            for device_id, message in items:
                info = registry.get(device_id) if registry is not None else None
                events += self._apply(message, info, now_ms)
                messages += 1
        self.history.pending = lines(events)
        self.journal = Journal(journal)
        self.journal.entries = records
        self.restore_seconds = time.monotonic() - started
        log.info(
            "fleet_restored",
            devices=len(self.fleet),
            from_snapshot=from_snapshot,
            journal_messages=messages,
            firing=sum(1 for _ in self.fleet.firing()),
            seconds=round(self.restore_seconds, 3),
            snapshot_seconds=round(snapshot_s, 3),
        )

    def tasks(self) -> dict[str, Coroutine[Any, Any, None]]:
        """Its tasks, for the service's task set (any that ends brings the service down)."""
        return {
            "fleet-clock": self.run_clock(),
            "fleet-history": self.history.run(),
            "fleet-replay": self.history.replay_forever(),
        }

    async def finish(self, timeout_s: float) -> None:
        """At shutdown: store what history holds (bounded), then the final snapshot."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.history.flush()
        except TimeoutError:
            log.error(
                "fleet_history_unflushed",
                seconds=timeout_s,
                action="no final snapshot; the journal rebuilds the rest at start",
            )
            return
        self.save_snapshot()

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()

    # ----- the sink -------------------------------------------------------------------------

    async def delivered(self, messages: Sequence[Accepted]) -> None:
        """Journal the batch (its write + fdatasync in a worker thread, overlapped with the
        rules: ≈ 1 ms a batch here, more when the database writes the same disk, that held the
        event loop), apply it, and only once the journal is durable publish and hand over its
        events; delivery acknowledges after that."""
        now_ms = int(self.clock() * 1000)
        journal = self.journal
        assert journal is not None, "FleetStage.open() first"
        batch = Delivered.of(messages)
        record = journal.record(now_ms, batch.sources)
        journal.writing = True
        try:
            durable = asyncio.get_running_loop().run_in_executor(None, journal.write, record)
            apply = self.fleet.apply
            events: list[Event] = []
            spent = 0.0
            n = len(batch)
            for start in range(0, n, APPLY_CHUNK):
                if start:
                    await asyncio.sleep(0)  # the intake reads meanwhile (see APPLY_CHUNK)
                # This thread's CPU: process_time would add the journal write running beside.
                started = time.thread_time()
                end = start + APPLY_CHUNK
                for m, d in zip(batch.messages[start:end], batch.devices[start:end], strict=True):
                    try:  # _apply's guard inline: a call less per message
                        events += apply(m, d, now_ms)
                    except Exception as exc:
                        self._apply_failed(m, exc)
                spent += time.thread_time() - started
            self.apply_seconds.inc(spent)
            await durable
        finally:
            journal.writing = False
        self.applied_total.inc(n)
        self.applied += n
        await self._emit(events, now_ms)

    def _apply(self, message: Message, info: DeviceInfo | None, now_ms: int) -> list[Event]:
        """One message through the rules. A message they fail on (a bug, not bad input: that
        was refused at decode) is already stored; since the stage runs before the PUBACK and
        replays its journal at start, letting the error through would fail the same message
        on every restart. So it is logged, counted and skipped for the state."""
        try:
            return self.fleet.apply(message, info, now_ms)
        except Exception as exc:
            self._apply_failed(message, exc)
            return []

    def _apply_failed(self, message: Message, exc: Exception) -> None:
        self.apply_failed.inc()
        log.error(
            "fleet_apply_failed",
            device_id=message.topic.device_id,
            topic=str(message.topic),
            seq=message.seq,
            error=f"{type(exc).__name__}: {exc}",
            action="message stored; its effect on the fleet state skipped",
            exc_info=exc,
        )

    async def _emit(self, events: list[Event], now_ms: int) -> None:
        if not events:
            return
        publish = self.publish
        retained = 0
        planned = plan_mqtt(events, now_ms, self.settings.notify_max_age_s)
        sent = self._sent
        for m in planned:
            publish(m.topic, m.payload, qos=m.qos, retain=m.retain)
            if m.retain:
                retained += 1
                if m.episode is not None:
                    sent[m.topic] = m.episode
                else:
                    sent.pop(m.topic, None)
        # Counted once per batch, not per message: a labelled inc costs ~1.5 µs.
        if retained:
            self.published.labels(retain="true").inc(retained)
        if len(planned) > retained:
            self.published.labels(retain="false").inc(len(planned) - retained)
        kinds = collections.Counter(type(e) for e in events)
        for cls, n in kinds.items():
            self.events.labels(event=_EVENT_KIND.get(cls, "other")).inc(n)
        await self.history.put(lines(events))

    # ----- the clock task -------------------------------------------------------------------

    async def run_clock(self) -> None:
        """Ticks, snapshots, and the retained-topic sync whenever the intake becomes ready."""
        next_tick = time.monotonic() + self.tick_interval_s
        was_ready = False
        while True:
            await asyncio.sleep(min(CLOCK_STEP_S, self.tick_interval_s))
            self.ticks += 1
            ready = self.ready()
            if was_ready and not ready:
                self._sent.clear()  # what the broker holds after the reconnect is unknown
            if ready and not was_ready:
                await self.sync_retained()
            was_ready = ready
            mono = time.monotonic()
            if mono >= next_tick:
                next_tick = mono + self.tick_interval_s
                now_ms = int(self.clock() * 1000)
                await self._emit(self.fleet.tick(now_ms), now_ms)
                dropped = self.publishes_dropped()
                if ready and dropped != self._drops_synced:
                    self._drops_synced = dropped
                    self._sent.clear()  # any of them may be among the dropped
                    await self.sync_retained()
                self.firing_gauge.set(sum(len(s.alerts) for s in self.fleet.devices.values()))
            if (
                self.journal is not None
                and self.journal.entries
                and not self.journal.writing
                and mono - self._last_snapshot >= self.snapshot_interval_s
                and self.history.idle
            ):
                self.save_snapshot()

    async def sync_retained(self) -> None:
        """Retained alert topics = what fires now: publish each firing alert the broker does
        not retain with its episode (a publish lost while the broker was away, a broker that
        lost its retained store), clear retained topics that no longer fire (a clear lost in a
        crash). An alert already retained as it is, or published retained since the intake
        last went down or dropped a publish (still on its way: the read can come first), is
        left alone: crews get no duplicate."""
        retained: dict[str, bytes] = {}
        if self.read_retained is not None:
            try:
                retained = await self.read_retained()
            except (RetainedReadError, OSError) as exc:
                log.warning(
                    "fleet_retained_unread",
                    error=str(exc),
                    action="republishing what fires; stale retained alerts stay until cleared",
                )
        firing = {alert_topic(t): t for t in self.fleet.firing()}
        cleared = republished = 0
        for topic in retained:
            if topic not in firing:
                self.publish(topic, b"", qos=1, retain=True)
                self._sent.pop(topic, None)
                cleared += 1
        for topic, t in firing.items():
            if t.episode not in (_episode(retained.get(topic)), self._sent.get(topic)):
                self.publish(topic, alert_payload(t), qos=1, retain=True)
                self._sent[topic] = t.episode
                republished += 1
        self.published.labels(retain="true").inc(cleared + republished)
        log.info(
            "fleet_alerts_synced",
            firing=len(firing),
            republished=republished,
            stale_cleared=cleared,
            retained=len(retained),
        )

    def save_snapshot(self) -> None:
        """Atomically (tmp, fsync, rename); then the journal it covers is truncated."""
        started = time.monotonic()
        write_atomically(self.directory / SNAPSHOT, self.fleet.snapshot())
        if self.journal is not None:
            self.journal.truncate()
        self._last_snapshot = time.monotonic()
        self.snapshot_seconds.set(self._last_snapshot - started)


def _episode(payload: bytes | None) -> str | None:
    if not payload:
        return None
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    episode = doc.get("episode") if isinstance(doc, dict) else None
    return episode if isinstance(episode, str) else None
