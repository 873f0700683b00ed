"""Prometheus metrics of one service instance (its own registry, so tests can run several).

Every series an alerting rule may use exists from the first scrape: labelled counters are
created at 0 for each label value the code can produce (``rate()``/``increase()`` need a
sample before the first event, and an absent series makes a rule silently never fire). The
rules in deploy/prometheus/taza-rules.yml are checked against this page by the tests.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from devices import Reason
from ingest.fleet import rules_build
from ingest.watchdog import Watchdog

disable_created_metrics()  # type: ignore[no-untyped-call]  # _created series: noise to operators

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DISTRIBUTION = "taza-telemetry"

WRITE_ERROR_KINDS = ("unavailable", "refused")
STORES = ("spool", "deadletter")
STORE_ERRNOS = ("ENOSPC", "EDQUOT", "EIO", "EROFS", "EACCES")
"""The errno names a full or failing disk gives; others appear when they first happen."""
DATABASE_LIMITS = ("max-values-per-tag", "max-series-per-database")


def taza_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.received = Counter(
            "taza_messages_received_total",
            "MQTT messages received on the intake subscription",
            registry=r,
        )
        self.accepted = Counter(
            "taza_messages_accepted_total", "messages that passed the device contract", registry=r
        )
        self.rejected = Counter(
            "taza_messages_rejected_total",
            "messages refused, by machine-readable reason (kept in the dead-letter store)",
            ["reason"],
            registry=r,
        )
        self.ignored = Counter(
            "taza_messages_ignored_total",
            "reserved topics (taza/v1/alerts/...), cleared or replayed retained state",
            registry=r,
        )
        self.unregistered = Counter(
            "taza_messages_unregistered_total",
            "accepted messages from devices not in the registry",
            registry=r,
        )
        self.extra_fields = Counter(
            "taza_payload_unknown_fields_total",
            "unknown payload fields ignored (non-strict mode)",
            registry=r,
        )
        self.acked = Counter(
            "taza_messages_acked_total", "PUBACKs sent after durable storage", registry=r
        )
        self.points_written = Counter(
            "taza_points_written_total", "points the database accepted", registry=r
        )
        self.write_retries = Counter(
            "taza_write_retries_total", "database write attempts that are retried", registry=r
        )
        self.write_errors = Counter(
            "taza_write_errors_total",
            "failed database write attempts, by kind",
            ["kind"],
            registry=r,
        )
        self.spooled_batches = Counter(
            "taza_spooled_batches_total", "batches stored in the durable spool", registry=r
        )
        self.spool_bytes = Gauge("taza_spool_bytes", "bytes in the durable spool", registry=r)
        self.spool_full = Gauge(
            "taza_spool_full",
            "1 while the spool is full and acknowledgements are held back",
            registry=r,
        )
        self.queue_depth = Gauge(
            "taza_queue_depth", "messages received and not yet acknowledged", registry=r
        )
        self.batch_write_seconds = Histogram(
            "taza_batch_write_seconds",
            "duration of one successful batch write",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.ingest_lag = Gauge(
            "taza_ingest_lag_seconds",
            "last stored batch: seconds from receiving its oldest message to durable storage",
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "taza_mqtt_connected", "1 while subscribed to the broker", registry=r
        )
        self.mqtt_reconnects = Counter(
            "taza_mqtt_reconnects_total", "broker reconnections", registry=r
        )
        self.mqtt_publishes_dropped = Counter(
            "taza_mqtt_publishes_dropped_total",
            "QoS 1 publishes (alerts, dead-letter copies) dropped unacknowledged: the oldest "
            "held one, to make room, while the broker's PUBACKs lag",
            registry=r,
        )
        self.database_up = Gauge(
            "taza_database_up", "1 when the last write or ping reached the database", registry=r
        )
        self.deadletter_full = Gauge(
            "taza_deadletter_full",
            "1 while the dead-letter store cannot write (disk full, I/O error) and "
            "acknowledgements are held back",
            registry=r,
        )
        self.store_write_errors = Counter(
            "taza_store_write_errors_total",
            "failed writes to a durable store (spool, deadletter), by errno name",
            ["store", "reason"],
            registry=r,
        )
        self.spool_quarantined = Counter(
            "taza_spool_quarantined_total",
            "spool files that could not be read back, moved to spool/quarantine/",
            registry=r,
        )
        self.refused_by_limit = Counter(
            "taza_points_refused_by_limit_total",
            "points the database refused because a limit of its configuration was reached",
            ["setting"],
            registry=r,
        )

        ProcessCollector(registry=r)
        GCCollector(registry=r)  # python_gc_collections_total: the collector tuning's effect
        Info(
            "taza_build",
            "the running taza-ingest: package and Python versions, fleet rules compiled or not",
            registry=r,
        ).info(
            {
                "version": taza_version(),
                "python": platform.python_version(),
                "implementation": platform.python_implementation(),
                "fleet_rules": rules_build(),
            }
        )
        self.ready = Gauge(
            "taza_ready", "1 while /readyz answers 200 (subscribed, and able to store)", registry=r
        )
        self.spool_max_bytes = Gauge(
            "taza_spool_max_bytes",
            "TAZA_SPOOL_MAX_BYTES: the spool is full at this size",
            registry=r,
        )
        self._initialise_labels()

    def _initialise_labels(self) -> None:
        for reason in Reason:
            self.rejected.labels(reason=reason.value)
        for kind in WRITE_ERROR_KINDS:
            self.write_errors.labels(kind=kind)
        for store in STORES:
            for errno_name in STORE_ERRNOS:
                self.store_write_errors.labels(store=store, reason=errno_name)
        for setting in DATABASE_LIMITS:
            self.refused_by_limit.labels(setting=setting)

    def track_service(
        self,
        *,
        readiness: Callable[[], tuple[bool, object]],
        watchdog: Watchdog,
        spool_max_bytes: int,
    ) -> None:
        """The service's own state, read at each scrape: readiness, per-stage watchdog state."""
        self.ready.set_function(lambda: 1.0 if readiness()[0] else 0.0)
        self.spool_max_bytes.set(spool_max_bytes)
        self.registry.register(watchdog)

    def write_attempts(self) -> int:
        """Completed database writes, good or bad (the watchdog's progress: a stage retrying
        a slow database moves), from these two metrics alone: the registry's
        ``get_sample_value`` collects every family (the process collector's /proc reads
        included) on each call, ≈ 9× the cost, and the watchdog asks every second."""
        done = 0.0
        for metric in (self.batch_write_seconds, self.write_errors):
            for family in metric.collect():
                done += sum(
                    s.value
                    for s in family.samples
                    if s.name in ("taza_batch_write_seconds_count", "taza_write_errors_total")
                )
        return int(done)

    def render(self) -> bytes:
        return generate_latest(self.registry)
