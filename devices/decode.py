"""bytes on a topic -> a validated :class:`~devices.Message`, or a precise rejection.

The order of checks is part of the contract (a payload that breaks several rules gets the
first reason): topic, size, UTF-8 / JSON, object, depth, ``device_id``, ``ts`` / ``seq`` and
the channel's other required fields present, ``ts`` and its window, ``seq``, the other fields
in payload order, unknown fields (strict mode). The size check comes before any parsing, so an
oversized payload costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import lru_cache

import orjson

from devices.construct import fast_constructor
from devices.errors import Ignored, Reason, Rejected
from devices.limits import DEFAULT_LIMITS, Limits
from devices.message import Channel, Deposit, Fill, Message, Presence, Status, Topic
from devices.schema import DEPOSIT_ITEMS, SEQ, SPECS, Record, describe
from devices.timestamps import check_window, received_ms, ts_to_ms
from devices.topics import parse_topic

_ONLINE = Presence(online=True)
_OFFLINE = Presence(online=False)
_new_message = fast_constructor(Message)
_BUILDERS: dict[Channel, Callable[..., Fill | Status | Deposit]] = {
    Channel.FILL: fast_constructor(Fill),
    Channel.STATUS: fast_constructor(Status),
    Channel.DEPOSIT: fast_constructor(Deposit),
}

_Route = tuple[Topic, Record | None, Callable[..., Fill | Status | Deposit] | None]


@lru_cache(maxsize=65536)
def _route(topic: str) -> _Route:
    """The parsed topic with its channel's schema and body constructor (None for ``state``)."""
    t = parse_topic(topic)
    if t.channel is Channel.STATE:
        return t, None, None
    return t, SPECS[(t.kind, t.channel)], _BUILDERS[t.channel]


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
    t, spec, build = _route(topic)
    size = len(payload)
    if size > limits.max_payload_bytes:
        raise Rejected(
            Reason.TOO_LARGE, f"payload is {size} bytes, limit {limits.max_payload_bytes}"
        )
    if spec is None or build is None:
        return _state(t, topic, payload, now_ms)

    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        raise _classify(payload, e) from None
    if type(doc) is not dict:
        raise Rejected(Reason.NOT_OBJECT, f"payload must be a JSON object, got {describe(doc)}")
    max_depth = limits.max_depth
    # Each container opens with { or [, so fewer brackets than the limit (strings included)
    # proves the depth without walking the document.
    if payload.count(b"{") + payload.count(b"[") > max_depth and not _depth_within(doc, max_depth):
        raise Rejected(Reason.TOO_DEEP, f"payload nests deeper than {max_depth} levels")

    dev = doc.get("device_id")
    if dev is not None and dev != t.device_id:
        if type(dev) is not str:
            raise Rejected(
                Reason.WRONG_TYPE,
                f"device_id must be a string, got {describe(dev)}",
                field="device_id",
            )
        raise Rejected(
            Reason.DEVICE_MISMATCH,
            f"payload device_id {describe(dev)} differs from the topic's {t.device_id!r}",
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
    seq_v = SEQ.check(seq, "seq")
    extra: list[str] = []
    fields = spec.validate(doc, "", extra, required=False)
    if t.channel is Channel.DEPOSIT:
        fields["items"] = DEPOSIT_ITEMS.check_items(doc["items"], "items", extra)
    body = build(**fields)

    if extra:
        extra_t = tuple(sorted(set(extra)))
        if limits.strict:
            raise Rejected(
                Reason.UNKNOWN_FIELD,
                f"unknown field {extra_t[0]!r} (strict mode)"
                + (f" and {len(extra_t) - 1} more" if len(extra_t) > 1 else ""),
                field=extra_t[0],
            )
        return _new_message(t, ts_ms, seq_v, body, extra_t)
    return _new_message(t, ts_ms, seq_v, body)


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
