"""What the broker retains under ``taza/v1/alerts/#`` now: read once at start (and after a
reconnect) so the stage can clear retained alerts that are no longer firing.

The broker sends the retained messages right after the SUBACK, so we collect until none has
come for ``quiet_s`` (bounded by ``timeout_s``). Only retained ones count: with MQTT 5's
Retain As Published off, the broker clears the RETAIN flag of every live message, and the
alerts the service publishes meanwhile (thousands a second while a backlog drains) must
neither be taken for retained ones nor keep the read going until its time bound.

A short-lived connection of its own (clean start, no session), on the event loop with
taza's codec (``ingest.mqttcodec``): the intake's connection is subscribed to device topics
with a persistent session, and the previous paho client in a thread of its own was 16 % of
the service's CPU during a drain with alerts on (it read every live alert for 10 s).
"""

from __future__ import annotations

import asyncio
import ssl

from devices.broker import BrokerURL
from ingest import mqttcodec as codec
from ingest.fleet.output import ALERT_FILTER
from ingest.tls import client_context

SUBSCRIBE_ID = 1


class RetainedReadError(Exception):
    """The broker could not be read (the caller republishes what fires and clears nothing)."""


class _Reader(asyncio.Protocol):
    """Collects retained PUBLISHes; acknowledges each buffer's QoS 1 ones in one write."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.parser = codec.Parser()
        self.transport: asyncio.Transport | None = None
        self.found: dict[str, bytes] = {}
        self.last = loop.time()  # of the latest retained message (or the SUBACK)
        self.connack: asyncio.Future[codec.ConnAck] = loop.create_future()
        self.suback: asyncio.Future[codec.SubAck] = loop.create_future()
        self.lost: asyncio.Future[str] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            packets = self.parser.feed(data)
        except codec.MalformedPacket as exc:
            self._end(f"malformed packet: {exc}")
            return
        acks = []
        for p in packets:
            if type(p) is codec.Publish:
                if p.qos:
                    acks.append(p.packet_id)
                if p.retain:
                    self.last = self.loop.time()
                    if p.payload:
                        self.found[p.topic] = p.payload
            elif type(p) is codec.ConnAck and not self.connack.done():
                self.connack.set_result(p)
            elif type(p) is codec.SubAck and p.packet_id == SUBSCRIBE_ID:
                self.last = self.loop.time()
                if not self.suback.done():
                    self.suback.set_result(p)
            elif type(p) is codec.Disconnect:
                self._end(f"disconnected by the broker (0x{p.reason:02x} {p.reason_string})")
        if acks and self.transport is not None and not self.transport.is_closing():
            self.transport.write(codec.pubacks(acks))

    def _end(self, why: str) -> None:
        if not self.lost.done():
            self.lost.set_result(why)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        why = f"connection lost: {exc}" if exc else "connection closed by the broker"
        if not self.lost.done():
            self.lost.set_result(why)
        for waiter in (self.connack, self.suback):
            if not waiter.done():
                waiter.set_exception(ConnectionError(why))
                waiter.exception()  # retrieved: the caller may be gone already


async def read_retained(
    broker: BrokerURL,
    client_id: str,
    *,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    quiet_s: float = 0.5,
    timeout_s: float = 10.0,
) -> dict[str, bytes]:
    """{topic: payload} of the non-empty retained messages under ``taza/v1/alerts/#``.

    Raises :class:`RetainedReadError` when the broker cannot be reached, refuses us, or the
    connection ends before the retained messages have (a partial read would be taken for
    the whole)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    context = client_context(ca_file, cert_file, key_file) if broker.tls else None
    try:
        async with asyncio.timeout_at(deadline):
            transport, reader = await loop.create_connection(
                lambda: _Reader(loop),
                broker.host,
                broker.port,
                ssl=context,
                server_hostname=broker.host if context else None,
            )
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        raise RetainedReadError(f"cannot connect to {broker}: {exc or 'timed out'}") from None
    try:
        transport.write(
            codec.connect(
                client_id,
                keepalive_s=max(30, int(timeout_s) + 1),
                session_expiry_s=0,
                receive_maximum=65535,
                username=broker.username,
                password=broker.password,
                clean_start=True,
            )
        )
        try:
            async with asyncio.timeout_at(deadline):
                ack = await reader.connack
                if ack.reason >= 0x80:
                    raise RetainedReadError(
                        f"{broker} refused the connection: 0x{ack.reason:02x} {ack.reason_string}"
                    )
                transport.write(codec.subscribe(SUBSCRIBE_ID, ALERT_FILTER, qos=1))
                sub = await reader.suback
        except TimeoutError:
            raise RetainedReadError(f"no SUBACK from {broker} within {timeout_s:g}s") from None
        except ConnectionError as exc:
            raise RetainedReadError(f"{broker}: {exc}") from None
        if any(rc >= 0x80 for rc in sub.reasons):
            raise RetainedReadError(f"{broker} refused the subscription to {ALERT_FILTER}")
        while (wait := min(reader.last + quiet_s, deadline) - loop.time()) > 0:
            await asyncio.wait((reader.lost,), timeout=wait)
            if reader.lost.done():
                raise RetainedReadError(f"{broker}: {reader.lost.result()}")
        return dict(reader.found)
    finally:
        if not transport.is_closing():
            transport.write(codec.DISCONNECT_PACKET)
            transport.close()
