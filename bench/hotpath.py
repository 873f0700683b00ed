"""The service's per-message path in process: compiled (as installed) against its own Python
source, measured in one run.

    .venv/bin/python bench/hotpath.py            # table
    .venv/bin/python bench/hotpath.py --json     # machine-readable

Two steps of what ``taza-ingest`` does for every message, timed per message (CPU, best of
``--repeat`` passes, the collector as the service sets it):

- ``intake``: the lean intake's receive path, ``_Connection.data_received`` on 64 KiB buffers of
  QoS 1 PUBLISH packets (the MQTT parser, then an ``Incoming`` per PUBLISH onto the queue);
- ``pipeline``: ``Pipeline.process`` for each (the rate limit as compare.py runs the stream:
  off, or the defaults, 100/s and a burst of 1,000; decode, encode, the batch), batches of
  5,000 lines as the service cuts them;

on compare.py's two streams: ``four-topics`` (100,000 fill payloads on four topics, the rate
limit off) and ``fleet`` (1,000 taza-sim eco-boxes, three firmware styles, a topic each, the
rate limit on). The baseline is the same code run from its ``.py`` (``devstack.pysource``: the
modules of pyproject.toml's ``[tool.taza] compiled`` loaded from source, in a subprocess of
this script), so ``compiled ÷ source`` compares the two forms in the same minutes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if __name__ == "__main__" and "--source" in sys.argv:
    from devstack import pysource

    pysource.install()

import asyncio  # after the source finder, when there is one
import gc
import time
from datetime import UTC, datetime

from compare import DEVICE_TOPIC, FLEET_ID, PUBLISHERS, TOPIC, fleet_mix, payload_mix

from ingest import mqttcodec as codec
from ingest.batch import Batch, Incoming
from ingest.fleet import rules_build
from ingest.metrics import Metrics
from ingest.mqtt import IntakeOptions
from ingest.mqtt_lean import LeanIntake, _Connection
from ingest.pipeline import Pipeline, limits_from
from ingest.ratelimit import DeviceRateLimit
from ingest.service import GC_THRESHOLDS

N = 100_000
DEVICES = 1000
BUFFER = 65536
Stream = list[tuple[str, bytes]]


def four_topics() -> Stream:
    """compare.py's four-topics mix: message ``i`` on publisher ``i % 4``'s topic."""
    payloads = payload_mix(N, DEVICES, "cmp")
    topic = [TOPIC.format(region="almaty", prefix="cmp", p=p) for p in range(PUBLISHERS)]
    return [(topic[i % PUBLISHERS], p) for i, p in enumerate(payloads)]


def fleet() -> Stream:
    """compare.py's fleet mix: message ``i`` on device ``i % 1000``'s own topic."""
    mix = fleet_mix(N, DEVICES)
    return [
        (DEVICE_TOPIC.format(region="almaty", prefix=FLEET_ID, d=i % DEVICES), p)
        for i, p in enumerate(mix.payloads)
    ]


STREAMS = {"four-topics": (four_topics, False), "fleet": (fleet, True)}


def intake(stream: Stream, repeat: int) -> float:
    wire = b"".join(
        codec.publish(topic, payload, 1, packet_id=i % 65535 + 1)
        for i, (topic, payload) in enumerate(stream)
    )
    chunks = [wire[i : i + BUFFER] for i in range(0, len(wire), BUFFER)]

    async def once() -> float:
        queue: asyncio.Queue[Incoming | None] = asyncio.Queue(len(stream) + 1)
        options = IntakeOptions("127.0.0.1", 1, "bench", "taza/v1/#")
        lean = LeanIntake(options, Metrics(), queue)
        lean._loop = asyncio.get_running_loop()
        conn = _Connection(lean)
        started = time.process_time()
        for chunk in chunks:
            conn.data_received(chunk)
        spent = time.process_time() - started
        if queue.qsize() != len(stream):
            raise SystemExit(f"intake: {queue.qsize()} of {len(stream)} messages queued")
        return spent

    return min(asyncio.run(once()) for _ in range(repeat)) / len(stream) * 1e6


def pipeline(stream: Stream, limited: bool, repeat: int) -> float:
    received = datetime.now(UTC)
    best = float("inf")
    for _ in range(repeat):
        metrics = Metrics()
        pipe = Pipeline(
            metrics,
            limits=limits_from(4096, 7 * 86400, False),
            rate_limit=DeviceRateLimit(100.0, 1000, registry=metrics.registry) if limited else None,
        )
        items = [Incoming(i, 1, 0, t, p, received, 0.0) for i, (t, p) in enumerate(stream)]
        batch = Batch()
        accepted = 0
        started = time.process_time()
        for item in items:
            pipe.process(item, batch)
            if len(batch.lines) >= 5000:
                accepted += len(batch.messages)
                batch = Batch()
        best = min(best, time.process_time() - started)
        accepted += len(batch.messages)
        if accepted != len(stream):
            raise SystemExit(f"pipeline: {accepted} of {len(stream)} accepted")
    return best / len(stream) * 1e6


def measure(repeat: int) -> dict[str, object]:
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    out: dict[str, object] = {"build": rules_build()}
    for name, (make, limited) in STREAMS.items():
        stream = make()
        out[name] = {
            "intake_us_per_msg": round(intake(stream, repeat), 3),
            "pipeline_us_per_msg": round(pipeline(stream, limited, repeat), 3),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="passes per figure (best is kept)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--source", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.source:
        print(json.dumps(measure(args.repeat)))
        return
    compiled = measure(args.repeat)
    child = [sys.executable, __file__, "--source", "--repeat", str(args.repeat)]
    source = json.loads(subprocess.run(child, check=True, capture_output=True).stdout)
    result = {"compiled": compiled, "source": source}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"µs per message, best of {args.repeat}; builds: {compiled['build']} / {source['build']}")
    print(f"{'stream':12} {'step':9} {'compiled':>9} {'source':>8} {'ratio':>6}")
    for name in STREAMS:
        for step in ("intake", "pipeline"):
            c = compiled[name][f"{step}_us_per_msg"]  # type: ignore[index]
            s = source[name][f"{step}_us_per_msg"]
            print(f"{name:12} {step:9} {c:9.2f} {s:8.2f} {c / s:6.2f}")


if __name__ == "__main__":
    main()
