"""End-to-end ingest figures: published → queryable in a real influxd.

Starts its own mosquitto and influxd (loopback, temporary directories) and a real
``taza-ingest`` process, then measures, in one run:

1. baseline: the same publisher into a bare paho subscriber (broker + client ceiling);
2. sustained throughput: N messages as fast as the publisher goes, until all are
   queryable; ratio against the baseline;
3. latency at a fixed rate (default: half the measured throughput): per message, from
   publish to the moment an InfluxQL count shows it — p50/p90/p99;
and the service's CPU seconds and peak RSS from /proc.

    .venv/bin/python bench/ingest.py [--messages 100000] [--devices 1000] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from devstack.ingest_process import IngestProcess
from devstack.publisher import Publisher, fill_messages
from devstack.servers import InfluxDB1, Mosquitto, find_binary, free_port


def proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds user+system, peak RSS bytes) of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    import os

    cpu = ticks / os.sysconf("SC_CLK_TCK")
    hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return cpu, hwm


def baseline(broker: Mosquitto, msgs: list[tuple[str, bytes]]) -> float:
    """The same publisher into mosquitto_sub (C, QoS 1) in its own process: the ceiling
    of publisher + broker that any subscriber, taza-ingest included, works under."""
    sub = subprocess.Popen(
        [
            find_binary("mosquitto_sub"),
            "-h",
            broker.host,
            "-p",
            str(broker.port),
            "-q",
            "1",
            "-t",
            "bench/#",
            "-C",
            str(len(msgs)),
            "-i",
            "bench-baseline-sub",
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # subscribed: mosquitto_sub subscribes right after CONNACK
    pub = Publisher(broker.host, broker.port, "bench-baseline-pub")
    start = time.monotonic()
    pub.publish((t.replace("taza/v1", "bench"), p) for t, p in msgs)
    try:
        sub.wait(300)
    except subprocess.TimeoutExpired:
        sub.kill()
        raise SystemExit("baseline subscriber did not receive every message") from None
    elapsed = time.monotonic() - start
    pub.close()
    return len(msgs) / elapsed


def count(influxd: InfluxDB1, db: str) -> int:
    rows = influxd.query("SELECT count(fill_pct) FROM fill", db=db)
    return int(rows[0]["count"]) if rows else 0  # type: ignore[call-overload]


def run_phase(
    influxd: InfluxDB1,
    db: str,
    broker: Mosquitto,
    msgs: list[tuple[str, bytes]],
    rate: float | None,
) -> dict[str, float]:
    """Publish; poll the count every 20 ms; derive throughput and per-message latency."""
    already = count(influxd, db)
    polls: list[tuple[float, int]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            polls.append((time.monotonic(), count(influxd, db) - already))
            time.sleep(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    pub = Publisher(broker.host, broker.port, f"bench-pub-{db}-{rate}")
    sent_at = np.empty(len(msgs))
    poller.start()
    start = time.monotonic()
    block = 500
    for i in range(0, len(msgs), block):
        chunk = msgs[i : i + block]
        if rate:
            ahead = i / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
        sent_at[i : i + len(chunk)] = time.monotonic()
        pub.publish(chunk)
    deadline = time.monotonic() + 300
    while (not polls or polls[-1][1] < len(msgs)) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    poller.join()
    pub.close()
    times = np.array([t for t, _ in polls])
    counts = np.array([c for _, c in polls])
    if counts[-1] < len(msgs):
        raise SystemExit(f"only {counts[-1]} of {len(msgs)} messages became queryable")
    # message i is queryable at the first poll whose count exceeds i
    first = np.searchsorted(counts, np.arange(1, len(msgs) + 1), side="left")
    latency = times[first] - sent_at
    end = times[first[-1]]
    return {
        "messages": len(msgs),
        "seconds": end - start,
        "msgs_per_s": len(msgs) / (end - start),
        "publish_msgs_per_s": len(msgs) / (sent_at[-1] - start) if sent_at[-1] > start else 0.0,
        "latency_p50_ms": float(np.percentile(latency, 50) * 1000),
        "latency_p90_ms": float(np.percentile(latency, 90) * 1000),
        "latency_p99_ms": float(np.percentile(latency, 99) * 1000),
    }


def drain_phase(
    ingest: IngestProcess,
    influxd: InfluxDB1,
    db: str,
    broker: Mosquitto,
    msgs: list[tuple[str, bytes]],
) -> dict[str, float]:
    """The service's own ceiling: a backlog held by the broker, drained as fast as it goes."""
    ingest.stop()
    pub = Publisher(broker.host, broker.port, "bench-drain-pub")
    pub.publish(msgs)
    pub.wait_all_acked(300)
    pub.close()
    already = count(influxd, db)
    ingest.start()
    assert ingest.proc is not None
    cpu0, _ = proc_stats(ingest.proc.pid)
    start = time.monotonic()
    while count(influxd, db) - already < len(msgs):
        if time.monotonic() - start > 300:
            raise SystemExit("backlog not drained within 300 s")
        time.sleep(0.02)
    elapsed = time.monotonic() - start
    cpu1, rss = proc_stats(ingest.proc.pid)
    return {
        "messages": len(msgs),
        "seconds": elapsed,
        "msgs_per_s": len(msgs) / elapsed,
        "cpu_us_per_msg": (cpu1 - cpu0) / len(msgs) * 1e6,
        "peak_rss_mib": rss / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--latency-rate", type=float, default=None, help="msg/s for the latency phase")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--keep-logs", default=None, help="directory for the service's data and log")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="taza-bench-") as tmp:
        root = Path(tmp)
        with Mosquitto(root / "mq") as broker, InfluxDB1(root / "influx") as influxd:
            per_device = max(1, args.messages // args.devices)
            msgs = [(t, p) for t, p, _ in fill_messages(args.devices, per_device, prefix="bench")]
            drain_msgs = [
                (t, p) for t, p, _ in fill_messages(args.devices, per_device, prefix="drn")
            ]
            lat_msgs = [
                (t, p)
                for t, p, _ in fill_messages(args.devices, max(1, per_device // 4), prefix="lat")
            ]
            print(
                f"baseline: {len(msgs)} messages publisher → bare subscriber ...", file=sys.stderr
            )
            base = baseline(broker, msgs)
            ingest = IngestProcess(
                Path(args.keep_logs) if args.keep_logs else root / "ingest",
                {
                    "TAZA_MQTT_URL": broker.url,
                    "TAZA_INFLUX_URL": influxd.url,
                    "TAZA_INFLUX_DB": "bench",
                },
                free_port(),
            ).start()
            assert ingest.proc is not None
            cpu0, _ = proc_stats(ingest.proc.pid)
            print(f"throughput: {len(msgs)} messages through taza-ingest ...", file=sys.stderr)
            thr = run_phase(influxd, "bench", broker, msgs, None)
            cpu1, rss = proc_stats(ingest.proc.pid)
            rate = args.latency_rate or round(thr["msgs_per_s"] / 2, -2)
            print(f"latency: {len(lat_msgs)} messages at {rate:.0f} msg/s ...", file=sys.stderr)
            lat = run_phase(influxd, "bench", broker, lat_msgs, rate)
            print(
                f"drain: {len(drain_msgs)} messages queued while the service is down ...",
                file=sys.stderr,
            )
            drain = drain_phase(ingest, influxd, "bench", broker, drain_msgs)
            ingest.stop()

    result = {
        "baseline_broker_msgs_per_s": round(base),
        "throughput": {k: round(v, 2) for k, v in thr.items()},
        "throughput_ratio_vs_baseline": round(thr["msgs_per_s"] / base, 3),
        "service_cpu_seconds": round(cpu1 - cpu0, 2),
        "service_cpu_us_per_msg": round((cpu1 - cpu0) / len(msgs) * 1e6, 1),
        "service_peak_rss_mib": round(rss / 2**20, 1),
        "latency_rate_msgs_per_s": rate,
        "latency": {k: round(v, 2) for k, v in lat.items()},
        "backlog_drain": {k: round(v, 2) for k, v in drain.items()},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    ratio = result["throughput_ratio_vs_baseline"]
    print(f"baseline, publisher -> mosquitto_sub (C):    {base:>8.0f} msg/s")
    print(f"taza-ingest, published -> queryable:         {thr['msgs_per_s']:>8.0f} msg/s")
    print(f"  ratio vs baseline {ratio:.2f}; {len(msgs)} messages in {thr['seconds']:.1f} s")
    print(
        f"service CPU {result['service_cpu_seconds']} s "
        f"({result['service_cpu_us_per_msg']} us/msg), "
        f"peak RSS {result['service_peak_rss_mib']} MiB"
    )
    print(
        f"latency at {rate:.0f} msg/s: p50 {lat['latency_p50_ms']:.0f} ms, "
        f"p90 {lat['latency_p90_ms']:.0f} ms, p99 {lat['latency_p99_ms']:.0f} ms"
    )
    print(
        f"backlog drain (service alone): {drain['msgs_per_s']:.0f} msg/s, "
        f"{drain['cpu_us_per_msg']:.0f} us CPU/msg, peak RSS {drain['peak_rss_mib']:.0f} MiB"
    )
    print(
        f"latency at saturation: p50 {thr['latency_p50_ms']:.0f} ms, "
        f"p99 {thr['latency_p99_ms']:.0f} ms"
    )


if __name__ == "__main__":
    main()
