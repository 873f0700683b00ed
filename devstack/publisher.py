"""A real MQTT publisher for tests and bench/, and the valid fill messages they publish.

A paho-mqtt QoS 1 client that survives broker restarts and knows which messages the broker
acknowledged (PUBACK), so a test can say exactly what taza owes the database.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devices import format_topic
from devices.message import Kind
from devices.registry import DeviceInfo
from devstack.ingest_process import wait_until
from simulator.stream import PUBLISH, FaultConfig, Models, StreamStats, device_stream

__all__ = ["FLEET_ID", "Publisher", "fill_messages", "fill_payload", "fleet_fill_payloads"]

FLEET_ID = "dev"
"""The device-id prefix in :func:`fleet_fill_payloads`' payloads: ``dev-00042``."""
SITES = ("residential", "commercial", "park", "transit")


def fill_payload(seq: int, ts_ms: int, fill_pct: float) -> bytes:
    return json.dumps({"ts": ts_ms, "seq": seq, "fill_pct": fill_pct}).encode()


def fill_messages(
    devices: int,
    per_device: int,
    *,
    region: str = "almaty",
    prefix: str = "eb",
    ts0_ms: int | None = None,
) -> list[tuple[str, bytes, tuple[str, int, float]]]:
    """Valid ecobox/fill messages: (topic, payload, (device_id, ts_ms, fill_pct)), interleaved."""
    base = ts0_ms if ts0_ms is not None else int(time.time() * 1000) - 3_600_000
    out = []
    for seq in range(per_device):
        for d in range(devices):
            device_id = f"{prefix}-{d:05d}"
            ts = base + seq * 1000 + d
            pct = round((seq * 7 + d * 13) % 1000 / 10, 1)
            out.append(
                (
                    format_topic(region, "ecobox", device_id, "fill"),
                    fill_payload(seq, ts, pct),
                    (device_id, ts, pct),
                )
            )
    return out


def fleet_fill_payloads(
    devices: int, per_device: int, *, interval_s: int = 900, seed: int = 7
) -> list[bytes]:
    """A fleet's store-and-forward backlog as it drains: ``devices`` eco-boxes (taza-sim's
    calibrated model, its site mix, no faults) each uploading its last ``per_device`` fill
    readings, taken reading by reading across the fleet (message ``i`` is device
    ``i % devices``'s, in its own order), up to a minute ago.

    Device ``d`` is ``dev-{d:05d}`` in its payloads (``device_id``); a caller publishing for
    another id rewrites that prefix (:data:`FLEET_ID`) and uses the same one in the topic."""
    end = time.time() - 60
    start = end - (per_device + 8) * interval_s  # a few spare: reports are jittered
    models = Models()
    per: list[list[bytes]] = []
    for d in range(devices):
        info = DeviceInfo(f"{FLEET_ID}-{d:05d}", Kind.ECOBOX, "almaty", 43.25, 76.9, 240.0,
                          "plastic", SITES[d % len(SITES)], interval_s)  # fmt: skip
        stream = device_stream(info, seed=seed, start=start, end=end, faults=FaultConfig(),
                               models=models, stats=StreamStats())  # fmt: skip
        got = [o.payload for o in stream if o.action == PUBLISH and o.channel == "fill"]
        if len(got) < per_device:
            raise ValueError(f"{info.device_id}: {len(got)} readings, {per_device} asked")
        per.append(got[-per_device:])
    return [per[d][k] for k in range(per_device) for d in range(devices)]


class Publisher:
    """A QoS 1 publisher that survives broker restarts and knows which messages were PUBACKed."""

    def __init__(self, host: str, port: int, client_id: str, inflight: int = 1000) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
        )
        self.client.max_inflight_messages_set(inflight)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.1, 1)  # type: ignore[arg-type]  # floats work
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self._connected = threading.Event()
        self.client.on_connect = lambda *a: self._connected.set()
        self.client.connect(host, port, keepalive=10, clean_start=False, properties=props)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise AssertionError("publisher could not connect")
        self.infos: list[paho.MQTTMessageInfo] = []

    def publish(
        self, messages: Iterable[tuple[str, bytes]], rate: float | None = None, window: int = 5000
    ) -> None:
        """Queue messages, at most ``window`` unacknowledged at a time: paho rescans its
        whole outgoing queue on every PUBACK, so an unbounded queue costs O(n^2)."""
        start = time.monotonic()
        for i, (topic, payload) in enumerate(messages):
            self.infos.append(self.client.publish(topic, payload, qos=1))
            if i % 100 == 0:
                if rate:
                    ahead = i / rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
                while self._prune() > window:
                    time.sleep(0.005)

    def _prune(self) -> int:
        # is_published() raises for messages queued while disconnected, which paho still
        # sends after the reconnect; the flag itself is set on their PUBACK.
        self.infos = [i for i in self.infos if not i._published]
        return len(self.infos)

    def wait_all_acked(self, timeout: float = 60) -> None:
        wait_until(lambda: self._prune() == 0, timeout, "PUBACK of every message")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
