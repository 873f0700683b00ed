"""The watchdog behind ``/healthz``: every stage alive, and making progress when it has work.

An HTTP server that answers says nothing about the stages behind it: a delivery task stuck
in a write that never returns leaves the process up and silent. Each stage is watched
through three cheap probes it already has — whether work is waiting for it (``busy``), a
counter that moves when it works (``progress``), and a legitimate reason to hold still
(``holding``, e.g. the spool is full: that is ``/readyz``'s business, not a fault). A stage
that is busy, not holding, and whose counter has not moved for ``stall_s`` is *stuck*; a
stage whose task ended while the service runs has *failed*. Either makes ``/healthz`` 503,
naming the stage and why, so a supervisor's liveness probe restarts the process.

The same judgement is on ``/metrics`` (the watchdog is a Prometheus collector): per stage
``taza_stage_stuck``, ``taza_stage_holding`` and ``taza_stage_seconds_since_progress``, so an
alerting rule sees a lagging fleet stage before — or without — anyone polling ``/healthz``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import structlog
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

log = structlog.get_logger("ingest.watchdog")


def _never() -> str | None:
    return None


@dataclass(slots=True)
class _Watched:
    name: str
    busy: Callable[[], bool]
    progress: Callable[[], int]
    holding: Callable[[], str | None]
    last_value: int
    last_change: float
    failed: str | None = None
    reported: bool = False


class Watchdog:
    def __init__(self, stall_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = stall_s
        self.clock = clock
        self._stages: dict[str, _Watched] = {}
        self._judged: dict[str, dict[str, object]] = {}  # the last check(), for collect()

    def watch(
        self,
        name: str,
        *,
        busy: Callable[[], bool],
        progress: Callable[[], int],
        holding: Callable[[], str | None] = _never,
    ) -> None:
        self._stages[name] = _Watched(name, busy, progress, holding, progress(), self.clock())

    def failed(self, name: str, why: str) -> None:
        """The stage's task ended: unhealthy for good (the service is going down)."""
        stage = self._stages.get(name)
        if stage is not None:
            stage.failed = why

    def sample(self) -> None:
        now = self.clock()
        for stage in self._stages.values():
            value = stage.progress()
            if value != stage.last_value or not stage.busy():
                stage.last_value = value
                stage.last_change = now
                stage.reported = False

    def check(self) -> tuple[bool, dict[str, dict[str, object]]]:
        """(healthy, per stage ``{"state": ok|idle|holding|stuck|failed, "why": ...}``)."""
        self.sample()
        now = self.clock()
        healthy = True
        out: dict[str, dict[str, object]] = {}
        for stage in self._stages.values():
            if stage.failed is not None:
                healthy = False
                out[stage.name] = {"state": "failed", "why": stage.failed}
                continue
            if not stage.busy():
                out[stage.name] = {"state": "idle"}
                continue
            hold = stage.holding()
            if hold is not None:
                out[stage.name] = {"state": "holding", "why": hold}
                continue
            still = now - stage.last_change
            if still > self.stall_s:
                healthy = False
                why = f"work pending and no progress for {still:.0f}s (limit {self.stall_s:g}s)"
                out[stage.name] = {"state": "stuck", "why": why}
                if not stage.reported:
                    log.error("stage_stuck", stage=stage.name, why=why)
                    stage.reported = True
                continue
            out[stage.name] = {"state": "ok"}
        self._judged = out
        return healthy, out

    def collect(self) -> Iterator[Metric]:
        """Prometheus collector: every watched stage as the last ``check`` judged it (``run``
        checks each second). It never samples itself: a stage's progress probe may read the
        same registry, which would collect this again."""
        now = self.clock()
        stuck = GaugeMetricFamily(
            "taza_stage_stuck",
            "1 while a stage has work and no progress for TAZA_STALL_TIMEOUT_S, or its task "
            "ended (/healthz 503)",
            labels=["stage"],
        )
        holding = GaugeMetricFamily(
            "taza_stage_holding",
            "1 while a stage has work but holds still for a stated reason (e.g. a full "
            "store: acknowledgements held)",
            labels=["stage"],
        )
        still = GaugeMetricFamily(
            "taza_stage_seconds_since_progress",
            "seconds a stage with work has made no progress (0 while idle)",
            labels=["stage"],
        )
        for name, stage in self._stages.items():
            state = self._judged.get(name, {}).get("state", "ok")
            stuck.add_metric([name], 1.0 if state in ("stuck", "failed") else 0.0)
            holding.add_metric([name], 1.0 if state == "holding" else 0.0)
            idle = state == "idle"
            still.add_metric([name], 0.0 if idle else max(0.0, now - stage.last_change))
        yield from (stuck, holding, still)

    def describe(self) -> Iterator[Metric]:
        """Names only, so registering does not judge stages that are not wired yet."""
        for name in ("taza_stage_stuck", "taza_stage_holding", "taza_stage_seconds_since_progress"):
            yield GaugeMetricFamily(name, "", labels=["stage"])

    async def run(self, interval_s: float = 1.0) -> None:
        """Sample (and log a newly stuck stage) once per interval, whether or not anyone asks."""
        while True:
            self.check()
            await asyncio.sleep(interval_s)
