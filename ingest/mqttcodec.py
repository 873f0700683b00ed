"""A sans-IO MQTT 5 codec for taza's intake: the client side, the packets taza uses only.

Encodes CONNECT, SUBSCRIBE, PUBLISH (QoS 0/1, retain, DUP), PUBACK (one or many in one
buffer), PINGREQ and DISCONNECT; decodes CONNACK, SUBACK, PUBLISH (QoS 0/1), PUBACK,
PINGRESP and DISCONNECT. ``Parser.feed`` takes whatever the socket gave (one receive
buffer: many packets, or part of one) and returns every whole packet in it; the rest waits
for the next buffer. Anything that is not well-formed MQTT 5 from a server raises
``MalformedPacket`` and the connection is dropped — the parser never guesses, so it cannot
hand on (and the intake never acknowledges) a message it did not read whole.

Why our own: paho spends ≈ 25 µs per message in three ``recv()`` calls, a Properties
object and a topic-matcher pass per PUBLISH and one ``send()`` per PUBACK; this reads a
whole buffer per call and answers a stored batch's PUBACKs in one write
(docs/performance.md has the figures).
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from ingest.errors import IngestError

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14

# Property identifiers (MQTT 5, 2.2.2.2) taza writes or reads.
SESSION_EXPIRY: Final = 0x11
RECEIVE_MAXIMUM: Final = 0x21
MAXIMUM_QOS: Final = 0x24
RETAIN_AVAILABLE: Final = 0x25
REASON_STRING: Final = 0x1F

MAX_REMAINING: Final = 268_435_455  # the largest Variable Byte Integer
PINGREQ_PACKET: Final = b"\xc0\x00"
DISCONNECT_PACKET: Final = b"\xe0\x00"  # normal disconnection: the session is kept


class MalformedPacket(IngestError):
    """The server sent bytes that are not a packet this client accepts (MQTT 5 §4.13)."""


class Publish(NamedTuple):
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int  # 0 for QoS 0


class ConnAck(NamedTuple):
    session_present: bool
    reason: int
    receive_maximum: int  # the server's: how many of our QoS 1 PUBLISHes may be in flight
    reason_string: str


class SubAck(NamedTuple):
    packet_id: int
    reasons: tuple[int, ...]


class PubAck(NamedTuple):
    packet_id: int
    reason: int


class PingResp(NamedTuple):
    pass


class Disconnect(NamedTuple):
    reason: int
    reason_string: str


Packet = Publish | ConnAck | SubAck | PubAck | PingResp | Disconnect
_new = tuple.__new__


# ---- encoding --------------------------------------------------------------------------


def varint(n: int) -> bytes:
    if not 0 <= n <= MAX_REMAINING:
        raise ValueError(f"{n} does not fit a Variable Byte Integer")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def utf8(s: str) -> bytes:
    b = s.encode()
    if len(b) > 0xFFFF:
        raise ValueError("string longer than 65535 bytes")
    return len(b).to_bytes(2, "big") + b


def _binary(b: bytes) -> bytes:
    return len(b).to_bytes(2, "big") + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + varint(len(body)) + body


def connect(
    client_id: str,
    *,
    keepalive_s: int,
    session_expiry_s: int,
    receive_maximum: int,
    username: str | None = None,
    password: str | None = None,
    clean_start: bool = False,
) -> bytes:
    flags = (0x02 if clean_start else 0) | (0x80 if username is not None else 0)
    flags |= 0x40 if password is not None else 0
    props = (
        bytes((SESSION_EXPIRY,))
        + session_expiry_s.to_bytes(4, "big")
        + bytes((RECEIVE_MAXIMUM,))
        + receive_maximum.to_bytes(2, "big")
    )
    body = b"\x00\x04MQTT\x05" + bytes((flags,)) + keepalive_s.to_bytes(2, "big")
    body += varint(len(props)) + props + utf8(client_id)
    if username is not None:
        body += utf8(username)
    if password is not None:
        body += _binary(password.encode())
    return _packet(CONNECT << 4, body)


def subscribe(packet_id: int, topic_filter: str, qos: int = 1, *, no_local: bool = False) -> bytes:
    """``no_local`` (MQTT 5, 3.8.3.1): the broker never sends this connection what it
    published itself; a protocol error on a shared subscription, so the caller decides."""
    options = qos | (0x04 if no_local else 0)
    body = packet_id.to_bytes(2, "big") + b"\x00" + utf8(topic_filter) + bytes((options,))
    return _packet(SUBSCRIBE << 4 | 0x02, body)


def publish(
    topic: str,
    payload: bytes,
    qos: int = 0,
    retain: bool = False,
    packet_id: int = 0,
    dup: bool = False,
) -> bytes:
    if qos not in (0, 1):
        raise ValueError("taza publishes at QoS 0 or 1")
    first = PUBLISH << 4 | (0x08 if dup else 0) | qos << 1 | (0x01 if retain else 0)
    body = utf8(topic) + (packet_id.to_bytes(2, "big") if qos else b"") + b"\x00" + payload
    return _packet(first, body)


def pubacks(packet_ids: list[int]) -> bytes:
    """PUBACK (success) for each id, in order, as one buffer: one write per stored batch.
    Each is the 32-bit big-endian 0x4002_0000 | id, so one ``struct.pack`` builds them all
    (half the cost of joining 4-byte strings)."""
    return struct.pack(f">{len(packet_ids)}I", *[_PUBACK | pid for pid in packet_ids])


_PUBACK: Final = 0x40020000


# ---- decoding --------------------------------------------------------------------------


def _props(buf: bytes, i: int, end: int) -> tuple[dict[int, int | str], int]:
    """Properties at ``i`` (length first); the ones taza reads, decoded; ends at the index
    after them. Unknown identifiers are malformed (their length cannot be known)."""
    length, i = _read_varint(buf, i, end)
    stop = i + length
    if stop > end:
        raise MalformedPacket("properties run past the packet")
    out: dict[int, int | str] = {}
    while i < stop:
        pid = buf[i]
        i += 1
        if pid in (0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A):  # one byte
            size = 1
        elif pid in (0x13, 0x21, 0x22, 0x23):  # two-byte integer
            size = 2
        elif pid in (0x02, 0x11, 0x18, 0x27):  # four-byte integer
            size = 4
        elif pid == 0x0B:  # subscription identifier: a varint
            value, i = _read_varint(buf, i, stop)
            out[pid] = value
            continue
        elif pid in (0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F):  # string / binary
            if i + 2 > stop:
                raise MalformedPacket("truncated property")
            n = int.from_bytes(buf[i : i + 2], "big")
            if i + 2 + n > stop:
                raise MalformedPacket("truncated property")
            if pid == REASON_STRING:
                out[pid] = buf[i + 2 : i + 2 + n].decode("utf-8", "replace")
            i += 2 + n
            continue
        elif pid == 0x26:  # user property: two strings
            for _ in range(2):
                if i + 2 > stop:
                    raise MalformedPacket("truncated property")
                i += 2 + int.from_bytes(buf[i : i + 2], "big")
            if i > stop:
                raise MalformedPacket("truncated property")
            continue
        else:
            raise MalformedPacket(f"unknown property 0x{pid:02x}")
        if i + size > stop:
            raise MalformedPacket("truncated property")
        out[pid] = int.from_bytes(buf[i : i + size], "big")
        i += size
    return out, stop


def _read_varint(buf: bytes, i: int, end: int) -> tuple[int, int]:
    value = shift = 0
    for _ in range(4):
        if i >= end:
            raise MalformedPacket("truncated variable byte integer")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7
    raise MalformedPacket("variable byte integer longer than 4 bytes")


class Parser:
    """Whole packets out of a byte stream; keeps the incomplete tail for the next feed."""

    __slots__ = ("_rest",)

    def __init__(self) -> None:
        self._rest = b""

    @property
    def pending(self) -> int:
        """Bytes of an incomplete packet held for the next feed."""
        return len(self._rest)

    def feed(self, data: bytes) -> list[Packet]:
        buf = self._rest + data if self._rest else data
        n = len(buf)
        i = 0
        out: list[Packet] = []
        append = out.append
        while n - i >= 2:
            first = buf[i]
            length = buf[i + 1]
            j = i + 2
            if length & 0x80:
                length = 0
                shift = 0
                j = i + 1
                for _ in range(4):
                    if j >= n:
                        break
                    byte = buf[j]
                    j += 1
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                else:
                    raise MalformedPacket("variable byte integer longer than 4 bytes")
                if byte & 0x80:  # the length itself is incomplete
                    break
            end = j + length
            if end > n:
                break
            kind = first >> 4
            if kind == PUBLISH:
                append(_publish(buf, first, j, end))
            else:
                append(_control(buf, kind, first, j, end))
            i = end
        self._rest = buf[i:]
        return out


def _publish(buf: bytes, first: int, i: int, end: int) -> Publish:
    qos = (first >> 1) & 0x03
    if qos > 1:
        raise MalformedPacket(f"PUBLISH at QoS {qos}: subscribed at most QoS 1")
    if i + 2 > end:
        raise MalformedPacket("PUBLISH without a topic")
    tlen = buf[i] << 8 | buf[i + 1]
    t_end = i + 2 + tlen
    if tlen == 0 or t_end > end:
        raise MalformedPacket("PUBLISH topic empty (no alias was allowed) or past the packet")
    topic = buf[i + 2 : t_end].decode("utf-8", "replace")
    i = t_end
    pid = 0
    if qos:
        if i + 2 > end:
            raise MalformedPacket("PUBLISH without a packet identifier")
        pid = buf[i] << 8 | buf[i + 1]
        if pid == 0:
            raise MalformedPacket("PUBLISH with packet identifier 0")
        i += 2
    if i >= end:
        raise MalformedPacket("PUBLISH without properties")
    plen = buf[i]
    if plen == 0:
        i += 1
    elif plen & 0x80:
        _, i = _props(buf, i, end)
    else:
        i += 1 + plen
        if i > end:
            raise MalformedPacket("PUBLISH properties run past the packet")
    # tuple.__new__ skips NamedTuple's Python-level __new__: a third of this function's cost
    return _new(Publish, (topic, buf[i:end], qos, first & 0x01 == 1, first & 0x08 == 8, pid))


def _control(buf: bytes, kind: int, first: int, i: int, end: int) -> Packet:
    if kind == PUBACK:
        if first != 0x40 or end - i < 2:
            raise MalformedPacket("bad PUBACK")
        reason = buf[i + 2] if end - i > 2 else 0
        return _new(PubAck, (buf[i] << 8 | buf[i + 1], reason))  # one per alert published
    if kind == CONNACK:
        if first != 0x20 or end - i < 3:
            raise MalformedPacket("bad CONNACK")
        props, stop = _props(buf, i + 2, end)
        if stop != end:
            raise MalformedPacket("CONNACK longer than its properties")
        rm = props.get(RECEIVE_MAXIMUM, 65535)
        rs = props.get(REASON_STRING, "")
        return ConnAck(bool(buf[i] & 0x01), buf[i + 1], int(rm), str(rs))
    if kind == SUBACK:
        if first != 0x90 or end - i < 3:
            raise MalformedPacket("bad SUBACK")
        _, stop = _props(buf, i + 2, end)
        if stop >= end:
            raise MalformedPacket("SUBACK without reason codes")
        return SubAck(buf[i] << 8 | buf[i + 1], tuple(buf[stop:end]))
    if kind == PINGRESP:
        if first != 0xD0 or end != i:
            raise MalformedPacket("bad PINGRESP")
        return PingResp()
    if kind == DISCONNECT:
        if first != 0xE0:
            raise MalformedPacket("bad DISCONNECT")
        if end == i:
            return Disconnect(0, "")
        reason = buf[i]
        detail = _props(buf, i + 1, end)[0].get(REASON_STRING, "") if end - i > 1 else ""
        return Disconnect(reason, str(detail))
    raise MalformedPacket(f"unexpected packet type {kind} from the server")
