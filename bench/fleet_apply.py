"""``Fleet.apply`` in process: µs per message on compare.py's stream and on simulated fleets.

The alert stage's rules alone (no journal, no publishes), fed messages already decoded by the
device contract, a fresh ``Fleet`` per repeat, best of ``--repeats`` (the machine is shared):

- ``fleet`` — bench/compare.py's ``--stream fleet``: 1,000 eco-boxes' last 100 readings each
  (taza-sim), reading by reading across the fleet, every device on its own topic;
- ``compare`` — bench/compare.py's default stream (``four-topics``): 100,000 payloads on 4
  topics (one per C publisher, each
  mixing 250 devices' readings: an unusual stream, 15 % of messages cause an event);
- ``15min`` / ``5min`` — taza-sim's eco-boxes (and a few RVMs) reporting every 15 / 5 minutes
  for ``--days`` days, in publish order across the fleet (a live fleet);
- ``backlog`` — the same 15-minute fleet, each device's whole day at once, device after
  device (store-and-forward uploads after an outage, delivered the next day).

    .venv/bin/python bench/fleet_apply.py [--bins 200] [--days 3] [--repeats 3] [--json]

Also counts, in one more untimed pass, the forecast fits per message (``forecast.FIT`` calls).

``--only stage``: the whole ``FleetStage.delivered`` instead (journal with its fdatasync in a
temporary directory, rules, alert publishes to a counter, history lines to a fake writer) on
compare.py's stream in the service's 5,000-message batches (``--only stage-fleet``: on its
fleet stream): CPU µs per message (all threads)
and the collector's runs, with the service's GC thresholds after ``gc.freeze()``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import heapq
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # bench/ingest.py would shadow the ingest package

from prometheus_client import CollectorRegistry

from devices import decode
from devices.limits import Limits
from devices.message import Kind, Message
from devices.registry import DeviceInfo
from devstack.publisher import FLEET_ID, fill_messages, fleet_fill_payloads
from ingest.batch import Batch, Incoming
from ingest.fleet import Fleet, Thresholds, forecast
from ingest.fleet.settings import FleetSettings
from ingest.fleet.stage import FleetStage, Publish
from ingest.service import GC_THRESHOLDS
from simulator.stream import PUBLISH, FaultConfig, Models, StreamStats, device_stream

T0_S = 1_780_000_000.0  # 2026-05-28T20:26:40Z
LIMITS = Limits(max_age=timedelta(days=30))
Stream = list[tuple[Message, DeviceInfo | None, int]]


def device(i: int, interval: int) -> DeviceInfo:
    kind, site = (Kind.RVM, "commercial") if i % 20 == 19 else (Kind.ECOBOX, "residential")
    capacity = 150.0 if kind is Kind.RVM else 240.0
    fraction = None if kind is Kind.RVM else "plastic"
    return DeviceInfo(f"{kind.value}-{i:05d}", kind, "almaty", 43.25, 76.9, capacity,
                      fraction, site, interval)  # fmt: skip


def one_device(d: DeviceInfo, days: float, seed: int) -> Iterator[tuple[float, Message]]:
    """(simulated publish time, the stored message) of one device, in publish order."""
    for out in device_stream(
        d, seed=seed, start=T0_S, end=T0_S + days * 86400, faults=FaultConfig(),
        models=Models(), stats=StreamStats(),
    ):  # fmt: skip
        if out.action != PUBLISH or out.expect == "reject":
            continue
        received = datetime.fromtimestamp(out.sim_t + 1, UTC)
        yield out.sim_t, decode(out.topic, out.payload, received, LIMITS)


def live(bins: int, days: float, interval: int, seed: int = 7) -> Stream:
    """A fleet in publish order; delivered a second after each publish."""
    devices = [device(i, interval) for i in range(bins)]
    streams = [((t, m, d) for t, m in one_device(d, days, seed)) for d in devices]
    merged = heapq.merge(*streams, key=lambda x: x[0])
    return [(m, d, int((t + 1) * 1000)) for t, m, d in merged]


def backlog(bins: int, days: float, seed: int = 7) -> Stream:
    """Each device's day uploaded at once, device after device, the day after."""
    out: Stream = []
    for day in range(int(days)):
        drained_ms = int((T0_S + (day + 1) * 86400) * 1000)
        for i in range(bins):
            d = device(i, 900)
            for t, m in one_device(d, days, seed):
                if day * 86400 <= t - T0_S < (day + 1) * 86400:
                    out.append((m, d, drained_ms))
    return out


def fleet_stream(n: int = 100_000, devices: int = 1000) -> Stream:
    """compare.py's ``fleet`` stream (its ``fleet_mix``), delivered now."""
    received = datetime.now(UTC)
    now_ms = int(received.timestamp() * 1000)
    out: Stream = []
    for i, payload in enumerate(fleet_fill_payloads(devices, n // devices)):
        topic = f"taza/v1/almaty/ecobox/{FLEET_ID}-{i % devices:05d}/fill"
        out.append((decode(topic, payload, received, LIMITS), None, now_ms))
    return out


def compare_stream(n: int = 100_000, devices: int = 1000) -> Stream:
    """compare.py's payloads (its ``payload_mix``), slice p on publisher p's topic (its
    ``TOPIC``, 4 publishers), in their interleaved order. Not imported: bench/ is off the
    path (see the top)."""
    per = -(-n // devices)
    payloads = [p for _, p, _ in fill_messages(devices, per, prefix="cmp")][:n]
    received = datetime.now(UTC)
    out: Stream = []
    for i, payload in enumerate(payloads):
        topic = f"taza/v1/almaty/ecobox/cmp-p{i % 4}/fill"
        m = decode(topic, payload, received, LIMITS)
        out.append((m, None, m.ts_ms))
    return out


class _NoDatabase:
    description = "none"

    async def start(self) -> None:
        pass

    async def write(self, body: bytes) -> None:
        pass

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        pass


def stage_batches(fleet: bool = False, n: int = 100_000, devices: int = 1000,
                  size: int = 5000) -> list[Batch]:  # fmt: skip
    """compare.py's stream (four-topics, or ``fleet``) as the pipeline hands it to delivery:
    decoded, with its raw payloads (the journal keeps them); no lines (the stage never reads
    them)."""
    if fleet:
        payloads = fleet_fill_payloads(devices, n // devices)
        topics = [f"taza/v1/almaty/ecobox/{FLEET_ID}-{i % devices:05d}/fill" for i in range(n)]
    else:
        per = -(-n // devices)
        payloads = [p for _, p, _ in fill_messages(devices, per, prefix="cmp")][:n]
        topics = [f"taza/v1/almaty/ecobox/cmp-p{i % 4}/fill" for i in range(n)]
    received = datetime.now(UTC)
    batches = []
    for start in range(0, n, size):
        batch = Batch()
        for i in range(start, min(n, start + size)):
            m = decode(topics[i], payloads[i], received, LIMITS)
            batch.add_accepted(
                Incoming(i, 1, 1, topics[i], payloads[i], received, 0.0), [], m, None
            )
        batches.append(batch)
    return batches


def open_stage(th: Thresholds, directory: str, publish: Publish) -> FleetStage:
    """The service's stage with a database that stores everything and no registry, opened on
    ``directory`` (its journal and snapshot): what the stage benchmarks time and count."""
    stage = FleetStage(FleetSettings(th), writer=_NoDatabase(), publish=publish,
                       data_dir=Path(directory), registry=None, metrics=CollectorRegistry(),
                       ready=lambda: True, read_retained=None, spool_max_bytes=1 << 30)  # fmt: skip
    stage.open()
    return stage


async def _stage_pass(batches: list[Batch], th: Thresholds, directory: str) -> dict[str, float]:
    published = 0

    def publish(topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        nonlocal published
        published += 1

    stage = open_stage(th, directory, publish)
    history = asyncio.create_task(stage.history.run())
    runs = 0

    def counted(phase: str, info: dict[str, int]) -> None:
        nonlocal runs
        runs += phase == "start"

    gc.callbacks.append(counted)
    cpu = time.process_time()
    for batch in batches:
        await stage.delivered(batch.delivered())
        await asyncio.sleep(0)  # the history task takes its lines, as in the service
    cpu = time.process_time() - cpu
    gc.callbacks.remove(counted)
    history.cancel()
    stage.close()
    n = sum(len(b.messages) for b in batches)
    return {"messages": n, "us_per_msg": round(cpu / n * 1e6, 2),
            "gc_runs": runs, "alert_publishes_per_msg": round(published / n, 4)}  # fmt: skip


def measure_stage(repeats: int, th: Thresholds, fleet: bool = False) -> dict[str, float]:
    batches = stage_batches(fleet)
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    results = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="taza-stage-") as tmp:
            results.append(asyncio.run(_stage_pass(batches, th, tmp)))
    return min(results, key=lambda r: r["us_per_msg"])


def run(stream: Stream, th: Thresholds) -> tuple[float, int]:
    """(seconds, events) of one pass through a fresh fleet."""
    fleet = Fleet(FleetSettings(th))
    events = 0
    t0 = time.perf_counter()
    for m, info, now in stream:
        events += len(fleet.apply(m, info, now))
    return time.perf_counter() - t0, events


def measure(stream: Stream, repeats: int, th: Thresholds) -> dict[str, float]:
    best, events = min(run(stream, th) for _ in range(repeats))
    fits = 0
    fit = forecast.FIT  # one call per crossing_ms; a module global, so compiled code reads it

    def counted(*a: Any, **kw: Any) -> Any:
        nonlocal fits
        fits += 1
        return fit(*a, **kw)

    forecast.FIT = counted
    try:
        run(stream, th)
    finally:
        forecast.FIT = fit
    n = len(stream)
    return {
        "messages": n,
        "us_per_msg": round(best / n * 1e6, 2),
        "events_per_msg": round(events / n, 4),
        "fits_per_msg": round(fits / n, 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bins", type=int, default=200)
    ap.add_argument("--days", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--only",
        choices=("fleet", "compare", "15min", "5min", "backlog", "stage", "stage-fleet"),
        action="append",
    )
    ap.add_argument("--forecast-interval-s", type=float, default=None,
                    help="device time between refits (0: a fit per reading)")  # fmt: skip
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    th = Thresholds()
    if args.forecast_interval_s is not None:
        th = Thresholds(forecast_interval_s=args.forecast_interval_s)
    builders = {
        "fleet": lambda: fleet_stream(),
        "compare": lambda: compare_stream(),
        "15min": lambda: live(args.bins, args.days, 900),
        "5min": lambda: live(args.bins, args.days / 3, 300),
        "backlog": lambda: backlog(args.bins, args.days),
        "stage": lambda: [],
        "stage-fleet": lambda: [],
    }
    results = {}
    for name, build in builders.items():
        staged = name.startswith("stage")
        if staged and not (args.only and name in args.only):
            continue  # only when asked: it measures the stage, not ``apply``
        if args.only and name not in args.only:
            continue
        if staged:
            results[name] = r = measure_stage(args.repeats, th, fleet=name == "stage-fleet")
            if not args.json:
                print(f"{name:8} {r['messages']:>7} msgs  {r['us_per_msg']:6.2f} µs/msg (CPU, "
                      f"FleetStage.delivered)  gc runs {r['gc_runs']}  alert publishes/msg "
                      f"{r['alert_publishes_per_msg']:.4f}", flush=True)  # fmt: skip
            continue
        results[name] = measure(build(), args.repeats, th)
        if not args.json:
            r = results[name]
            print(f"{name:8} {r['messages']:>7} msgs  {r['us_per_msg']:6.2f} µs/msg  "
                  f"events/msg {r['events_per_msg']:.4f}  fits/msg {r['fits_per_msg']:.4f}",
                  flush=True)  # fmt: skip
    if args.json:
        print(json.dumps({"forecast_interval_s": th.forecast_interval_s, "streams": results}))


if __name__ == "__main__":
    main()
