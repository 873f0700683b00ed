"""The two bridges bench/compare.py sets taza against, as their users would write them.

    python bench/bridges.py naive|tuned-qos0 BROKER_HOST BROKER_PORT INFLUX_URL DB

- naive: paho (QoS 1, automatic PUBACK on receipt) → ``json.loads`` → influxdb-client
  ``Point`` → one HTTP write per message (InfluxDB 1.x has no /api/v2/write, so the line
  goes to /write; the cost users pay is the Point and the request per message);
- tuned-qos0: paho at QoS 0 → orjson → f-string line → 5000-line batches (or 200 ms)
  written by a second thread. No validation, nothing retried, nothing spooled.

Prints ``subscribed`` once the broker has granted the subscription.
"""

from __future__ import annotations

import http.client
import json
import queue
import sys
import threading
import time
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
import paho.mqtt.client as paho
from influxdb_client import Point, WritePrecision
from paho.mqtt.enums import CallbackAPIVersion

FILTER = "taza/v1/almaty/ecobox/+/fill"


def ts_ms(ts: Any) -> int:
    """The payload's ``ts``: epoch ms, or RFC 3339 (the firmware styles taza-sim models)."""
    if isinstance(ts, str):
        return int(datetime.fromisoformat(ts).timestamp() * 1000)
    return int(ts)


def connection(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 8086)


def post(conn: http.client.HTTPConnection, db: str, body: bytes) -> None:
    conn.request("POST", f"/write?db={db}&precision=ms", body)
    resp = conn.getresponse()
    resp.read()
    if resp.status >= 300:
        print(f"write answered {resp.status}", file=sys.stderr)


def naive(client: paho.Client, url: str, db: str) -> None:
    conn = connection(url)

    def on_message(c: paho.Client, u: Any, msg: paho.MQTTMessage) -> None:
        data = json.loads(msg.payload)
        point = (
            Point("fill")
            .tag("device_id", msg.topic.split("/")[4])
            .field("fill_pct", float(data["fill_pct"]))
            .field("seq", int(data["seq"]))
            .time(ts_ms(data["ts"]), WritePrecision.MS)
        )
        post(conn, db, point.to_line_protocol().encode())

    client.on_message = on_message
    subscribe(client, 1)


def tuned(client: paho.Client, url: str, db: str) -> None:
    conn = connection(url)
    batches: queue.Queue[list[str]] = queue.Queue(maxsize=4)
    lines: list[str] = []
    lock = threading.Lock()

    def on_message(c: paho.Client, u: Any, msg: paho.MQTTMessage) -> None:
        d = orjson.loads(msg.payload)
        device = msg.topic.split("/")[4]
        line = f"fill,device_id={device} fill_pct={d['fill_pct']},seq={d['seq']}i {ts_ms(d['ts'])}"
        with lock:
            lines.append(line)
            if len(lines) >= 5000:
                batches.put(lines[:])
                lines.clear()

    def writer() -> None:
        while True:
            try:
                batch = batches.get(timeout=0.2)
            except queue.Empty:
                with lock:
                    batch = lines[:]
                    lines.clear()
                if not batch:
                    continue
            post(conn, db, "\n".join(batch).encode())

    threading.Thread(target=writer, daemon=True).start()
    client.on_message = on_message
    subscribe(client, 0)


def subscribe(client: paho.Client, qos: int) -> None:
    def on_connect(c: paho.Client, *a: Any) -> None:
        c.subscribe(FILTER, qos)

    def on_subscribe(*a: Any) -> None:
        print("subscribed", flush=True)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe


def main() -> None:
    kind, host, port, url, db = sys.argv[1:6]
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bridge-{kind}-{time.time()}")
    client.max_inflight_messages_set(1000)
    {"naive": naive, "tuned-qos0": tuned}[kind](client, url, db)
    client.connect(host, int(port))
    client.loop_forever()


if __name__ == "__main__":
    main()
