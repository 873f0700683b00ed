"""bytes on a topic -> a validated :class:`~devices.Message`, or a precise rejection.

The order of checks is part of the contract (a payload that breaks several rules gets the
first reason): topic, size, UTF-8 / JSON, object, depth, ``device_id``, ``ts`` / ``seq`` and
the channel's other required fields present, ``ts`` and its window, ``seq``, the other fields
in payload order, unknown fields (strict mode). The size check comes before any parsing, so an
oversized payload costs nothing.

One path, interpreting the declarative schema (:mod:`devices.schema` states every field rule
once). The depth check is the one step taken out of order, for speed: a payload whose fields
are all known and valid cannot nest deeper than its channel's schema allows, so the document is
only measured when a rule broke, an unknown field appeared, or the limit is below that bound;
a too-deep payload still gets ``too_deep`` rather than the reason of a later rule.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Final, NamedTuple

import orjson

from devices.construct import fast_constructor
from devices.errors import Ignored, Reason, Rejected
from devices.limits import DEFAULT_LIMITS, Limits
from devices.message import Channel, Deposit, Fill, Kind, Message, Presence, Status, Topic
from devices.schema import DEPOSIT_ITEMS, SEQ, SPECS, Record, describe
from devices.timestamps import check_window, received_ms, ts_to_ms
from devices.topics import parse_topic

_ONLINE: Final = Presence(online=True)
_OFFLINE: Final = Presence(online=False)
_STATE: Final = Channel.STATE
_new_message: Final = fast_constructor(Message)
_BODIES: Final[dict[Channel, type[Fill | Status | Deposit]]] = {
    Channel.FILL: Fill,
    Channel.STATUS: Status,
    Channel.DEPOSIT: Deposit,
}


class _Route(NamedTuple):
    """What decoding needs per (kind, channel): shared by every topic of that pair."""

    spec: Record
    build: Callable[..., Fill | Status | Deposit]
    deposit: bool
    depth: int  # the deepest a payload with only known, valid fields can nest


def _new_route(spec: Record, channel: Channel) -> _Route:
    if channel is Channel.DEPOSIT:
        depth = 3  # the object, items, an item
    else:
        depth = 2 if any(name in spec.fields for name in ("faults", "bins")) else 1
    return _Route(spec, fast_constructor(_BODIES[channel]), channel is Channel.DEPOSIT, depth)


_ROUTES: Final[dict[Channel, dict[Kind, _Route]]] = {}
for (_kind, _channel), _spec in SPECS.items():
    _ROUTES.setdefault(_channel, {})[_kind] = _new_route(_spec, _channel)


_last_received: tuple[datetime | None, int] = (None, 0)
"""The last ``received_at`` and its epoch ms: an intake gives a whole receive buffer one
receive time, and the timedelta arithmetic (≈ 0.4 µs) is a sixth of a ``fill``'s decode."""


def decode(
    topic: str,
    payload: bytes | bytearray | memoryview,
    received_at: datetime,
    limits: Limits = DEFAULT_LIMITS,
) -> Message:
    """Validate one MQTT message against the device contract.

    ``received_at`` (timezone-aware) anchors the ``ts`` window and is the time of ``state``
    messages. Raises :class:`~devices.Rejected` for anything outside the contract and
    :class:`~devices.Ignored` for messages that are not device messages; never anything else
    for any topic and payload (a naive ``received_at`` is a caller bug: ``ValueError``).
    """
    global _last_received
    last, now_ms = _last_received
    if received_at is not last:
        now_ms = received_ms(received_at)
        _last_received = (received_at, now_ms)
    t = parse_topic(topic)
    if type(payload) is not bytes:  # bytearray, memoryview: some clients hand out views
        payload = bytes(payload)
    size = len(payload)
    if size > limits.max_payload_bytes:
        raise Rejected(
            Reason.TOO_LARGE, f"payload is {size} bytes, limit {limits.max_payload_bytes}"
        )
    if t.channel is _STATE:
        return _state(t, topic, payload, now_ms)
    route = _ROUTES[t.channel][t.kind]
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        raise _classify(payload, e) from None
    if type(doc) is not dict:
        raise Rejected(Reason.NOT_OBJECT, f"payload must be a JSON object, got {describe(doc)}")

    extra: list[str] = []
    try:
        ts_ms, seq = _stamp(doc, t, route.spec, now_ms, limits)
        fields = route.spec.validate(doc, "", extra, required=False)
        if route.deposit:
            fields["items"] = DEPOSIT_ITEMS.check_items(doc["items"], "items", extra)
    except Rejected:
        _check_depth(doc, payload, limits.max_depth)
        raise
    if extra or route.depth > limits.max_depth:
        _check_depth(doc, payload, limits.max_depth)
    body = route.build(**fields)
    if not extra:
        return _new_message(t, ts_ms, seq, body)
    names = tuple(sorted(set(extra)))
    if limits.strict:
        more = f" and {len(names) - 1} more" if len(names) > 1 else ""
        raise Rejected(
            Reason.UNKNOWN_FIELD, f"unknown field {names[0]!r} (strict mode){more}", field=names[0]
        )
    return _new_message(t, ts_ms, seq, body, names)


def _check_depth(doc: dict[str, object], payload: bytes, max_depth: int) -> None:
    # Each container opens with { or [, so fewer brackets than the limit (strings included)
    # proves the depth without walking the document.
    if payload.count(b"{") + payload.count(b"[") > max_depth and not _depth_within(doc, max_depth):
        raise Rejected(Reason.TOO_DEEP, f"payload nests deeper than {max_depth} levels")


def _stamp(
    doc: dict[str, object], topic: Topic, spec: Record, now_ms: int, limits: Limits
) -> tuple[int, int]:
    """Identity, required fields and time: ``device_id``, then ``ts`` (in its window), ``seq``."""
    dev = doc.get("device_id")
    if dev is not None and dev != topic.device_id:
        if type(dev) is not str:
            raise Rejected(
                Reason.WRONG_TYPE,
                f"device_id must be a string, got {describe(dev)}",
                field="device_id",
            )
        raise Rejected(
            Reason.DEVICE_MISMATCH,
            f"payload device_id {describe(dev)} differs from the topic's {topic.device_id!r}",
            field="device_id",
        )
    ts = doc.get("ts")
    seq = doc.get("seq")
    if ts is None or seq is None:
        name = "ts" if ts is None else "seq"
        raise Rejected(Reason.MISSING_FIELD, f"required field {name} is missing", field=name)
    spec.require(doc, "")
    ts_ms = ts_to_ms(ts)
    check_window(ts_ms, now_ms, limits.max_age_ms, limits.max_future_ms)
    return ts_ms, SEQ.check(seq, "seq")


def _state(t: Topic, topic: str, payload: bytes, now_ms: int) -> Message:
    if payload == b"online":
        return _new_message(t, now_ms, None, _ONLINE)
    if payload == b"offline":
        return _new_message(t, now_ms, None, _OFFLINE)
    if not payload:
        raise Ignored(topic, "empty state payload: a retained presence message being cleared")
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as e:
        raise Rejected(Reason.NOT_UTF8, f"state payload is not UTF-8 ({e.reason})") from None
    shown = text if len(text) <= 40 else text[:40] + "…"
    raise Rejected(
        Reason.BAD_STATE, f"state payload must be exactly online or offline, got {shown!r}"
    )


def _classify(payload: bytes, error: orjson.JSONDecodeError) -> Rejected:
    """Name the JSON failure: not UTF-8, a number too large for a double, too deep, or syntax."""
    try:
        bytes(payload).decode("utf-8")
    except UnicodeDecodeError as e:
        return Rejected(Reason.NOT_UTF8, f"payload is not UTF-8: {e.reason} at byte {e.start}")
    msg = str(error)
    if "number is infinity" in msg:
        return Rejected(Reason.NOT_FINITE, f"a number overflows to infinity ({msg})")
    if "depth limit" in msg or "recursion" in msg:
        return Rejected(Reason.TOO_DEEP, "payload nests deeper than the parser allows")
    return Rejected(Reason.NOT_JSON, f"payload is not JSON: {msg}")


def _depth_within(doc: dict[str, object], limit: int) -> bool:
    """True when no container sits deeper than ``limit`` (the top-level object is depth 1)."""
    stack: list[tuple[object, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        for child in node.values() if type(node) is dict else node:  # type: ignore[attr-defined]
            tc = type(child)
            if tc is dict or tc is list:
                if depth >= limit:
                    return False
                stack.append((child, depth + 1))
    return True
