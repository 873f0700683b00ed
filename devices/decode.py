"""bytes on a topic -> a validated :class:`~devices.Message`, or a precise rejection.

The order of checks is part of the contract (a payload that breaks several rules gets the
first reason): topic, size, UTF-8 / JSON, object, depth, ``device_id``, ``ts`` / ``seq`` and
the channel's other required fields present, ``ts`` and its window, ``seq``, the other fields
in payload order, unknown fields (strict mode). The size check comes before any parsing, so an
oversized payload costs nothing.

Two paths give the same outcomes: a compiled fast path for payloads whose fields are all known
and plainly valid (the common case), and the generic path, which walks the schema and names
the first broken rule.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import NamedTuple

import orjson

from devices.construct import fast_constructor
from devices.errors import Ignored, Reason, Rejected
from devices.fastpath import FastBuilder, compile_record
from devices.limits import DEFAULT_LIMITS, Limits
from devices.message import Channel, Deposit, Fill, Item, Message, Presence, Status, Topic
from devices.schema import DEPOSIT_ITEMS, ITEM, MAX_ITEMS, SEQ, SPECS, Record, describe
from devices.timestamps import check_window, received_ms, ts_to_ms
from devices.topics import parse_topic

_ONLINE = Presence(online=True)
_OFFLINE = Presence(online=False)
_DEPOSIT = Channel.DEPOSIT
_new_message = fast_constructor(Message)
_BODIES: dict[Channel, type[Fill | Status | Deposit]] = {
    Channel.FILL: Fill,
    Channel.STATUS: Status,
    Channel.DEPOSIT: Deposit,
}
FAST_PATH = True
"""Tests switch the fast path off to check that both paths give identical outcomes."""
_fast_item = compile_record(ITEM, Item)
_ITEM_KNOWN = frozenset(ITEM.fields)


class _Route(NamedTuple):
    topic: Topic
    spec: Record
    fast: FastBuilder
    known: frozenset[str]  # every name the channel's payload may carry
    depth: int  # the deepest a payload with only known fields can nest
    build: Callable[..., Fill | Status | Deposit]


def _compile(spec: Record, channel: Channel) -> tuple[FastBuilder, frozenset[str], int]:
    body = _BODIES[channel]
    if channel is _DEPOSIT:
        return compile_record(spec, body, ("items",)), frozenset(spec.fields) | spec.skip, 3
    nested = any(name in spec.fields for name in ("faults", "bins"))
    return compile_record(spec, body), frozenset(spec.fields) | spec.skip, 2 if nested else 1


_COMPILED = {key: _compile(spec, key[1]) for key, spec in SPECS.items()}


@lru_cache(maxsize=65536)
def _route(topic: str) -> Topic | _Route:
    """The parsed topic, with its channel's schema and validators unless it is ``state``."""
    t = parse_topic(topic)
    if t.channel is Channel.STATE:
        return t
    key = (t.kind, t.channel)
    fast, known, depth = _COMPILED[key]
    return _Route(t, SPECS[key], fast, known, depth, fast_constructor(_BODIES[key[1]]))


def decode(
    topic: str, payload: bytes, received_at: datetime, limits: Limits = DEFAULT_LIMITS
) -> Message:
    """Validate one MQTT message against the device contract.

    ``received_at`` (timezone-aware) anchors the ``ts`` window and is the time of ``state``
    messages. Raises :class:`~devices.Rejected` for anything outside the contract and
    :class:`~devices.Ignored` for messages that are not device messages; never anything else
    for any topic and payload (a naive ``received_at`` is a caller bug: ``ValueError``).
    """
    now_ms = received_ms(received_at)
    route = _route(topic)
    if type(payload) is not bytes:  # bytearray, memoryview: some clients hand out views
        payload = bytes(payload)
    size = len(payload)
    if size > limits.max_payload_bytes:
        raise Rejected(
            Reason.TOO_LARGE, f"payload is {size} bytes, limit {limits.max_payload_bytes}"
        )
    if type(route) is Topic:
        return _state(route, topic, payload, now_ms)
    assert type(route) is _Route
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        raise _classify(payload, e) from None
    if type(doc) is not dict:
        raise Rejected(Reason.NOT_OBJECT, f"payload must be a JSON object, got {describe(doc)}")

    # Fast path: only known fields, all plainly valid and ts, seq, device_id of plain types,
    # so neither depth nor field order can change the outcome; what remains to check is
    # identity and time.
    ts = doc.get("ts")
    if (
        FAST_PATH
        and route.depth <= limits.max_depth
        and (type(ts) is int or type(ts) is str)
        and type(doc.get("seq")) is int
        and type(doc.get("device_id", "")) is str
        and doc.keys() <= route.known
    ):
        if route.topic.channel is _DEPOSIT:
            items = _fast_items(doc.get("items"))
            body = None if items is None else route.fast(doc, items)
        else:
            body = route.fast(doc)
        if body is not None:
            ts_ms, seq = _stamp(doc, route, now_ms, limits)
            return _new_message(route.topic, ts_ms, seq, body)
    return _generic(doc, payload, route, now_ms, limits)


def _generic(
    doc: dict[str, object], payload: bytes, route: _Route, now_ms: int, limits: Limits
) -> Message:
    max_depth = limits.max_depth
    # Each container opens with { or [, so fewer brackets than the limit (strings included)
    # proves the depth without walking the document.
    if payload.count(b"{") + payload.count(b"[") > max_depth and not _depth_within(doc, max_depth):
        raise Rejected(Reason.TOO_DEEP, f"payload nests deeper than {max_depth} levels")
    ts_ms, seq = _stamp(doc, route, now_ms, limits)
    extra: list[str] = []
    fields = route.spec.validate(doc, "", extra, required=False)
    if route.topic.channel is _DEPOSIT:
        fields["items"] = DEPOSIT_ITEMS.check_items(doc["items"], "items", extra)
    body = route.build(**fields)
    if not extra:
        return _new_message(route.topic, ts_ms, seq, body)
    names = tuple(sorted(set(extra)))
    if limits.strict:
        more = f" and {len(names) - 1} more" if len(names) > 1 else ""
        raise Rejected(
            Reason.UNKNOWN_FIELD, f"unknown field {names[0]!r} (strict mode){more}", field=names[0]
        )
    return _new_message(route.topic, ts_ms, seq, body, names)


def _stamp(doc: dict[str, object], route: _Route, now_ms: int, limits: Limits) -> tuple[int, int]:
    """Identity, required fields and time: ``device_id``, then ``ts`` (in its window), ``seq``."""
    dev = doc.get("device_id")
    if dev is not None and dev != route.topic.device_id:
        if type(dev) is not str:
            raise Rejected(
                Reason.WRONG_TYPE,
                f"device_id must be a string, got {describe(dev)}",
                field="device_id",
            )
        raise Rejected(
            Reason.DEVICE_MISMATCH,
            f"payload device_id {describe(dev)} differs from the topic's {route.topic.device_id!r}",
            field="device_id",
        )
    ts = doc.get("ts")
    seq = doc.get("seq")
    if ts is None or seq is None:
        name = "ts" if ts is None else "seq"
        raise Rejected(Reason.MISSING_FIELD, f"required field {name} is missing", field=name)
    route.spec.require(doc, "")
    ts_ms = ts_to_ms(ts)
    check_window(ts_ms, now_ms, limits.max_age_ms, limits.max_future_ms)
    return ts_ms, SEQ.check(seq, "seq")


def _fast_items(value: object) -> tuple[Item, ...] | None:
    """The deposit's items when all are plainly valid, else None (the generic path decides)."""
    if type(value) is not list or not 0 < len(value) <= MAX_ITEMS:
        return None
    out = []
    for entry in value:
        if type(entry) is not dict or not entry.keys() <= _ITEM_KNOWN:
            return None
        item = _fast_item(entry)
        if item is None:
            return None
        out.append(item)
    return tuple(out)


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
