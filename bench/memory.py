"""Peak memory of a real ``taza-ingest`` against the number of distinct devices it hears from.

Starts its own mosquitto and VictoriaMetrics (loopback, temporary directories; the v2 writer,
so InfluxDB 1.x's 100,000 ``max-values-per-tag`` does not refuse the large fleet) and runs two
fresh ``taza-ingest`` processes one after the other, each fed the same number of messages:

1. baseline: ``--baseline-devices`` devices (default 1,000), many messages each;
2. fleet: ``--devices`` distinct device ids (default 100,000), ``--per-device`` messages each
   (a ``fill`` and a ``status``, so two topics per device).

For each it samples the service's resident set from /proc while the messages flow and reports
the peak (VmHWM) once every message is acknowledged, then the ratio fleet / baseline: what the
intake keeps per device (topic and tag caches) is all that differs between the two.

    .venv/bin/python bench/memory.py [--devices 100000] [--per-device 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

from devstack.ingest_process import IngestProcess, http_get
from devstack.metrics import series
from devstack.servers import Mosquitto, VictoriaMetrics, free_port


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a live process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> tuple[int, int]:
    """(current, peak) resident set of a live process, KiB."""
    now = peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            now = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1])
    return now, peak


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (128 if n else 0))
        if not n:
            return bytes(out)


def publish(
    host: str, port: int, client_id: str, msgs: list[tuple[str, bytes]], timeout: float
) -> None:
    """QoS 1 PUBLISHes written straight to a socket (MQTT 3.1.1), then every PUBACK awaited.

    paho-mqtt publishes about 5-10k msg/s here; this goes as fast as the broker reads, so the
    run's length is the service's. Packet ids repeat after 65,535: fine for QoS 1, which the
    broker acknowledges without keeping ids.
    """
    sock = socket.create_connection((host, port), timeout=timeout)
    cid = client_id.encode()
    connect = b"\x00\x04MQTT\x04\x02\x00\x00" + struct.pack("!H", len(cid)) + cid
    sock.sendall(b"\x10" + _varint(len(connect)) + connect)
    if sock.recv(4) != b"\x20\x02\x00\x00":
        raise SystemExit("the broker refused the publisher's CONNECT")
    received = 0

    def count_pubacks() -> None:  # nothing but 4-byte PUBACKs comes back
        nonlocal received
        while received < 4 * len(msgs):
            chunk = sock.recv(1 << 16)
            if not chunk:
                return
            received += len(chunk)

    reader = threading.Thread(target=count_pubacks, daemon=True)
    reader.start()
    buf = bytearray()
    for i, (topic, payload) in enumerate(msgs):
        t = topic.encode()
        body = struct.pack("!H", len(t)) + t + struct.pack("!H", i % 65535 + 1) + payload
        buf += b"\x32" + _varint(len(body)) + body
        if len(buf) > 1 << 16:
            sock.sendall(buf)
            buf.clear()
    sock.sendall(buf)
    reader.join(timeout)
    if received < 4 * len(msgs):
        raise SystemExit(f"only {received // 4} of {len(msgs)} PUBACKs within {timeout} s")
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()


def acked(ingest: IngestProcess) -> float:
    """PUBACKs the service has sent; 0 while it is too busy to answer /metrics in time."""
    status, text = http_get(ingest.url + "/metrics", timeout=10)
    return series(text).get("taza_messages_acked_total", 0) if status == 200 else 0


def messages(devices: int, total: int, prefix: str) -> list[tuple[str, bytes]]:
    """``total`` valid messages from ``devices`` eco-boxes: fill and status in turn."""
    now_ms = int(time.time() * 1000)
    out = []
    for i in range(total):
        d = i % devices
        seq = i // devices
        topic = f"taza/v1/almaty/ecobox/{prefix}-{d:06d}/"
        ts = now_ms - 60_000 + (i % 50_000)
        if seq % 2 == 0:
            doc: dict[str, object] = {"ts": ts, "seq": seq, "fill_pct": (d * 7 + seq) % 100}
            out.append((topic + "fill", orjson.dumps(doc)))
        else:
            doc = {"ts": ts, "seq": seq, "battery_v": 3.6, "rssi_dbm": -80, "faults": []}
            out.append((topic + "status", orjson.dumps(doc)))
    return out


def phase(
    root: Path,
    broker: Mosquitto,
    victoria: VictoriaMetrics,
    name: str,
    msgs: list[tuple[str, bytes]],
    timeout: float,
) -> dict[str, float]:
    """One fresh service fed ``msgs``; its peak RSS once every message is acknowledged."""
    ingest = IngestProcess(
        root / f"ingest-{name}",
        {
            "TAZA_MQTT_URL": broker.url,
            "TAZA_MQTT_CLIENT_ID": f"taza-mem-{name}",
            "TAZA_INFLUX_API": "v2",
            "TAZA_INFLUX_URL": victoria.url,
            "TAZA_INFLUX_BUCKET": "taza",
            "TAZA_INFLUX_ORG": "taza",
            "TAZA_INFLUX_TOKEN": "unused",
            "TAZA_STATS_INTERVAL_S": "0",
        },
        free_port(),
    ).start()
    assert ingest.proc is not None
    pid = ingest.proc.pid
    idle_kib = rss_kib(pid)[0]
    cpu0 = cpu_s(pid)
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(rss_kib(pid)[0])
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.monotonic()
    try:
        publish(broker.host, broker.port, f"mem-pub-{name}", msgs, timeout)
        deadline = start + timeout
        while acked(ingest) < len(msgs):
            if time.monotonic() > deadline:
                raise SystemExit(f"{name}: not every message acknowledged within {timeout} s")
            time.sleep(0.2)
        elapsed = time.monotonic() - start
        m = ingest.metrics()
        _, peak_kib = rss_kib(pid)
        cpu = cpu_s(pid) - cpu0
    finally:
        stop.set()
        sampler.join()
        code = ingest.stop()
    accepted = m.get("taza_messages_accepted_total", 0)
    if accepted != len(msgs) or code != 0:
        raise SystemExit(
            f"{name}: {accepted:.0f} of {len(msgs)} accepted, exit {code}:\n{ingest.log_tail()}"
        )
    return {
        "messages": len(msgs),
        "seconds": round(elapsed, 1),
        "service_cpu_us_per_msg": round(cpu / len(msgs) * 1e6, 1),
        "idle_rss_mib": round(idle_kib / 1024, 1),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "max_sampled_rss_mib": round(max(samples, default=0) / 1024, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--devices", type=int, default=100_000, help="distinct devices, fleet phase")
    ap.add_argument("--per-device", type=int, default=2, help="messages per device, fleet phase")
    ap.add_argument("--baseline-devices", type=int, default=1000, help="devices, baseline phase")
    ap.add_argument("--timeout", type=float, default=120, help="seconds allowed per phase")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    total = args.devices * args.per_device
    with tempfile.TemporaryDirectory(prefix="taza-bench-mem-") as tmp:
        root = Path(tmp)
        with Mosquitto(root / "mq") as broker, VictoriaMetrics(root / "vm") as victoria:
            results = {}
            for name, n in (("baseline", args.baseline_devices), ("fleet", args.devices)):
                print(f"{name}: {total} messages from {n} devices ...", file=sys.stderr)
                results[name] = {"devices": n, **phase(
                    root, broker, victoria, name, messages(n, total, name[:4]), args.timeout
                )}  # fmt: skip
                print(f"  {results[name]}", file=sys.stderr)
    ratio = results["fleet"]["peak_rss_mib"] / results["baseline"]["peak_rss_mib"]
    report = {**results, "peak_rss_ratio_fleet_vs_baseline": round(ratio, 2)}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for name, r in results.items():
        print(
            f"{name:<9} {r['devices']:>7,} devices, {r['messages']:,} messages in "
            f"{r['seconds']} s, {r['service_cpu_us_per_msg']} µs CPU/msg: peak RSS "
            f"{r['peak_rss_mib']} MiB (idle {r['idle_rss_mib']} MiB)"
        )
    print(f"peak RSS ratio fleet / baseline: {ratio:.2f}")


if __name__ == "__main__":
    main()
