"""The devices' side of the demo: the feedback a firmware engineer reads, and a flooding device.

:class:`FeedbackFeed` subscribes to ``taza/v1/_feedback/+`` during the run (the development
broker has no ACLs; with the production profile each device may read only its own topic, which
the security check shows) so the report can print what one faulty device was told.
:func:`flood` is one device publishing far faster than the rate limit allows (a bounded count),
so the report can show it throttled while every other device's messages are stored.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as paho

from devstack.demo.subscriber import Subscriber, client

FEEDBACK = "taza/v1/_feedback/+"
_PREFIX = "taza/v1/_feedback/"


def feedback_topic(device_id: str) -> str:
    return _PREFIX + device_id


class FeedbackFeed(Subscriber):
    """Every feedback message during the run, by device (QoS 0, so subscribed before the run)."""

    def __init__(self, host: str, port: int, client_id: str = "taza-demo-firmware") -> None:
        super().__init__(host, port, client_id, FEEDBACK, qos=0)
        self.by_device: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        if not msg.topic.startswith(_PREFIX):
            return
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            doc = {"reason": "?", "detail": msg.payload[:200].decode("utf-8", "replace")}
        with self._lock:
            self.by_device[msg.topic.removeprefix(_PREFIX)].append(
                doc if isinstance(doc, dict) else {}
            )

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            return {device: list(docs) for device, docs in self.by_device.items()}


@dataclass
class Flood:
    """What the flooding device did: messages sent and acknowledged by the broker, how long."""

    device_id: str
    topic: str
    count: int
    acked: int = 0
    seconds: float = 0.0
    error: str = ""
    done: threading.Event = field(default_factory=threading.Event)


def flood(host: str, port: int, region: str, device_id: str, count: int) -> Flood:
    """``count`` fill messages (QoS 1, distinct seq and ts, low fill) from ``device_id`` as
    fast as the broker takes them, in a thread; ``done`` is set once all are acknowledged (or
    it failed)."""
    topic = f"taza/v1/{region}/ecobox/{device_id}/fill"
    result = Flood(device_id, topic, count)

    def run() -> None:
        mqtt = client(f"taza-demo-{device_id}")
        mqtt.max_inflight_messages_set(100)
        mqtt.max_queued_messages_set(0)
        try:
            mqtt.connect(host, port, keepalive=30)
            mqtt.loop_start()
            t0 = time.monotonic()
            infos = []
            # One millisecond apart: distinct points (InfluxDB keeps one per series and time).
            start = datetime.now(UTC) - timedelta(milliseconds=count + 1000)
            for seq in range(count):
                ts = (start + timedelta(milliseconds=seq)).isoformat(timespec="milliseconds")
                body = json.dumps({"ts": ts, "seq": seq, "fill_pct": 12.0})
                infos.append(mqtt.publish(topic, body, qos=1))
            for info in infos:
                info.wait_for_publish(30)
                result.acked += info.is_published()
            result.seconds = time.monotonic() - t0
        except (OSError, RuntimeError, ValueError) as exc:
            result.error = str(exc)
        finally:
            mqtt.disconnect()
            mqtt.loop_stop()
            result.done.set()

    threading.Thread(target=run, name="flood", daemon=True).start()
    return result
