"""A backlog drained: N messages (default 1M) queued at the broker while taza-ingest is down,
then the service started — drain time, msg/s, and its RSS over time (sampled every 0.5 s).

The service first runs once so its persistent session (and subscription) exists; it is
stopped, C publishers (``mosquitto_pub -l -q 1``) queue the backlog in that session (the
broker's ``$SYS`` received counter says when all arrived), and the service is started again.

    .venv/bin/python bench/backlog.py [--messages 1000000] [--json]
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

from compare import Mix, Publishers, Queryable, payload_mix, proc_cpu, proc_hwm

from devstack.ingest_process import IngestProcess
from devstack.servers import InfluxDB1, Mosquitto, find_binary, free_port


def broker_received(broker: Mosquitto) -> int:
    out = subprocess.run(
        [
            find_binary("mosquitto_sub"),
            *("-h", broker.host, "-p", str(broker.port)),
            *("-t", "$SYS/broker/publish/messages/received", "-C", "1", "-W", "5"),
        ],
        capture_output=True,
        timeout=10,
    )
    return int(out.stdout.strip() or 0)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    payloads = Mix(payload_mix(args.messages, args.devices, "bkl"))

    with tempfile.TemporaryDirectory(prefix="taza-backlog-") as tmp:
        root = Path(tmp)
        with (
            Mosquitto(root / "mq", extra_conf="sys_interval 1") as broker,
            InfluxDB1(root / "influx") as influxd,
        ):
            store = Queryable(influxd, "backlog")
            ingest = IngestProcess(
                root / "ingest",
                {
                    "TAZA_MQTT_URL": broker.url,
                    "TAZA_MQTT_TOPIC": "taza/v1/almaty/ecobox/+/fill",
                    "TAZA_INFLUX_URL": influxd.url,
                    "TAZA_INFLUX_DB": store.db,
                    "TAZA_STATS_INTERVAL_S": "0",
                    # 4 C publishers = 4 topics = 4 "devices" (see compare.py's run_taza)
                    "TAZA_RATE_LIMIT_PER_S": "0",
                },
                free_port(),
            ).start()
            ingest.stop()  # the session and its subscription stay with the broker
            say(f"queueing {len(payloads):,} messages while taza-ingest is down ...")
            base = broker_received(broker)
            pubs = Publishers(broker, "bkl", payloads)
            t0 = time.monotonic()
            threading.Thread(target=pubs.feed, daemon=True).start()
            while broker_received(broker) - base < len(payloads):
                if time.monotonic() - t0 > 300:
                    raise SystemExit("the broker did not receive the backlog within 300 s")
                time.sleep(1)
            queue_s = time.monotonic() - t0
            pubs.close()
            say(f"queued in {queue_s:.1f} s; starting taza-ingest ...")
            start = time.monotonic()
            broker_cpu = proc_cpu(broker.pid)
            ingest.start(wait_ready=False)
            assert ingest.proc is not None
            pid = ingest.proc.pid
            samples: list[tuple[float, int]] = []
            while True:
                time.sleep(0.5)
                samples.append((time.monotonic() - start, rss(pid)))
                # influxd's own counter first: a count over up to 1M points costs it ≈ 0.2 s
                # of CPU each time, taken from the drain it measures (compare.py's Queryable)
                stored = store.accepted()
                if stored >= len(payloads) and (stored := store.count()) >= len(payloads):
                    break
                if time.monotonic() - start > 600:
                    raise SystemExit(f"drained only {stored} in 600 s:\n{ingest.log_tail()}")
            drain_s = time.monotonic() - start
            cpu = proc_cpu(pid)
            broker_cpu = proc_cpu(broker.pid) - broker_cpu
            hwm = proc_hwm(pid)
            ingest.stop()

    result = {
        "messages": len(payloads),
        "queue_seconds": round(queue_s, 1),
        "drain_seconds": round(drain_s, 1),
        "drain_msgs_per_s": round(len(payloads) / drain_s),
        "service_cpu_us_per_msg": round(cpu / len(payloads) * 1e6, 1),
        "broker_cpu_us_per_msg": round(broker_cpu / len(payloads) * 1e6, 1),
        "peak_rss_mib": round(hwm / 2**20, 1),
        "rss_mib_over_time": [(round(t, 1), round(r / 2**20, 1)) for t, r in samples[::4]],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{len(payloads):,} queued at the broker in {queue_s:.0f} s; drained by taza-ingest in "
        f"{drain_s:.1f} s ({result['drain_msgs_per_s']:,} msg/s from process start, "
        f"{result['service_cpu_us_per_msg']} µs CPU/msg, broker "
        f"{result['broker_cpu_us_per_msg']} µs/msg); peak RSS {result['peak_rss_mib']} MiB"
    )
    print("RSS MiB every 2 s:", " ".join(f"{r:.0f}" for _, r in result["rss_mib_over_time"]))  # type: ignore[misc]


if __name__ == "__main__":
    main()
