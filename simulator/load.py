"""``taza-sim load``: valid messages from many virtual devices over a few connections, fast.

For benchmarks, not realism: paho-mqtt clients (each with its network thread) carry N virtual
devices; the main thread paces publishing with a token bucket (``--rate``, or as fast as the
in-flight window allows with ``--rate 0``) and reports the achieved rate once a second.
"Achieved" counts acknowledged messages (PUBACK for QoS 1). Every payload is valid per the
contract (fill 80 %, status 15 %, deposit 5 %, timestamps = now), so ingest must store all of
them; ``--log`` writes the same ground-truth log as ``taza-sim run`` for ``taza-sim verify``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devices import BrokerURL, Kind, format_topic
from simulator.device import tls_context
from simulator.groundtruth import LogWriter
from simulator.stream import PUBLISH, Outgoing


@dataclass(slots=True)
class LoadConfig:
    broker: BrokerURL
    rate: float  # messages/s; 0 = as fast as possible
    devices: int = 1000
    connections: int = 4
    duration_s: float | None = 10.0
    count: int | None = None
    qos: int = 1
    region: str = "almaty"
    client_prefix: str = "taza-load"
    window: int = 2000  # unacknowledged messages per connection
    log_path: Path | None = None
    drain_timeout_s: float = 30.0


@dataclass(slots=True)
class _Conn:
    client: Any
    index: int
    sent: int = 0
    acked: int = 0
    pending: dict[int, Outgoing] = field(default_factory=dict)
    early: set[int] = field(default_factory=set)  # acked before the main thread noted the mid
    lock: threading.Lock = field(default_factory=threading.Lock)
    connected: threading.Event = field(default_factory=threading.Event)


class _Devices:
    """Virtual devices: 90 % eco-boxes, 10 % RVMs; each with its own seq."""

    def __init__(self, n: int, region: str) -> None:
        self.ids: list[str] = []
        self.kinds: list[Kind] = []
        for i in range(n):
            rvm = i % 10 == 9
            self.ids.append(f"ld-{'rvm' if rvm else 'eb'}-{i:06d}")
            self.kinds.append(Kind.RVM if rvm else Kind.ECOBOX)
        self.region = region
        self.seq = [0] * n

    def message(self, i: int, counter: int) -> tuple[str, bytes, int, int]:
        device_id, kind = self.ids[i], self.kinds[i]
        seq = self.seq[i]
        self.seq[i] = (seq + 1) % 2**32
        ts = time.time_ns() // 1_000_000
        if kind == "rvm":
            if counter % 3 == 0:
                payload = (
                    f'{{"ts":{ts},"seq":{seq},"txn_id":"{ts:x}-{seq}","items":['
                    f'{{"material":"pet","count":{1 + counter % 7},"volume_ml":500}},'
                    f'{{"material":"alu","count":{1 + counter % 5},"volume_ml":330}}],'
                    f'"rejected":{counter % 2},"refund_minor":{200 * (2 + counter % 12)},'
                    f'"currency":"KZT"}}'
                )
                return (
                    format_topic(self.region, kind, device_id, "deposit"),
                    payload.encode(),
                    seq,
                    ts,
                )
            payload = (
                f'{{"ts":{ts},"seq":{seq},"rssi_dbm":-71.0,"temperature_c":21.5,'
                f'"uptime_s":{counter},"faults":[],"bins":{{"alu":{counter % 100}.5,'
                f'"pet":{(counter * 7) % 100}.0}},"mode":"ok","firmware":"load-1"}}'
            )
            return format_topic(self.region, kind, device_id, "status"), payload.encode(), seq, ts
        if counter % 6 == 5:
            payload = (
                f'{{"ts":{ts},"seq":{seq},"battery_v":3.55,"battery_pct":{counter % 100}.0,'
                f'"rssi_dbm":-93.0,"temperature_c":12.5,"uptime_s":{counter},"faults":[],'
                f'"firmware":"load-1"}}'
            )
            return format_topic(self.region, kind, device_id, "status"), payload.encode(), seq, ts
        fill = (counter * 37) % 1000 / 10
        payload = (
            f'{{"ts":{ts},"seq":{seq},"fill_pct":{fill},"distance_mm":{1200 - fill * 10:.1f},'
            f'"temperature_c":14.5,"tilt_deg":1.5}}'
        )
        return format_topic(self.region, kind, device_id, "fill"), payload.encode(), seq, ts


def run_load(cfg: LoadConfig, report: Callable[[dict[str, object]], None]) -> dict[str, object]:
    """Publish; call ``report`` once a second; return the summary."""
    devices = _Devices(cfg.devices, cfg.region)
    log = LogWriter(cfg.log_path) if cfg.log_path else None
    log_lock = threading.Lock()
    conns: list[_Conn] = []
    for index in range(max(1, cfg.connections)):
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"{cfg.client_prefix}-{index}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.max_inflight_messages_set(cfg.window)
        client.max_queued_messages_set(0)
        if cfg.broker.username:
            client.username_pw_set(cfg.broker.username, cfg.broker.password)
        context = tls_context(cfg.broker)
        if context is not None:
            client.tls_set_context(context)
        conn = _Conn(client, index)

        # paho calls on_publish holding its own message lock: never hold conn.lock while
        # calling into paho, or the two threads deadlock.
        def on_publish(_c: Any, _u: Any, mid: int, _rc: Any, _p: Any, conn: _Conn = conn) -> None:
            conn.acked += 1
            if log is None:
                return
            with conn.lock:
                out = conn.pending.pop(mid, None)
                if out is None:
                    conn.early.add(mid)
                    return
            with log_lock:
                log.write(out, time.time(), qos=cfg.qos)

        def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any, conn: _Conn = conn) -> None:
            if not rc.is_failure:
                conn.connected.set()

        client.on_publish = on_publish
        client.on_connect = on_connect
        client.connect(cfg.broker.host, cfg.broker.port, keepalive=60)
        client.loop_start()
        conns.append(conn)
    for conn in conns:
        if not conn.connected.wait(10.0):
            for c in conns:
                c.client.loop_stop()
            raise ConnectionError(f"connection {conn.index} to {cfg.broker} not accepted in 10 s")

    n_conn = len(conns)
    started = time.monotonic()
    end = started + cfg.duration_s if cfg.duration_s else float("inf")
    limit = cfg.count if cfg.count is not None else float("inf")
    sent = 0
    errors = 0
    per_second: list[int] = []
    next_report = started + 1.0
    last_acked = 0
    try:
        while sent < limit:
            now = time.monotonic()
            if now >= end:
                break
            if now >= next_report:
                acked = sum(c.acked for c in conns)
                per_second.append(acked - last_acked)
                report(
                    {
                        "second": len(per_second),
                        "sent": sent,
                        "acked": acked,
                        "rate": acked - last_acked,
                    }
                )
                last_acked = acked
                next_report += 1.0
            due = int(cfg.rate * (now - started)) - sent if cfg.rate > 0 else 256
            if due <= 0:
                time.sleep(min(0.002, max(0.0, next_report - now)))
                continue
            progressed = 0
            for _ in range(min(due, 256)):
                if sent >= limit:
                    break
                i = sent % cfg.devices
                conn = conns[i % n_conn]
                if conn.sent - conn.acked >= cfg.window:
                    break
                topic, payload, seq, ts = devices.message(i, sent)
                info = conn.client.publish(topic, payload, qos=cfg.qos)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    errors += 1
                    break
                if log is not None:
                    out = Outgoing(
                        0.0,
                        devices.ids[i],
                        PUBLISH,
                        topic,
                        payload,
                        False,
                        topic.rsplit("/", 1)[1],
                        None,
                        "accept",
                        None,
                        seq,
                        ts,
                    )
                    with conn.lock:
                        acked_already = info.mid in conn.early
                        if acked_already:
                            conn.early.discard(info.mid)
                        else:
                            conn.pending[info.mid] = out
                    if acked_already:
                        with log_lock:
                            log.write(out, time.time(), qos=cfg.qos)
                conn.sent += 1
                sent += 1
                progressed += 1
            if progressed == 0:
                time.sleep(0.0005)
        publishing_s = time.monotonic() - started
        drain_end = time.monotonic() + cfg.drain_timeout_s
        while sum(c.acked for c in conns) < sent and time.monotonic() < drain_end:
            time.sleep(0.01)
    finally:
        for conn in conns:
            conn.client.disconnect()
            conn.client.loop_stop()
        if log is not None:
            log.close()
    elapsed = time.monotonic() - started
    acked = sum(c.acked for c in conns)
    return {
        "broker": str(cfg.broker),
        "target_rate": cfg.rate,
        "devices": cfg.devices,
        "connections": n_conn,
        "qos": cfg.qos,
        "sent": sent,
        "acked": acked,
        "unacked": sent - acked,
        "errors": errors,
        "publish_seconds": round(publishing_s, 3),
        "seconds": round(elapsed, 3),
        "achieved_rate": round(acked / elapsed, 1) if elapsed > 0 else 0.0,
        "publish_rate": round(sent / publishing_s, 1) if publishing_s > 0 else 0.0,
        "per_second": per_second,
        "log": str(cfg.log_path) if cfg.log_path else None,
    }


def dumps(summary: dict[str, object]) -> str:
    return orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode()
