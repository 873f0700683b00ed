"""A paho subscriber that is subscribed when ``start`` returns: the demo's feeds build on it
(:class:`~devstack.demo.crew.AlertFeed`, :class:`~devstack.demo.firmware.FeedbackFeed`)."""

from __future__ import annotations

import threading
from typing import Self

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


def client(client_id: str) -> paho.Client:
    return paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311)


class Subscriber:
    """Subscribes to ``topic`` at ``qos`` on every connect; subclasses handle the messages."""

    def __init__(self, host: str, port: int, client_id: str, topic: str, qos: int) -> None:
        self.host = host
        self.port = port
        self.topic = topic
        self.qos = qos
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = client(client_id)
        self._client.on_connect = lambda c, *_: c.subscribe(self.topic, qos=self.qos)
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._client.on_message = self._on_message

    def start(self, timeout: float = 10.0) -> Self:
        """Connected and subscribed (SUBACK seen), so nothing published after this is missed."""
        self._client.connect(self.host, self.port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise OSError(f"no SUBACK for {self.topic} from mqtt://{self.host}:{self.port}")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        raise NotImplementedError
