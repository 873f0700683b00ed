"""Cost of the per-device rate limit per message, and memory per tracked device.

    .venv/bin/python bench/ratelimit.py            # table
    .venv/bin/python bench/ratelimit.py --json
    .venv/bin/python bench/ratelimit.py --memory   # also: what one in-flight message holds

One core, best of ``--repeat`` passes (the least disturbed on a shared machine):

* ``allow`` on 1,000 and on 200,000 devices round robin (allowed), and a flooder refused;
* ``Pipeline.process`` of a valid fill with the limit on and off — the difference is what
  the limit adds to the hot path;
* tracemalloc bytes per device once 100,000 devices are tracked;
* with ``--memory``: tracemalloc bytes a message holds in a batch besides its payload
  (accepted fill, rejected junk), the constants of ingest/inflight.py.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ingest.batch import Batch, Incoming
from ingest.metrics import Metrics
from ingest.pipeline import Pipeline, limits_from
from ingest.ratelimit import DeviceRateLimit


def best_us(run: Callable[[], int], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        n = run()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def allow_cost(devices: int, n: int, repeat: int) -> float:
    limit = DeviceRateLimit(1e9, 10**9, max_devices=devices * 2)
    topics = [f"taza/v1/almaty/ecobox/eb-{d:06d}/fill" for d in range(devices)]
    for t in topics:
        limit.allow(t, 0.0)

    def run() -> int:
        allow, k = limit.allow, len(topics)
        for i in range(n):
            allow(topics[i % k], 1.0)
        return n

    return best_us(run, repeat)


def refused_cost(n: int, repeat: int) -> float:
    limit = DeviceRateLimit(1, 1)
    topic = "taza/v1/almaty/ecobox/flood/fill"

    def run() -> int:
        allow = limit.allow
        for _ in range(n):
            allow(topic, 0.0)
        return n

    return best_us(run, repeat)


def messages(n: int, devices: int, payload_bytes: int = 0) -> list[Incoming]:
    now, ts = datetime.now(UTC), int(time.time() * 1000)
    out = []
    for i in range(n):
        doc: dict[str, object] = {"ts": ts, "seq": i, "fill_pct": 50.5}
        if payload_bytes:
            doc["note"] = "x" * max(0, payload_bytes - 60)
        payload = bytes(bytearray(orjson.dumps(doc)))  # a right-sized copy, as a socket gives
        topic = f"taza/v1/almaty/ecobox/eb-{i % devices:06d}/fill"
        out.append(Incoming(i, 1, 1, topic, payload, now, time.monotonic()))
    return out


def process_cost(limited: bool, n: int, repeat: int) -> float:
    msgs = messages(n, 1000)
    metrics = Metrics()
    limit = DeviceRateLimit(1e9, 10**9, registry=metrics.registry) if limited else None
    pipeline = Pipeline(metrics, limits=limits_from(4096, 86400, False), rate_limit=limit)

    def run() -> int:
        batch = Batch()
        for m in msgs:
            pipeline.process(m, batch)
        return len(msgs)

    return best_us(run, repeat)


def bytes_per_device(devices: int) -> float:
    topics = [f"taza/v1/almaty/ecobox/eb-{d:06d}/fill" for d in range(devices)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    limit = DeviceRateLimit(100, 1000, max_devices=devices * 2)
    for t in topics:
        limit.allow(t, 0.0)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used / devices


def held_per_message(kind: str, payload_bytes: int, n: int = 5000) -> float:
    if kind == "accepted":
        msgs = messages(n, n, payload_bytes)
    else:
        now = datetime.now(UTC)
        msgs = [
            Incoming(i, 1, 1, f"taza/v1/a/ecobox/x{i}/fill", b"\xff" * payload_bytes, now, 0.0)
            for i in range(n)
        ]
    pipeline = Pipeline(Metrics(), limits=limits_from(4096, 86400, False))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    batch = Batch()
    for m in msgs:
        pipeline.process(m, batch)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000, help="calls per pass")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--memory", action="store_true", help="also bytes held per message")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    n, r = args.n, args.repeat
    out: dict[str, float] = {
        "allow_1k_devices_us": allow_cost(1000, n, r),
        "allow_200k_devices_us": allow_cost(200_000, n, r),
        "refused_flooder_us": refused_cost(n, r),
        "process_fill_limit_off_us": process_cost(False, n // 4, r),
        "process_fill_limit_on_us": process_cost(True, n // 4, r),
        "bytes_per_device_100k": bytes_per_device(100_000),
    }
    if args.memory:
        for size in (200, 4096):
            out[f"held_accepted_{size}B_payload"] = held_per_message("accepted", size)
            out[f"held_rejected_{size}B_payload"] = held_per_message("rejected", size)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for name, value in out.items():
        print(f"{name:<34} {value:10.3f}")


if __name__ == "__main__":
    main()
