"""What the broker retains under ``taza/v1/alerts/#`` now: read once at start (and after a
reconnect) so the stage can clear retained alerts that are no longer firing.

The broker sends retained messages right after the SUBACK, so we collect until it has been
quiet for ``quiet_s`` (bounded by ``timeout_s``). A short-lived client of its own (paho, in a
thread): the intake's client only publishes for the stage.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devices.broker import BrokerURL
from ingest.fleet.output import ALERT_FILTER
from ingest.tls import client_context


class RetainedReadError(Exception):
    """The broker could not be read (the caller republishes what fires and clears nothing)."""


def read_retained(
    broker: BrokerURL,
    client_id: str,
    *,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    quiet_s: float = 0.5,
    timeout_s: float = 10.0,
) -> dict[str, bytes]:
    """{topic: payload} of the non-empty retained messages under ``taza/v1/alerts/#``."""
    found: dict[str, bytes] = {}
    subscribed = threading.Event()
    last = [time.monotonic()]
    lock = threading.Lock()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        client.tls_set_context(client_context(ca_file, cert_file, key_file))

    def on_connect(c: paho.Client, u: Any, flags: Any, rc: Any, props: Any) -> None:
        if not rc.is_failure:
            c.subscribe(ALERT_FILTER, qos=1)

    def on_subscribe(c: paho.Client, u: Any, mid: int, rcs: Any, props: Any) -> None:
        with lock:
            last[0] = time.monotonic()
        subscribed.set()

    def on_message(c: paho.Client, u: Any, msg: paho.MQTTMessage) -> None:
        with lock:
            last[0] = time.monotonic()
            if msg.retain and msg.payload:
                found[msg.topic] = bytes(msg.payload)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    deadline = time.monotonic() + timeout_s
    try:
        client.connect(broker.host, broker.port, keepalive=30)
    except OSError as exc:
        raise RetainedReadError(f"cannot connect to {broker}: {exc}") from None
    client.loop_start()
    try:
        if not subscribed.wait(max(0.0, deadline - time.monotonic())):
            raise RetainedReadError(f"no SUBACK from {broker} within {timeout_s:g}s")
        while time.monotonic() < deadline:
            with lock:
                quiet = time.monotonic() - last[0]
            if quiet >= quiet_s:
                break
            time.sleep(min(0.05, quiet_s))
        with lock:
            return dict(found)
    finally:
        client.disconnect()
        client.loop_stop()
