"""MQTT intake: paho-mqtt driven by the asyncio loop, with manual PUBACK.

Why paho and not aiomqtt: aiomqtt 2.5 acknowledges a QoS 1 message before the
application sees it, so a crash between PUBACK and the database write loses it. paho
2.x has ``manual_ack=True``: we send PUBACK only after the message is stored.

Flow control is MQTT 5's Receive Maximum: the broker never has more than that many
unacknowledged messages out to us, so our queues are bounded by construction and a slow
database makes the *broker* hold the backlog (in our persistent session).

An acknowledgement belongs to the connection its message arrived on: after a reconnect
the broker redelivers anything unacknowledged, so acks of an older connection are void
and are dropped (``generation``), never sent on the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest.batch import Incoming
from ingest.errors import BrokerRefused
from ingest.lifetime import Lifetime
from ingest.metrics import Metrics
from ingest.tls import client_context

log = structlog.get_logger("ingest.mqtt")

# CONNACK reason codes after which retrying cannot help (MQTT 5, 3.2.2.2).
PERMANENT_REFUSALS = {
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x8C: "bad authentication method",
}


@dataclass(frozen=True, slots=True)
class IntakeOptions:
    """Everything the intake needs, and nothing else (the service builds it from Settings)."""

    host: str
    port: int
    client_id: str
    subscription: str
    broker_name: str = ""  # for logs: the URL with the password hidden
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None  # client certificate for mutual TLS
    key_file: Path | None = None
    session_expiry_s: int = 7 * 86400
    keepalive_s: int = 30
    receive_maximum: int = 20000
    qos0_headroom: int = 10000  # queue room beyond Receive Maximum, which QoS 0 escapes
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    connack_timeout_s: float = 10.0

    @property
    def no_local(self) -> bool:
        """Subscribe with MQTT 5 No Local: taza's own publications (alerts, dead-letter copies)
        never come back to it. Shared subscriptions must not set it (MQTT 5, 3.8.3.1), so a
        ``$share`` replica receives them and ignores them as reserved topics."""
        return not self.subscription.startswith("$share/")


ClientFactory = Callable[[IntakeOptions], paho.Client]


def paho_client(options: IntakeOptions) -> paho.Client:
    """The real client: MQTT 5, manual PUBACK, credentials and TLS from the options."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=options.client_id,
        protocol=paho.MQTTv5,
        manual_ack=True,
    )
    if options.username is not None:
        client.username_pw_set(options.username, options.password)
    if options.tls:
        client.tls_set_context(client_context(options.ca_file, options.cert_file, options.key_file))
    return client


class MqttAcknowledger:
    """The intake's acknowledger: PUBACK for the messages of a stored batch, on the
    connection they came on; acks of an older connection are dropped (the broker has
    already redelivered those messages, or will)."""

    def __init__(self, intake: MqttIntake) -> None:
        self._intake = intake

    def ack(self, acks: Sequence[tuple[int, int]]) -> None:
        intake = self._intake
        sent = 0
        with intake.lock:
            current = intake.generation if intake.client.is_connected() else -1
            for mid, generation in acks:
                if generation == current and mid:
                    intake.client.ack(mid, 1)
                    sent += 1
        intake.unacked -= len(acks)
        intake.metrics.acked.inc(sent)


class IntakeLifetime(Lifetime):
    """What both intakes (paho, lean) share: stop accepting, the start of ``close()``, and
    the wait between reconnects."""

    options: IntakeOptions
    accepting: bool
    _stop: asyncio.Event

    def stop_accepting(self) -> None:
        """From now on, messages are neither processed nor acknowledged: the broker
        redelivers them to the next run (persistent session)."""
        self.accepting = False

    def _closing(self) -> bool:
        """Stop ``run()`` and accepting; False when already closed (``close`` idempotent)."""
        if self._stop.is_set():
            return False
        self._stop.set()
        self.accepting = False
        return True

    async def _backoff(self, failures: int) -> None:
        """Exponential backoff with full jitter before the next attempt; ends early on stop."""
        o = self.options
        delay = random.uniform(
            o.reconnect_min_s, min(o.reconnect_max_s, o.reconnect_min_s * 2**failures)
        )
        log.info("mqtt_reconnect_wait", seconds=round(delay, 2), failures=failures)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._stop.wait()


class MqttIntake(IntakeLifetime):
    """Owns the paho client; puts every message it accepts on ``out``. ``run()`` connects
    and reconnects until closed; ``async with`` closes (last PUBACKs, DISCONNECT)."""

    def __init__(
        self,
        options: IntakeOptions,
        metrics: Metrics,
        out: asyncio.Queue[Incoming | None],
        client_factory: ClientFactory = paho_client,
    ) -> None:
        self.options = options
        self.metrics = metrics
        self.out = out
        self.generation = 0
        self.subscribed = False
        self.accepting = True
        self.connects = 0
        self.unacked = 0  # put on the queue, not yet acknowledged (or given up)
        self.dropped = 0
        self.publishes_dropped = 0  # paho queues its own publishes: none dropped here
        self.lock = threading.Lock()  # socket callbacks may fire in the connect thread
        self.acknowledger = MqttAcknowledger(self)
        self._stop = asyncio.Event()
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._refusal: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._misc_task: asyncio.Task[None] | None = None
        self._sub_mid: int | None = None
        self._delivered = 0
        self.ticks = 0  # keepalive rounds: the watchdog's sign of life
        self.client = client_factory(options)
        client = self.client
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write

    # ---- lifecycle ------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, and reconnect with exponential backoff and full jitter, until stopped.

        Raises BrokerRefused when the broker refuses us for good (credentials)."""
        self._loop = asyncio.get_running_loop()
        failures = 0
        while not self._stop.is_set():
            if await self._connect_once():
                failures = 0
                stop_wait = asyncio.ensure_future(self._stop.wait())
                drop_wait = asyncio.ensure_future(self._disconnected.wait())
                await asyncio.wait({stop_wait, drop_wait}, return_when=asyncio.FIRST_COMPLETED)
                stop_wait.cancel()
                drop_wait.cancel()
                if self._stop.is_set():
                    return
            if self._refusal is not None:
                raise BrokerRefused(
                    f"broker {self.options.broker_name} refused the connection: {self._refusal}"
                )
            failures += 1
            await self._backoff(failures)

    async def _connect_once(self) -> bool:
        o = self.options
        self._connected.clear()
        self._disconnected.clear()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = o.session_expiry_s
        props.ReceiveMaximum = o.receive_maximum
        assert self._loop is not None
        try:
            await self._loop.run_in_executor(
                None,
                lambda: self.client.connect(
                    o.host, o.port, keepalive=o.keepalive_s, clean_start=False, properties=props
                ),
            )
        except (OSError, ssl.SSLError) as exc:
            log.warning("mqtt_connect_failed", broker=o.broker_name, error=str(exc))
            return False
        try:
            async with asyncio.timeout(o.connack_timeout_s):
                await self._connected.wait()
        except TimeoutError:
            log.warning("mqtt_connack_timeout", broker=o.broker_name, seconds=o.connack_timeout_s)
            self._drop_socket()
            return False
        return not self._disconnected.is_set()

    async def close(self, flush_timeout_s: float = 5.0) -> None:
        """Send what is queued (the last PUBACKs), then DISCONNECT keeping the session.
        Idempotent; ends ``run()``."""
        if not self._closing():
            return
        if self._misc_task is not None:
            self._misc_task.cancel()
        if self.client.is_connected():
            deadline = asyncio.get_running_loop().time() + flush_timeout_s
            while self.client.want_write() and asyncio.get_running_loop().time() < deadline:
                self.client.loop_write()
                await asyncio.sleep(0.01)
            self.client.disconnect()
            self.client.loop_write()
        self._drop_socket()

    def _drop_socket(self) -> None:
        sock = self.client.socket()
        if sock is not None:
            self._on_socket_close(self.client, None, sock)
            with contextlib.suppress(OSError):
                sock.close()

    def has_connection(self) -> bool:
        return self.client.socket() is not None

    # ---- publishing ------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        if self.client.is_connected():
            self.client.publish(topic, payload, qos=qos, retain=retain)

    # ---- paho callbacks (run in the event loop thread via loop_read) ------------------

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            code = reason_code.value
            self._refusal = PERMANENT_REFUSALS.get(code)
            log.error(
                "mqtt_connack_refused", reason=str(reason_code), permanent=self._refusal is not None
            )
            self._disconnected.set()
            self._connected.set()
            return
        with self.lock:
            self.generation += 1
        self.connects += 1
        if self.connects > 1:
            self.metrics.mqtt_reconnects.inc()
        log.info(
            "mqtt_connected",
            broker=self.options.broker_name,
            session_present=flags.session_present,
            generation=self.generation,
        )
        result, mid = client.subscribe(
            self.options.subscription,
            options=SubscribeOptions(qos=1, noLocal=self.options.no_local),
        )
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.error("mqtt_subscribe_failed", error=paho.error_string(result))
        self._sub_mid = mid
        self._connected.set()

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if mid != self._sub_mid:
            return
        if any(rc.is_failure for rc in reason_codes):
            log.error("mqtt_subscription_refused", reasons=[str(rc) for rc in reason_codes])
            return
        self.subscribed = True
        self.metrics.mqtt_connected.set(1)
        log.info(
            "mqtt_subscribed", topic=self.options.subscription, granted_qos=reason_codes[0].value
        )

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self.lock:
            self.generation += 1
        self.subscribed = False
        self.metrics.mqtt_connected.set(0)
        if not self._stop.is_set():
            log.warning("mqtt_disconnected", reason=str(reason_code))
        self._disconnected.set()
        self._connected.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._delivered += 1
        if not self.accepting:
            return
        self.metrics.received.inc()
        loop = self._loop
        assert loop is not None
        incoming = Incoming(
            mid=message.mid if message.qos else 0,
            qos=message.qos,
            generation=self.generation,
            topic=message._topic.decode("utf-8", "replace"),
            payload=bytes(message.payload),
            received_at=datetime.now(UTC),
            received_mono=loop.time(),
            retained=bool(message.retain),
        )
        try:
            self.out.put_nowait(incoming)
        except asyncio.QueueFull:
            # Only QoS 0 floods escape Receive Maximum; an unacked QoS 1 message comes back.
            self.dropped += 1
            if self.dropped in (1, 1000) or self.dropped % 100000 == 0:
                log.error("intake_full", dropped=self.dropped, qos=message.qos)
            return
        self.unacked += 1

    # ---- socket plumbing: paho's external-loop interface --------------------------------

    def _call(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        assert loop is not None
        try:
            in_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            in_loop = False
        if in_loop:
            fn()
        else:
            loop.call_soon_threadsafe(fn)

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: paho.SocketLike) -> None:
        def register() -> None:
            assert self._loop is not None
            self._loop.add_reader(sock, self._read_available)
            if self._misc_task is None or self._misc_task.done():
                self._misc_task = self._loop.create_task(self._misc_loop())

        self._call(register)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: paho.SocketLike) -> None:
        def unregister() -> None:
            assert self._loop is not None
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(sock)
                self._loop.remove_writer(sock)

        self._call(unregister)

    def _on_socket_register_write(
        self, client: paho.Client, userdata: Any, sock: paho.SocketLike
    ) -> None:
        def register() -> None:
            assert self._loop is not None
            with contextlib.suppress(ValueError, OSError):
                self._loop.add_writer(sock, client.loop_write)

        self._call(register)

    def _on_socket_unregister_write(
        self, client: paho.Client, userdata: Any, sock: paho.SocketLike
    ) -> None:
        def unregister() -> None:
            assert self._loop is not None
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_writer(sock)

        self._call(unregister)

    def _read_available(self, max_packets: int = 256) -> None:
        """Handle a burst of PUBLISHes per wakeup: paho's loop_read takes one packet, and an
        event-loop round per message costs more than decoding it. Stops at the first read
        that delivers no message (socket drained, or a control packet)."""
        for _ in range(max_packets):
            before = self._delivered
            if self.client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return
            if self._delivered == before or self.client.socket() is None:
                return

    async def _misc_loop(self) -> None:
        """Keepalive pings, and the check that turns a frozen broker into a reconnect."""
        while self.client.socket() is not None:
            self.client.loop_misc()
            self.ticks += 1
            await asyncio.sleep(1.0)
