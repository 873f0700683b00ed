"""Steady-state cost of taza-ingest: CPU (% of one core) and RSS while idle and at fixed
rates — by default 110 msg/s (10k devices, one fill reading every ~90 s) and 1,100 msg/s —
from a fleet of 10k distinct device ids, so figures read "per 10k devices".

    .venv/bin/python bench/steady.py [--devices 10000] [--seconds 20] [--rates 110,1100] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from compare import Queryable, proc_cpu, proc_hwm

from devstack.ingest_process import IngestProcess
from devstack.publisher import Publisher, fill_messages
from devstack.servers import InfluxDB1, Mosquitto, free_port


def window(pid: int, seconds: float) -> float:
    """% of one core the process used over ``seconds``."""
    c0, t0 = proc_cpu(pid), time.monotonic()
    time.sleep(seconds)
    return (proc_cpu(pid) - c0) / (time.monotonic() - t0) * 100


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rates", default="110,1100")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    result: dict[str, object] = {"devices": args.devices, "seconds": args.seconds}

    with tempfile.TemporaryDirectory(prefix="taza-steady-") as tmp:
        root = Path(tmp)
        with Mosquitto(root / "mq") as broker, InfluxDB1(root / "influx") as influxd:
            store = Queryable(influxd, "steady")
            ingest = IngestProcess(
                root / "ingest",
                {
                    "TAZA_MQTT_URL": broker.url,
                    "TAZA_INFLUX_URL": influxd.url,
                    "TAZA_INFLUX_DB": store.db,
                },
                free_port(),
            ).start()
            assert ingest.proc is not None
            pid = ingest.proc.pid
            time.sleep(2)
            say("idle ...")
            result["idle_cpu_pct"] = round(window(pid, args.seconds), 3)
            pub = Publisher(broker.host, broker.port, "steady-pub")
            for k, rate in enumerate(rates):
                n = int(rate * args.seconds)
                per = max(1, -(-n // args.devices))
                msgs = [(t, p) for t, p, _ in fill_messages(args.devices, per, prefix=f"s{k}")][:n]
                say(f"{rate:g} msg/s for {args.seconds:g} s ...")
                already = store.count()
                c0, t0 = proc_cpu(pid), time.monotonic()
                pub.publish(msgs, rate=rate)
                elapsed = time.monotonic() - t0
                used = proc_cpu(pid) - c0
                store.wait(already + len(msgs), 30)
                result[f"at_{rate:g}"] = {
                    "cpu_pct": round(used / elapsed * 100, 2),
                    "cpu_us_per_msg": round(used / len(msgs) * 1e6, 1),
                    "rss_mib": round(proc_hwm(pid) / 2**20, 1),
                }
            pub.close()
            result["peak_rss_mib"] = round(proc_hwm(pid) / 2**20, 1)
            ingest.stop()

    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"taza-ingest, {args.devices:,} devices, {args.seconds:g} s windows:")
    print(f"  idle: {result['idle_cpu_pct']} % of a core")
    for rate in rates:
        r = result[f"at_{rate:g}"]
        assert isinstance(r, dict)
        print(
            f"  {rate:g} msg/s: {r['cpu_pct']} % of a core ({r['cpu_us_per_msg']} µs/msg), "
            f"peak RSS {r['rss_mib']} MiB"
        )


if __name__ == "__main__":
    main()
