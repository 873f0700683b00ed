"""MQTT 5 clients over TLS that record what the broker answered: for the production-profile
tests (tests/test_broker_profile.py) and the demo's security check (devstack/demo/security.py).
"""

from __future__ import annotations

import itertools
import queue
import ssl
import threading
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devstack.ingest_process import wait_until
from devstack.servers import Mosquitto

NOT_AUTHORIZED = 0x87
NO_SUBSCRIBERS = 0x10  # PUBACK: accepted, nobody subscribed (reported as 0 below)
REFUSED = (
    0x87  # CONNACK: mosquitto 2.0.11 says "not authorized" for a missing or wrong password alike
)
_ids = itertools.count(1)


class Client:
    """A paho MQTT 5 client over TLS that records CONNACK, PUBACK codes and messages."""

    def __init__(
        self,
        broker: Mosquitto,
        user: str | None,
        password: str | None,
        *,
        ca: Path | None = None,
        port: int | None = None,
        cert: Path | None = None,
    ) -> None:
        """``cert``: a client certificate, ``cert.crt`` + ``cert.key`` (mutual TLS)."""
        self.c = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"t-{user}-{next(_ids)}", protocol=paho.MQTTv5
        )
        ctx = ssl.create_default_context(cafile=str(ca or broker.ca_file))
        if cert is not None:
            ctx.load_cert_chain(cert.with_suffix(".crt"), cert.with_suffix(".key"))
        self.c.tls_set_context(ctx)
        self.port = broker.port if port is None else port
        if user is not None:
            self.c.username_pw_set(user, password)
        self.connack: queue.Queue[int] = queue.Queue()
        self.pubacks: dict[int, int] = {}
        self.subacks: queue.Queue[list[int]] = queue.Queue()
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.disconnected = threading.Event()
        self.c.on_connect = lambda c, u, f, rc, p: self.connack.put(rc.value)
        self.c.on_publish = lambda c, u, mid, rc, p: self.pubacks.__setitem__(mid, rc.value)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put([r.value for r in rcs])
        self.c.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload), m.retain))
        self.c.on_disconnect = lambda c, u, f, rc, p: self.disconnected.set()
        self.broker = broker

    def connect(self) -> int:
        """The CONNACK reason code (0: accepted)."""
        self.c.connect(self.broker.host, self.port, keepalive=30)
        self.c.loop_start()
        code = self.connack.get(timeout=10)
        if code != 0:
            self.c.loop_stop()
        return code

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> int:
        """QoS 1; the PUBACK reason code (0 accepted, 0x87 not authorised)."""
        info = self.c.publish(topic, payload, qos=1, retain=retain)
        wait_until(lambda: info.mid in self.pubacks, 10, f"PUBACK for {topic}")
        code = self.pubacks[info.mid]
        return 0 if code == NO_SUBSCRIBERS else code

    def subscribe(self, *filters: str) -> list[int]:
        self.c.subscribe([(f, 1) for f in filters])
        return self.subacks.get(timeout=10)

    def received(self, quiet_s: float = 0.5) -> list[tuple[str, bytes, bool]]:
        out = []
        while True:
            try:
                out.append(self.messages.get(timeout=quiet_s))
            except queue.Empty:
                return out

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def loop_until_lost(client: paho.Client, host: str, port: int) -> None:
    client.connect(host, port, keepalive=5)
    for _ in range(50):  # CONNECT goes out, the TLS listener answers with a TLS alert
        if client.loop(timeout=0.1) != paho.MQTT_ERR_SUCCESS:
            raise ConnectionError("connection lost")
