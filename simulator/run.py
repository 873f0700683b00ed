"""``taza-sim run``: a fleet publishing in (accelerated) real time, one connection per device.

The deterministic stream (:mod:`simulator.stream`) says what each device sends at which
simulated time; this module maps simulated time onto the wall clock, hands each message to its
device at the right moment, reports progress once a second and writes the ground-truth log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import signal
import sys
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TextIO

import numpy as np

from devices import BrokerURL, DeviceInfo
from simulator.clock import SimClock
from simulator.device import Device, DeviceOptions, FleetCounters
from simulator.groundtruth import LogWriter, iso_utc
from simulator.stream import PUBLISH, FaultConfig, Models, Outgoing, StreamStats, fleet_stream

_MAX_SPAN_S = 365 * 86400.0  # an open-ended run generates at most a year ahead

#: ``taza-sim run --progress``: lines for people, one JSON record per line for programs, nothing.
ProgressFormat = Literal["human", "jsonl", "none"]


@dataclass(slots=True)
class RunConfig:
    broker: BrokerURL
    specs: Sequence[DeviceInfo]
    clock: SimClock
    duration_s: float | None
    seed: int = 0
    faults: FaultConfig = field(default_factory=FaultConfig)
    models: Models = field(default_factory=Models)
    log_path: Path | None = None
    client_prefix: str = "taza-sim"
    keepalive: int = 30
    connect_concurrency: int = 64
    drain_timeout_s: float = 15.0
    seq_start: int = 0
    progress: bool = True
    progress_format: ProgressFormat = "human"
    progress_stream: TextIO = sys.stderr


@dataclass(slots=True)
class RunResult:
    summary: dict[str, object]
    interrupted: bool = False


class _Tally:
    """Counts what was actually published (after PUBACK) and feeds the log."""

    def __init__(self, log: LogWriter | None, clock: SimClock) -> None:
        self.log = log
        self.clock = clock
        self.by_channel: Counter[str] = Counter()
        self.by_fault: Counter[str] = Counter()
        self.unconfirmed = 0
        self.lags = array("d")  # PUBACK time minus the time the message was due, seconds
        self.due = array("d")  # when each of those messages was due (wall time)

    def __call__(self, out: Outgoing, wall: float, acked: bool) -> None:
        if acked:
            self.by_channel[out.channel] += 1
            if out.fault:
                self.by_fault[out.fault] += 1
            if out.channel != "state":
                due = self.clock.wall_at(out.sim_t)
                self.due.append(due)
                self.lags.append(wall - due)
        else:
            self.unconfirmed += 1
        if self.log is not None:
            self.log.write(out, wall, acked=acked)


async def run_fleet(cfg: RunConfig) -> RunResult:
    loop = asyncio.get_running_loop()
    # aiomqtt connects in the default executor; a few more threads speed up a big fleet's ramp.
    loop.set_default_executor(ThreadPoolExecutor(max_workers=16, thread_name_prefix="connect"))
    clock = cfg.clock
    wall_end = clock.wall_start + cfg.duration_s if cfg.duration_s is not None else math.inf
    sim_end = clock.sim_at(wall_end) if math.isfinite(wall_end) else clock.sim_start + _MAX_SPAN_S
    log = LogWriter(cfg.log_path) if cfg.log_path else None
    tally = _Tally(log, clock)
    counters = FleetCounters(fleet_size=len(cfg.specs))
    stats = StreamStats()
    gate = asyncio.Semaphore(cfg.connect_concurrency)
    devices: dict[str, Device] = {}
    for spec in cfg.specs:
        options = DeviceOptions(
            client_prefix=cfg.client_prefix,
            keepalive=cfg.keepalive,
            store_forward=cfg.faults.store_forward,
            connect_gate=gate,
            rng=random.Random(f"{cfg.seed}/{spec.device_id}"),
        )
        devices[spec.device_id] = Device(spec, cfg.broker, tally, counters, options)

    stop = asyncio.Event()
    interrupted = False

    def on_signal() -> None:
        nonlocal interrupted
        interrupted = True
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)

    started = time.time()
    tasks = [asyncio.create_task(d.run(), name=d.spec.device_id) for d in devices.values()]
    progress = asyncio.create_task(_progress(cfg, clock, devices, counters, log, stop))
    dispatched = 0
    try:
        stream = fleet_stream(
            cfg.specs,
            seed=cfg.seed,
            start=clock.sim_start,
            end=sim_end,
            faults=cfg.faults,
            models=cfg.models,
            stats=stats,
            seq_start=cfg.seq_start,
        )
        for out in stream:
            if stop.is_set():
                break
            delay = clock.wall_at(out.sim_t) - time.time()
            if delay > 0.001:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                if stop.is_set():
                    break
            devices[out.device_id].enqueue(out)
            dispatched += 1
            if dispatched % 512 == 0:
                await asyncio.sleep(0)
        if not stop.is_set() and math.isfinite(wall_end):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, wall_end - time.time()))
    finally:
        deadline = time.monotonic() + cfg.drain_timeout_s
        for d in devices.values():
            d.finish(deadline)
        _, pending = await asyncio.wait(tasks, timeout=cfg.drain_timeout_s + 15.0)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        stop.set()
        await progress
        unpublished = 0
        for d in devices.values():
            if d.attempted is not None:
                tally(d.attempted, time.time(), False)
                if d.queue and d.queue[0] is d.attempted:
                    d.queue.popleft()
            unpublished += sum(1 for o in d.queue if o.action == PUBLISH)
        if log is not None:
            log.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    elapsed = time.time() - started
    published = sum(tally.by_channel.values())
    n_rvm = sum(1 for s in cfg.specs if s.kind == "rvm")
    summary: dict[str, object] = {
        "broker": str(cfg.broker),
        "devices": len(cfg.specs),
        "ecoboxes": len(cfg.specs) - n_rvm,
        "rvms": n_rvm,
        "seed": cfg.seed,
        "speed": clock.speed,
        "sim_start": iso_utc(clock.sim_start),
        "sim_end": iso_utc(clock.sim_at(started + elapsed)),
        "wall_seconds": round(elapsed, 3),
        "published": published,
        "published_per_s": round(published / elapsed, 1) if elapsed > 0 else 0.0,
        "by_channel": dict(sorted(tally.by_channel.items())),
        "faults": dict(sorted(tally.by_fault.items())),
        "connects": counters.connects,
        "reconnects": counters.reconnects,
        "connect_failures": counters.connect_failures,
        "deliberate_outages": counters.deliberate_drops,
        "dropped_while_offline": stats.dropped_offline + counters.dropped_disconnected,
        "dropped_backlog_full": counters.dropped_backlog_full,
        "unpublished_at_end": unpublished,
        "unconfirmed": tally.unconfirmed,
        "ramp_seconds": round(counters.all_up_at - started, 3) if counters.all_up_at else None,
        "lag_seconds": _quantiles(tally.lags),
        "steady_lag_seconds": _quantiles(tally.lags, tally.due, counters.all_up_at),
        "log": str(cfg.log_path) if cfg.log_path else None,
        "log_lines": log.lines if log else 0,
        "interrupted": interrupted,
    }
    return RunResult(summary, interrupted)


def _quantiles(
    values: array[float], due: array[float] | None = None, after: float | None = None
) -> dict[str, float] | None:
    """p50/p99/max of how late messages were acknowledged versus their simulated schedule
    (only those due after ``after``: the steady state once every device is connected)."""
    data = np.frombuffer(values, dtype=np.float64)
    if due is not None:
        if after is None:
            return None
        data = data[np.frombuffer(due, dtype=np.float64) >= after]
    if data.size == 0:
        return None
    p50, p99 = np.percentile(data, [50, 99])
    return {
        "p50": round(float(p50), 4),
        "p99": round(float(p99), 4),
        "max": round(float(data.max()), 4),
    }


async def _progress(
    cfg: RunConfig,
    clock: SimClock,
    devices: dict[str, Device],
    counters: FleetCounters,
    log: LogWriter | None,
    stop: asyncio.Event,
) -> None:
    """Once a second: messages/s, devices online, backlog; and flush the log.

    ``jsonl`` is the machine interface (the demo reads it): one object per line,
    ``{"event": "progress", "elapsed_s", "sim_time", "published", "rate_per_s", "online",
    "devices", "queued", "reconnects"}``, the same figures as the human line.
    """
    started = time.time()
    last = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        if log is not None:
            log.flush()
        if not cfg.progress or cfg.progress_format == "none":
            continue
        now = time.time()
        published = counters.published
        record = {
            "event": "progress",
            "elapsed_s": round(now - started, 3),
            "sim_time": iso_utc(clock.sim_at(now))[:19] + "Z",
            "published": published,
            "rate_per_s": published - last,
            "online": counters.online,
            "devices": len(devices),
            "queued": sum(len(d.queue) for d in devices.values()),
            "reconnects": counters.reconnects,
        }
        last = published
        if cfg.progress_format == "jsonl":
            line = json.dumps(record)
        else:
            line = (
                f"[{record['elapsed_s']:6.1f}s] sim {record['sim_time']}  "
                f"published {published:>8} ({record['rate_per_s']:>6}/s)  "
                f"online {record['online']:>5}/{record['devices']}  "
                f"queued {record['queued']:>6}  reconnects {record['reconnects']}"
            )
        print(line, file=cfg.progress_stream, flush=True)


def render_summary(summary: dict[str, object]) -> str:
    """The end-of-run summary for people."""
    lines = [
        f"taza-sim run: {summary['devices']} devices ({summary['ecoboxes']} eco-boxes, "
        f"{summary['rvms']} RVMs) → {summary['broker']}",
        f"  simulated {summary['sim_start']} → {summary['sim_end']} at ×{summary['speed']} "
        f"in {summary['wall_seconds']} s",
        f"  published {summary['published']} messages ({summary['published_per_s']}/s, "
        f"acknowledged by the broker): {summary['by_channel']}",
    ]
    if summary["faults"]:
        lines.append(f"  deliberate faults published: {summary['faults']}")
    lines.append(
        f"  connections {summary['connects']}, reconnects {summary['reconnects']}, "
        f"failed connects {summary['connect_failures']}, "
        f"deliberate outages {summary['deliberate_outages']}"
    )
    lines.append(
        f"  not published: {summary['dropped_while_offline']} dropped while offline, "
        f"{summary['dropped_backlog_full']} dropped (backlog full), "
        f"{summary['unpublished_at_end']} still queued at the end, "
        f"{summary['unconfirmed']} sent without PUBACK"
    )
    lag = summary.get("steady_lag_seconds")
    if isinstance(lag, dict):
        lines.append(
            f"  all {summary['devices']} devices up after {summary['ramp_seconds']} s; then "
            f"PUBACK lag behind schedule p50 {lag['p50']} s, p99 {lag['p99']} s, "
            f"max {lag['max']} s"
        )
    if summary["log"]:
        lines.append(f"  ground truth: {summary['log']} ({summary['log_lines']} lines)")
    if summary["interrupted"]:
        lines.append("  (interrupted)")
    return "\n".join(lines)
