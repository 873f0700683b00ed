"""Unit tests of /metrics' content: series that exist from start, build info, readiness and
the watchdog's per-stage state (the end-to-end check against the real service and the
alerting rules is tests/test_deploy.py)."""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry

from devices import Reason
from ingest.metrics import Metrics, taza_version
from ingest.watchdog import Watchdog
from tests.test_compiled import PURE


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def tracked(watchdog: Watchdog, ready: list[bool] | None = None) -> Metrics:
    m = Metrics()
    state = ready if ready is not None else [True]
    m.track_service(readiness=lambda: (state[0], {}), watchdog=watchdog, spool_max_bytes=1 << 20)
    return m


def test_every_counter_has_a_series_before_anything_happens() -> None:
    """An absent series never matches a rule: rate() and increase() need a 0 to start from."""
    m = Metrics()
    empty = [f.name for f in m.registry.collect() if f.type == "counter" and not f.samples]
    assert empty == []
    rejected = {
        s.labels["reason"]
        for f in m.registry.collect()
        if f.name == "taza_messages_rejected"
        for s in f.samples
    }
    assert rejected == {r.value for r in Reason}
    assert value(m.registry, "taza_write_errors_total", kind="unavailable") == 0
    assert value(m.registry, "taza_write_errors_total", kind="refused") == 0
    assert value(m.registry, "taza_store_write_errors_total", store="spool", reason="ENOSPC") == 0


def test_build_info_and_process_metrics() -> None:
    m = Metrics()
    info = {"version": taza_version(), "python": platform.python_version()}
    info["implementation"] = platform.python_implementation()
    info["fleet_rules"] = "python" if PURE else "compiled"
    assert value(m.registry, "taza_build_info", **info) == 1
    assert taza_version() != "unknown"  # installed with `pip install -e .`
    rss = value(m.registry, "process_resident_memory_bytes")
    assert rss is not None
    assert rss > 1 << 20


def test_ready_gauge_follows_readiness_at_each_scrape() -> None:
    ready = [False]
    m = tracked(Watchdog(5), ready)
    assert value(m.registry, "taza_ready") == 0
    ready[0] = True
    assert value(m.registry, "taza_ready") == 1
    assert value(m.registry, "taza_spool_max_bytes") == 1 << 20


def test_stage_metrics_show_stuck_holding_and_idle_stages() -> None:
    clock = Clock()
    progress = {"delivery": 0}
    dog = Watchdog(stall_s=5, clock=clock)
    dog.watch("delivery", busy=lambda: True, progress=lambda: progress["delivery"])
    dog.watch(
        "fleet-history",
        busy=lambda: True,
        progress=lambda: 0,
        holding=lambda: "the fleet spool is full",
    )
    dog.watch("intake", busy=lambda: False, progress=lambda: 0)
    r = tracked(dog).registry
    dog.check()
    clock.now += 10
    dog.check()
    assert value(r, "taza_stage_stuck", stage="delivery") == 1
    assert value(r, "taza_stage_seconds_since_progress", stage="delivery") == 10
    assert value(r, "taza_stage_holding", stage="delivery") == 0
    assert value(r, "taza_stage_holding", stage="fleet-history") == 1
    assert value(r, "taza_stage_stuck", stage="fleet-history") == 0
    assert value(r, "taza_stage_stuck", stage="intake") == 0
    assert value(r, "taza_stage_seconds_since_progress", stage="intake") == 0

    progress["delivery"] += 1
    dog.check()
    assert value(r, "taza_stage_stuck", stage="delivery") == 0
    assert value(r, "taza_stage_seconds_since_progress", stage="delivery") == 0


def test_a_failed_stage_counts_as_stuck() -> None:
    dog = Watchdog(stall_s=5, clock=Clock())
    dog.watch("replay", busy=lambda: False, progress=lambda: 0)
    r = tracked(dog).registry
    dog.failed("replay", "RuntimeError: boom")
    dog.check()
    assert value(r, "taza_stage_stuck", stage="replay") == 1


def test_a_progress_probe_that_reads_the_registry_does_not_recurse() -> None:
    """The service's delivery probe counts writes with registry.get_sample_value, which
    collects the watchdog too: scraping must not call the probes again."""
    dog = Watchdog(stall_s=5, clock=Clock())
    m = tracked(dog)
    dog.watch(
        "delivery",
        busy=lambda: True,
        progress=lambda: int(m.registry.get_sample_value("taza_no_such_series") or 0),
    )
    dog.check()
    assert b'taza_stage_stuck{stage="delivery"} 0.0' in m.render()
