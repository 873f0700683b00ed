"""``Fleet.apply`` in process: µs per message on compare.py's stream and on simulated fleets.

The alert stage's rules alone (no journal, no publishes), fed messages already decoded by the
device contract, a fresh ``Fleet`` per repeat, best of ``--repeats`` (the machine is shared):

- ``compare`` — bench/compare.py's 100,000 payloads on its 4 topics (one per C publisher, each
  mixing 250 devices' readings: an unusual stream, 15 % of messages cause an event);
- ``15min`` / ``5min`` — taza-sim's eco-boxes (and a few RVMs) reporting every 15 / 5 minutes
  for ``--days`` days, in publish order across the fleet (a live fleet);
- ``backlog`` — the same 15-minute fleet, each device's whole day at once, device after
  device (store-and-forward uploads after an outage, delivered the next day).

    .venv/bin/python bench/fleet_apply.py [--bins 200] [--days 3] [--repeats 3] [--json]

Also counts, in one more untimed pass, the forecast fits per message (``crossing_ms`` calls).
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # bench/ingest.py would shadow the ingest package

from devices import decode
from devices.limits import Limits
from devices.message import Kind, Message
from devices.registry import DeviceInfo
from devstack.publisher import fill_messages
from ingest.fleet import Fleet, Thresholds, forecast
from ingest.fleet.settings import FleetSettings
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
    fit = forecast.crossing_ms

    def counted(*a: Any, **kw: Any) -> Any:
        nonlocal fits
        fits += 1
        return fit(*a, **kw)

    forecast.crossing_ms = counted
    try:
        run(stream, th)
    finally:
        forecast.crossing_ms = fit
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
    ap.add_argument("--only", choices=("compare", "15min", "5min", "backlog"), action="append")
    ap.add_argument("--forecast-interval-s", type=float, default=None,
                    help="device time between refits (0: a fit per reading)")  # fmt: skip
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    th = Thresholds()
    if args.forecast_interval_s is not None:
        th = Thresholds(forecast_interval_s=args.forecast_interval_s)
    builders = {
        "compare": lambda: compare_stream(),
        "15min": lambda: live(args.bins, args.days, 900),
        "5min": lambda: live(args.bins, args.days / 3, 300),
        "backlog": lambda: backlog(args.bins, args.days),
    }
    results = {}
    for name, build in builders.items():
        if args.only and name not in args.only:
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
