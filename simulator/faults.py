"""Deliberate faults: how a device message is broken on purpose, and what the contract says.

Each malformed kind turns a valid message into one that ``devices.decode`` must reject, and
names the rejection reason the contract gives for it. The message keeps its ``ts`` and ``seq``
(where the kind allows), so ``taza-sim verify`` can tell whether a faulty message slipped into
the database anyway ("wrongly accepted").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import orjson

from devices import FAULT_CODES, MATERIALS, Reason, format_topic

# Labels of the faults that keep a message valid: they are flagged in the log, never rejected
# by the contract (a clock skew beyond 5 minutes into the future is the exception: the verifier
# decides with the contract's own rules).
DUPLICATE = "duplicate"
OUT_OF_ORDER = "out_of_order"
CLOCK_SKEW = "clock_skew"
OFFLINE = "offline"  # sent late, from the device's store-and-forward backlog

_NAN = "__taza_nan__"
_UNKNOWN_MATERIAL = "plutonium"
_UNKNOWN_FAULT = "on_fire"
if _UNKNOWN_MATERIAL in MATERIALS or _UNKNOWN_FAULT in FAULT_CODES:  # pragma: no cover
    raise ImportError("bad_value needs a material and a fault code the contract does not know")
_FUTURE_S = 400 * 86400  # far beyond the 5-minute window whatever the simulated start


@dataclass(frozen=True, slots=True)
class Broken:
    topic: str
    payload: bytes
    reason: Reason  # what the contract says about the broken message


@dataclass(frozen=True, slots=True)
class Context:
    """What a fault needs to know about the message it breaks."""

    topic: str
    channel: str
    kind: str
    device_id: str
    region: str
    body: dict[str, object]  # ts, seq, [device_id], fields — in payload order
    ts_ms: int
    rng: np.random.Generator


def _dump(body: dict[str, object]) -> bytes:
    return orjson.dumps(body).replace(f'"{_NAN}"'.encode(), b"NaN")


def _numeric_field(ctx: Context) -> str:
    for name in ("fill_pct", "temperature_c", "battery_pct", "rssi_dbm", "refund_minor"):
        if name in ctx.body:
            return name
    return "seq"


def _not_json(ctx: Context) -> Broken:
    return Broken(ctx.topic, _dump(ctx.body)[:-1], Reason.NOT_JSON)  # truncated: no closing brace


def _nan_literal(ctx: Context) -> Broken:
    body = dict(ctx.body)
    # A deposit has no float field: a NaN refund is just as invalid.
    name = next((n for n in ("temperature_c", "fill_pct", "rssi_dbm") if n in body), "refund_minor")
    body[name] = _NAN
    return Broken(ctx.topic, _dump(body), Reason.NOT_JSON)


def _wrong_type(ctx: Context) -> Broken:
    body = dict(ctx.body)
    name = _numeric_field(ctx)
    body[name] = str(body[name])  # "42.5" is not 42.5: no lax coercion
    return Broken(ctx.topic, _dump(body), Reason.WRONG_TYPE)


def _out_of_range(ctx: Context) -> Broken:
    body = dict(ctx.body)
    if "fill_pct" in body:
        body["fill_pct"] = round(float(ctx.rng.uniform(101.0, 250.0)), 1)
    elif "battery_pct" in body:
        body["battery_pct"] = round(float(ctx.rng.uniform(101.0, 200.0)), 1)
    elif "rssi_dbm" in body:
        body["rssi_dbm"] = float(ctx.rng.integers(1, 40))
    elif "items" in body:
        body["rejected"] = -int(ctx.rng.integers(1, 10))
    else:
        body["temperature_c"] = 999.0
    return Broken(ctx.topic, _dump(body), Reason.OUT_OF_RANGE)


def _missing_field(ctx: Context) -> Broken:
    body = dict(ctx.body)
    if "fill_pct" in body:
        del body["fill_pct"]
    elif "txn_id" in body:
        del body["txn_id"]
    else:  # status has no required field but ts/seq; ts goes, seq stays for the verifier
        del body["ts"]
    return Broken(ctx.topic, _dump(body), Reason.MISSING_FIELD)


def _not_object(ctx: Context) -> Broken:
    return Broken(ctx.topic, b"[" + _dump(ctx.body) + b"]", Reason.NOT_OBJECT)


def _bad_ts(ctx: Context) -> Broken:
    body = dict(ctx.body)
    seconds = ctx.ts_ms // 1000
    naive = np.datetime64(seconds, "s").astype(str)  # 2025-03-01T08:00:00: no offset
    body["ts"] = str(naive)
    return Broken(ctx.topic, _dump(body), Reason.BAD_TS)


def _ts_in_future(ctx: Context) -> Broken:
    body = dict(ctx.body)
    body["ts"] = ctx.ts_ms + _FUTURE_S * 1000
    return Broken(ctx.topic, _dump(body), Reason.TS_IN_FUTURE)


def _device_mismatch(ctx: Context) -> Broken:
    body = dict(ctx.body)
    body["device_id"] = ctx.device_id + "-x"
    return Broken(ctx.topic, _dump(body), Reason.DEVICE_MISMATCH)


def _bad_channel(ctx: Context) -> Broken:
    wrong = "deposit" if ctx.kind == "ecobox" else "fill"
    topic = format_topic(ctx.region, ctx.kind, ctx.device_id, wrong)
    return Broken(topic, _dump(ctx.body), Reason.BAD_CHANNEL)


def _bad_topic(ctx: Context) -> Broken:
    wrong = "bin" if ctx.kind == "ecobox" else "vending"  # no such kind; still 6 levels,
    topic = format_topic(ctx.region, wrong, ctx.device_id, ctx.channel)  # so intake sees it
    return Broken(topic, _dump(ctx.body), Reason.BAD_TOPIC)


def _not_utf8(ctx: Context) -> Broken:
    body = dict(ctx.body)
    marker = "__taza_bad_utf8__"
    if "firmware" in body:
        body["firmware"] = marker
    elif "txn_id" in body:
        body["txn_id"] = marker
    else:
        body["note"] = marker
    raw = _dump(body).replace(marker.encode(), b"caf\xe9")  # Latin-1, not UTF-8
    return Broken(ctx.topic, raw, Reason.NOT_UTF8)


def _too_large(ctx: Context) -> Broken:
    body = dict(ctx.body)
    body["debug"] = "x" * 5000  # above the 4096-byte default limit
    return Broken(ctx.topic, _dump(body), Reason.TOO_LARGE)


def _too_deep(ctx: Context) -> Broken:
    body = dict(ctx.body)
    body["diag"] = {"a": {"b": {"c": {"d": {"e": 1}}}}}
    return Broken(ctx.topic, _dump(body), Reason.TOO_DEEP)


def _bad_value(ctx: Context) -> Broken:
    body = dict(ctx.body)
    items = body.get("items")
    if isinstance(items, list) and items and isinstance(items[0], dict):
        first = dict(items[0])
        first["material"] = _UNKNOWN_MATERIAL
        body["items"] = [first, *items[1:]]
    else:
        body["faults"] = [_UNKNOWN_FAULT]  # (fill has no enumerated field: not applicable)
    return Broken(ctx.topic, _dump(body), Reason.BAD_VALUE)


MALFORMED: dict[str, Callable[[Context], Broken]] = {
    "not_json": _not_json,
    "nan_literal": _nan_literal,
    "wrong_type": _wrong_type,
    "out_of_range": _out_of_range,
    "missing_field": _missing_field,
    "not_object": _not_object,
    "bad_ts": _bad_ts,
    "ts_in_future": _ts_in_future,
    "device_mismatch": _device_mismatch,
    "bad_channel": _bad_channel,
    "bad_topic": _bad_topic,
    "not_utf8": _not_utf8,
    "too_large": _too_large,
    "too_deep": _too_deep,
    "bad_value": _bad_value,
}

# Kinds that do not apply to a channel (the fault would not break the message).
_NOT_FOR: dict[str, frozenset[str]] = {
    "fill": frozenset({"bad_value"}),
}


def kinds_for(channel: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    skip = _NOT_FOR.get(channel, frozenset())
    return tuple(k for k in allowed if k not in skip)


def parse_kinds(spec: str) -> tuple[str, ...]:
    if spec.strip() in ("", "all"):
        return tuple(MALFORMED)
    kinds = tuple(k.strip() for k in spec.split(",") if k.strip())
    unknown = [k for k in kinds if k not in MALFORMED]
    if unknown:
        raise ValueError(f"unknown malformed kind(s) {unknown}; known: {', '.join(MALFORMED)}")
    return kinds
