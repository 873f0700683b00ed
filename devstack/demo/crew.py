"""The crew's side of the demo: taza-ingest's alerts, read the way a crew app reads them.

A paho-mqtt subscriber on ``taza/v1/alerts/#`` (QoS 1) follows the run live — episodes fired
and resolved per region and alert — and at the end a fresh connection collects the retained
alert topics: exactly what a crew app that connects now is shown (docs/alerts.md, "MQTT for
crews"). Only the topics and payloads the issue names are read, nothing internal.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho

from devstack.demo.subscriber import Subscriber
from devstack.demo.subscriber import client as make_client

ALERTS = "taza/v1/alerts/#"
_PREFIX = ("taza", "v1", "alerts")


@dataclass(frozen=True)
class Alert:
    """One alert message: where it came from and its JSON payload (``{}`` when empty)."""

    region: str
    device_id: str
    alert: str
    payload: dict[str, Any]

    @property
    def state(self) -> str:
        return str(self.payload.get("state", ""))


def parse(topic: str, payload: bytes | bytearray) -> Alert | None:
    """An alert topic and payload, or None for anything else (a payload that is not a JSON
    object counts as empty: the retained topic is cleared)."""
    parts = topic.split("/")
    if len(parts) != 6 or tuple(parts[:3]) != _PREFIX:
        return None
    doc: object = {}
    if payload:
        try:
            doc = json.loads(payload)
        except ValueError:
            doc = {}
    return Alert(parts[3], parts[4], parts[5], doc if isinstance(doc, dict) else {})


class AlertFeed(Subscriber):
    """A live subscriber: what fires and resolves during the run, and what is firing now.

    Episodes are counted once however often their retained message is refreshed (by the
    ``episode`` id); a ``resolved`` message or an empty retained payload ends what is firing.
    """

    def __init__(self, host: str, port: int, client_id: str = "taza-demo-crew") -> None:
        super().__init__(host, port, client_id, ALERTS, qos=1)
        self.fired: Counter[tuple[str, str]] = Counter()  # (region, alert) -> episodes
        self.resolved: Counter[tuple[str, str]] = Counter()
        self.causes: Counter[tuple[str, str]] = Counter()  # (alert, cause) of resolved ones
        self.firing: dict[tuple[str, str, str], Alert] = {}  # (region, device, alert)
        self.messages = 0
        self.last_message = time.monotonic()
        self._episodes: set[str] = set()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        alert = parse(msg.topic, msg.payload)
        if alert is None:
            return
        key = (alert.region, alert.device_id, alert.alert)
        with self._lock:
            self.messages += 1
            self.last_message = time.monotonic()
            if alert.state == "firing":
                self.firing[key] = alert
                episode = str(alert.payload.get("episode", msg.topic))
                if episode not in self._episodes:
                    self._episodes.add(episode)
                    self.fired[alert.region, alert.alert] += 1
            elif alert.state == "resolved":
                self.firing.pop(key, None)
                self.resolved[alert.region, alert.alert] += 1
                self.causes[alert.alert, str(alert.payload.get("cause", "?"))] += 1
            else:
                self.firing.pop(key, None)

    def wait_quiet(self, quiet: float = 1.0, timeout: float = 10.0) -> None:
        """Until no alert has arrived for ``quiet`` seconds: the last batches' alerts are out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                idle = time.monotonic() - self.last_message
            if idle >= quiet:
                return
            time.sleep(min(quiet - idle, 0.2) + 0.01)

    def firing_by_region(self) -> dict[str, Counter[str]]:
        with self._lock:
            return count_by_region(self.firing.values())

    def live_line(self) -> str:
        """One line for the progress table: firing now per region and kind, fired, resolved."""
        with self._lock:
            fired = sum(self.fired.values())
            resolved = sum(self.resolved.values())
            now = count_by_region(self.firing.values())
        regions = " │ ".join(
            f"{region} {kinds_text(kinds, 2, ', ')}" for region, kinds in sorted(now.items())
        )
        return f"  {'alerts':>5}  fired {fired} · resolved {resolved} · firing {regions or 'none'}"


def count_by_region(alerts: Any) -> dict[str, Counter[str]]:
    """{region: Counter(alert kind)} of an iterable of :class:`Alert`."""
    out: dict[str, Counter[str]] = {}
    for a in alerts:
        out.setdefault(a.region, Counter())[a.alert] += 1
    return out


def kinds_text(kinds: Counter[str], most: int | None = None, sep: str = " · ") -> str:
    """``full 3 · full_soon 2 · +1 more``, the most frequent first."""
    ranked = sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ranked if most is None else ranked[:most]
    text = sep.join(f"{kind} {n}" for kind, n in shown)
    if len(ranked) > len(shown):
        text += f"{sep}+{len(ranked) - len(shown)} more"
    return text


def retained_now(
    host: str, port: int, client_id: str = "taza-demo-crew-late", quiet: float = 0.5
) -> list[Alert]:
    """What a crew app connecting now is shown: the retained alert topics, each a firing
    alert. The broker sends them right after the SUBACK; ``quiet`` seconds without one ends."""
    got: list[Alert] = []
    lock = threading.Lock()
    subscribed = threading.Event()
    last = [time.monotonic()]

    def on_message(client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        alert = parse(msg.topic, msg.payload)
        with lock:
            last[0] = time.monotonic()
            if alert is not None and msg.retain and alert.state == "firing":
                got.append(alert)

    def on_subscribe(*_: object) -> None:
        last[0] = time.monotonic()
        subscribed.set()

    client = make_client(client_id)
    client.on_connect = lambda c, *_: c.subscribe(ALERTS, qos=1)
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(host, port, keepalive=30)
    client.loop_start()
    try:
        if not subscribed.wait(10):
            raise OSError(f"no SUBACK for {ALERTS} from mqtt://{host}:{port}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with lock:
                idle = time.monotonic() - last[0]
            if idle >= quiet:
                break
            time.sleep(0.05)
    finally:
        client.disconnect()
        client.loop_stop()
    with lock:
        return list(got)
