"""The lean MQTT intake: an asyncio Protocol and taza's own codec (``ingest.mqttcodec``).

Same contract as the paho intake (``ingest.mqtt.MqttIntake``), chosen with
``TAZA_MQTT_CLIENT=lean`` (the default): MQTT 5 persistent session (clean start off, session
expiry) with Receive Maximum as flow control; PUBACK only for a stored batch, on the
connection its messages came on (``generation``), all of a batch's PUBACKs in one write;
keepalive that turns a frozen broker into a reconnect; reconnect with backoff and full
jitter; a permanent CONNACK refusal raises ``BrokerRefused``; ``mqtts://`` and
username/password; QoS 0/1 PUBLISH out (retain too), a QoS 1 one resent after a reconnect
until the broker acknowledges it.

Per receive buffer, not per message: one parse call, one wall-clock and one monotonic
timestamp, one counter update.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from ingest import mqttcodec as codec
from ingest.batch import Incoming, new_tuple
from ingest.errors import BrokerRefused
from ingest.metrics import Metrics
from ingest.mqtt import PERMANENT_REFUSALS, IntakeLifetime, IntakeOptions
from ingest.tls import client_context

log = structlog.get_logger("ingest.mqtt")

SUBSCRIBE_ID = 1
OUTBOX_LIMIT = 10000  # QoS 1 publishes held for the broker's PUBACK (alerts, dead letters)
OUTBOX_LOG_EVERY_S = 10.0


@dataclass(slots=True)
class _Held:
    topic: str
    payload: bytes
    retain: bool
    generation: int = 0


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: bytes in → packets → the intake; bytes out as given."""

    def __init__(self, intake: LeanIntake) -> None:
        self.intake = intake
        self.parser = codec.Parser()
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()
        self.connack: asyncio.Future[codec.ConnAck] = asyncio.get_running_loop().create_future()
        self.generation = -1  # set once CONNACK accepts us
        self.last_rx = 0.0
        self.last_tx = 0.0
        self.ping_sent = 0.0
        self.paused = False  # reading paused: the intake queue is full

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.last_tx = self.intake.loop_time()

    def data_received(self, data: bytes) -> None:
        try:
            packets = self.parser.feed(data)
        except codec.MalformedPacket as exc:
            log.error("mqtt_malformed_packet", error=str(exc), action="reconnecting")
            self.drop()
            return
        self.last_rx = self.intake.loop_time()
        self.intake.handle(self, packets)

    def drop(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        if not self.connack.done():
            self.connack.set_exception(ConnectionError("connection closed before CONNACK"))
            self.connack.exception()  # retrieved: nobody may be waiting any more
        self.intake.connection_lost(self, exc)


class LeanAcknowledger:
    """PUBACK for the messages of a stored batch, in one write, on the connection they came
    on; acks of an older connection are dropped (the broker redelivers those messages)."""

    def __init__(self, intake: LeanIntake) -> None:
        self._intake = intake

    def ack(self, acks: Sequence[tuple[int, int]]) -> None:
        intake = self._intake
        conn = intake.conn
        sent = 0
        if conn is not None:
            current = conn.generation
            ids = [mid for mid, generation in acks if mid and generation == current]
            if ids:
                conn.write(codec.pubacks(ids))
                sent = len(ids)
        intake.unacked -= len(acks)
        intake.metrics.acked.inc(sent)


class LeanIntake(IntakeLifetime):
    """Owns the broker connection; puts every message it accepts on ``out``. ``run()``
    connects and reconnects until closed; ``async with`` closes (last PUBACKs, DISCONNECT)."""

    def __init__(
        self,
        options: IntakeOptions,
        metrics: Metrics,
        out: asyncio.Queue[Incoming | None],
        *,
        outbox_limit: int = OUTBOX_LIMIT,
    ) -> None:
        if not 0 < outbox_limit < 65534:  # packet ids: 65535, one of them the SUBSCRIBE's
            raise ValueError(f"outbox_limit {outbox_limit}: 1 to 65533")
        self.outbox_limit = outbox_limit
        self.options = options
        self.metrics = metrics
        self.out = out
        self.generation = 0
        self.subscribed = False
        self.accepting = True
        self.connects = 0
        self.unacked = 0  # put on the queue, not yet acknowledged (or given up)
        self.pauses = 0  # times reading paused on a full queue
        self._overflow: deque[Incoming] = deque()
        self.ticks = 0  # keepalive rounds: the watchdog's sign of life
        self.conn: _Connection | None = None
        self.acknowledger = LeanAcknowledger(self)
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_id = 0
        # QoS 1 publishes not yet PUBACKed by the broker, oldest first:
        # {packet id: [topic, payload, retain, generation it was last sent on (0: not yet)]}
        self._outbox: OrderedDict[int, _Held] = OrderedDict()
        # Kept beside it so each publish and PUBACK costs O(1), not a pass over the outbox
        # (measured: that pass was 28 % of the service's CPU with alerts on): the ids not yet
        # sent on the current connection, oldest first, and how many are in flight on it.
        self._unsent: OrderedDict[int, None] = OrderedDict()
        self._inflight = 0
        self._send_quota = 65535  # the broker's Receive Maximum for our QoS 1 publishes
        self._send_soon = False  # a _send_now is scheduled
        self.publishes_dropped = 0  # the fleet stage re-syncs the retained alerts after a drop
        self._drops_unlogged = 0
        self._drops_logged_at = -OUTBOX_LOG_EVERY_S

    def loop_time(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def has_connection(self) -> bool:
        return self.conn is not None

    # ---- lifecycle ------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, and reconnect with exponential backoff and full jitter, until stopped.

        Raises BrokerRefused when the broker refuses us for good (credentials)."""
        self._loop = asyncio.get_running_loop()
        failures = 0
        while not self._stop.is_set():
            conn = await self._connect_once()
            if conn is not None:
                failures = 0
                keepalive = asyncio.create_task(self._keepalive(conn))
                stop_wait = asyncio.ensure_future(self._stop.wait())
                try:
                    await asyncio.wait({stop_wait, conn.lost}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop_wait.cancel()
                    keepalive.cancel()
                if self._stop.is_set():
                    return
            failures += 1
            await self._backoff(failures)

    async def _connect_once(self) -> _Connection | None:
        o = self.options
        assert self._loop is not None
        context = client_context(o.ca_file, o.cert_file, o.key_file) if o.tls else None
        try:
            async with asyncio.timeout(o.connack_timeout_s):
                _, conn = await self._loop.create_connection(
                    lambda: _Connection(self),
                    o.host,
                    o.port,
                    ssl=context,
                    server_hostname=o.host if context else None,
                )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            log.warning("mqtt_connect_failed", broker=o.broker_name, error=str(exc) or repr(exc))
            return None
        conn.write(
            codec.connect(
                o.client_id,
                keepalive_s=o.keepalive_s,
                session_expiry_s=o.session_expiry_s,
                receive_maximum=o.receive_maximum,
                username=o.username,
                password=o.password,
            )
        )
        try:
            async with asyncio.timeout(o.connack_timeout_s):
                ack = await conn.connack
        except TimeoutError:
            log.warning("mqtt_connack_timeout", broker=o.broker_name, seconds=o.connack_timeout_s)
            conn.drop()
            return None
        except ConnectionError as exc:
            log.warning("mqtt_connect_failed", broker=o.broker_name, error=str(exc))
            return None
        if ack.reason >= 0x80:
            permanent = PERMANENT_REFUSALS.get(ack.reason)
            log.error(
                "mqtt_connack_refused",
                reason=f"0x{ack.reason:02x} {ack.reason_string}".strip(),
                permanent=permanent is not None,
            )
            conn.drop()
            if permanent is not None:
                raise BrokerRefused(f"broker {o.broker_name} refused the connection: {permanent}")
            return None
        if self.connects > 1:
            self.metrics.mqtt_reconnects.inc()
        log.info(
            "mqtt_connected",
            broker=o.broker_name,
            session_present=ack.session_present,
            generation=self.generation,
        )
        return conn

    def _accepted(self, conn: _Connection, ack: codec.ConnAck) -> None:
        """CONNACK said yes: from this packet on, what arrives belongs to a new generation
        (in the same buffer, too: a resumed session's messages follow CONNACK at once)."""
        self.generation += 1
        conn.generation = self.generation
        self.conn = conn
        self.connects += 1
        self._send_quota = ack.receive_maximum
        self._unsent = OrderedDict.fromkeys(self._outbox)  # a new connection: resend all
        self._inflight = 0
        conn.write(
            codec.subscribe(
                SUBSCRIBE_ID, self.options.subscription, qos=1, no_local=self.options.no_local
            )
        )
        self._send_held(conn)

    async def close(self, flush_timeout_s: float = 5.0) -> None:
        """Send what is queued (the last PUBACKs), then DISCONNECT keeping the session.
        Idempotent; ends ``run()``."""
        if not self._closing():
            return
        conn = self.conn
        if conn is not None and conn.transport is not None:
            self._send_held(conn)  # publishes of the last step, before DISCONNECT
            conn.write(codec.DISCONNECT_PACKET)
            conn.transport.close()  # after the buffered bytes are written
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(flush_timeout_s):
                    await conn.lost
            conn.drop()

    async def _keepalive(self, conn: _Connection) -> None:
        """PINGREQ after half a keepalive of silence either way; a broker that answers
        nothing for a whole keepalive after it is treated as gone (frozen, cut off)."""
        k = self.options.keepalive_s
        conn.last_rx = conn.last_tx = self.loop_time()
        while True:
            await asyncio.sleep(min(1.0, k / 4))
            self.ticks += 1
            now = self.loop_time()
            if conn.paused:
                # Our silence, not the broker's; and its PINGRESPs wait unread in the socket,
                # so keep pinging: the broker must hear from us within 1.5 keepalives.
                conn.last_rx = now
                conn.ping_sent = 0.0
            if conn.ping_sent and now - conn.last_rx >= k and now - conn.ping_sent >= k / 2:
                log.warning("mqtt_keepalive_timeout", seconds=round(now - conn.last_rx, 1))
                conn.drop()
                return
            if not conn.ping_sent and (now - conn.last_tx >= k / 2 or now - conn.last_rx >= k / 2):
                conn.ping_sent = now
                conn.write(codec.PINGREQ_PACKET)

    # ---- publishing ------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """QoS 0: sent if connected, else dropped. QoS 1: held until the broker's PUBACK,
        resent (DUP) after a reconnect; at most ``outbox_limit`` held (the oldest is dropped)."""
        conn = self.conn
        if qos == 0:
            if conn is not None:
                conn.write(codec.publish(topic, payload, 0, retain))
            return
        if len(self._outbox) >= self.outbox_limit:
            old_pid, old = self._outbox.popitem(last=False)
            self._forget(old_pid, old)
            self._dropped(old)
        pid = self._packet_id()
        self._outbox[pid] = _Held(topic, payload, retain)
        self._unsent[pid] = None
        if conn is not None and not self._send_soon:  # else: after the next CONNACK
            # Once the caller's step is done: a batch's alerts leave in one write, not one
            # send() each (they were 3 % of the service's CPU with alerts on).
            self._send_soon = True
            asyncio.get_running_loop().call_soon(self._send_now)

    def _dropped(self, held: _Held) -> None:
        """Counted each time, logged at most every OUTBOX_LOG_EVERY_S: a flood of alerts
        while the broker's PUBACKs lag (they queue behind the messages it is sending us)
        would otherwise write an error line per publish, each costing more than the publish."""
        self.metrics.mqtt_publishes_dropped.inc()
        self.publishes_dropped += 1
        self._drops_unlogged += 1
        now = time.monotonic()
        if now - self._drops_logged_at >= OUTBOX_LOG_EVERY_S:
            log.error(
                "mqtt_outbox_full",
                dropped=self._drops_unlogged,
                last_dropped_topic=held.topic,
                limit=self.outbox_limit,
                action="oldest QoS 1 publishes dropped (taza_mqtt_publishes_dropped_total); "
                "the alert stage puts the retained alert topics right at its next tick",
            )
            self._drops_logged_at = now
            self._drops_unlogged = 0

    def _send_now(self) -> None:
        self._send_soon = False
        if self.conn is not None:
            self._send_held(self.conn)

    def _packet_id(self) -> int:
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            if self._next_id != SUBSCRIBE_ID and self._next_id not in self._outbox:
                return self._next_id
        raise RuntimeError("no free packet identifier")  # unreachable: outbox_limit < 65534

    def _send_held(self, conn: _Connection) -> None:
        """Send held QoS 1 publishes not yet sent on this connection, oldest first, while
        fewer than the broker's Receive Maximum are in flight; DUP if sent before."""
        out = []
        while self._unsent and self._inflight < self._send_quota:
            pid, _ = self._unsent.popitem(last=False)
            h = self._outbox[pid]
            out.append(codec.publish(h.topic, h.payload, 1, h.retain, pid, dup=h.generation > 0))
            h.generation = conn.generation
            self._inflight += 1
        if out:
            conn.write(b"".join(out))

    def _forget(self, pid: int, held: _Held) -> None:
        """``pid`` left the outbox (acknowledged, or dropped when it was full)."""
        if self._unsent.pop(pid, False) is None:
            return  # never sent on this connection
        if self.conn is not None and held.generation == self.conn.generation:
            self._inflight -= 1

    # ---- packets in ------------------------------------------------------------------

    def handle(self, conn: _Connection, packets: list[codec.Packet]) -> None:
        """Everything one receive buffer held. PUBLISHes become Incoming items, with one
        receive time for the buffer. Should the queue be full (mosquitto 2.0.11 was measured
        sending beyond our Receive Maximum), the rest waits in ``_overflow`` with reading
        paused — TCP then holds the broker back; nothing is dropped."""
        publish_type = codec.Publish
        make = new_tuple
        incoming = Incoming
        received_at: datetime | None = None
        mono = 0.0
        put = self.out.put_nowait
        overflow = self._overflow
        generation = conn.generation
        n = 0
        for p in packets:
            if type(p) is publish_type:
                if not self.accepting:
                    continue
                if received_at is None:
                    received_at = datetime.now(UTC)
                    mono = conn.last_rx
                n += 1
                item = make(
                    incoming,
                    (
                        p.packet_id,
                        p.qos,
                        generation,
                        p.topic,
                        p.payload,
                        received_at,
                        mono,
                        p.retain,
                    ),
                )
                if overflow:
                    overflow.append(item)
                    self._pause(conn)
                    continue
                try:
                    put(item)
                except asyncio.QueueFull:
                    overflow.append(item)
                    self._pause(conn)
            else:
                self._control(conn, p)
                generation = conn.generation
        if n:
            self.unacked += n
            self.metrics.received.inc(n)

    def _pause(self, conn: _Connection) -> None:
        if conn.transport is None or conn.paused:
            return
        conn.paused = True
        conn.transport.pause_reading()
        self.pauses += 1
        assert self._loop is not None
        self._loop.create_task(self._unpause(conn))

    async def _unpause(self, conn: _Connection) -> None:
        """Hand the held items on as the pipeline makes room, then read again."""
        while self._overflow:
            item = self._overflow.popleft()
            await self.out.put(item)
        conn.paused = False
        if conn.transport is not None and not conn.transport.is_closing():
            conn.transport.resume_reading()

    def _control(self, conn: _Connection, p: codec.Packet) -> None:
        if isinstance(p, codec.PingResp):
            conn.ping_sent = 0.0
        elif isinstance(p, codec.PubAck):
            held = self._outbox.pop(p.packet_id, None)
            if held is not None:
                self._forget(p.packet_id, held)
                if p.reason >= 0x80:
                    log.warning("mqtt_publish_refused", packet_id=p.packet_id, reason=p.reason)
            if self._unsent:
                self._send_held(conn)
        elif isinstance(p, codec.ConnAck):
            if conn.connack.done():
                log.error("mqtt_protocol_error", error="second CONNACK", action="reconnecting")
                conn.drop()
                return
            if p.reason < 0x80:
                self._accepted(conn, p)
            conn.connack.set_result(p)
        elif isinstance(p, codec.SubAck):
            if p.packet_id != SUBSCRIBE_ID:
                return
            if any(rc >= 0x80 for rc in p.reasons):
                log.error("mqtt_subscription_refused", reasons=[f"0x{r:02x}" for r in p.reasons])
                return
            self.subscribed = True
            self.metrics.mqtt_connected.set(1)
            log.info("mqtt_subscribed", topic=self.options.subscription, granted_qos=p.reasons[0])
        elif isinstance(p, codec.Disconnect):
            log.warning(
                "mqtt_disconnected_by_broker", reason=f"0x{p.reason:02x}", detail=p.reason_string
            )
            conn.drop()

    def connection_lost(self, conn: _Connection, exc: Exception | None) -> None:
        if self.conn is not conn:
            return
        self.conn = None
        self.generation += 1
        self.subscribed = False
        self.metrics.mqtt_connected.set(0)
        if not self._stop.is_set():
            log.warning("mqtt_disconnected", reason=str(exc) if exc else "closed by the broker")
