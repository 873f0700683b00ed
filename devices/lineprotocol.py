"""A :class:`~devices.Message` -> InfluxDB line protocol (ns precision), the public schema.

Hot path: one call per message, so a topic's tag set is built once and cached (bounded), and
lines are built with f-strings. Every value goes through :mod:`devices.escaping`, the one
module with the escaping rules (what influxd 1.6.7 parses; a value it cannot hold is a
``ValueError``); measurements and keys here are constants. Float fields are always in float
syntax and integers carry ``i``, so a field never changes type between points.

Timestamp of every point: ``ts_ms * 10**6 + (seq % 10_000) * 100 + item_index`` ns, so two
messages of one device in the same millisecond (different ``seq``) never overwrite each other,
while a redelivered copy writes identical points.
"""

from __future__ import annotations

from typing import Final

from devices.escaping import (
    float_field,
    int_field,
    string_field,
    tag_value,
    tag_value_uncached,
)
from devices.message import Deposit, Fill, Message, Presence, Status, Topic
from devices.registry import DeviceInfo
from devices.schema import MAX_ITEMS
from devices.timestamps import ms_to_ns

SEQ_SLOTS: Final = 10_000
SLOT_NS: Final = 100
_MIN_NS: Final = -9_223_372_036_854_775_806
_MAX_NS: Final = 9_223_372_036_854_775_806
_SAFE_MS: Final = 4_000_000_000_000
"""Within ± this (the year 128,700), a point's ns are inside both the database's range and
the ints compiled code keeps unboxed: no comparison with ``_MIN_NS`` / ``_MAX_NS`` needed,
which do not fit that form (two such comparisons were most of ``timestamp_ns``)."""
_SAFE_ITEM: Final = 1 << 30

__all__ = ["encode", "float_field", "int_field", "string_field", "tag_value", "timestamp_ns"]


def timestamp_ns(message: Message, item_index: int = 0) -> int:
    """The time of a message's points; see the module docstring for why it has this shape."""
    seq = message.seq
    ts_ms = message.ts_ms
    ns = ms_to_ns(ts_ms) + item_index
    if seq is not None:
        ns += (seq % SEQ_SLOTS) * SLOT_NS
    if -_SAFE_MS <= ts_ms <= _SAFE_MS and 0 <= item_index < _SAFE_ITEM:
        return ns
    if not _MIN_NS <= ns <= _MAX_NS:
        raise ValueError(f"ts {message.ts_ms} ms is outside the database's time range")
    return ns


def encode(message: Message, device: DeviceInfo | None = None) -> list[str]:
    """The line-protocol lines of one message (no trailing newline).

    Tags ``device_id``, ``kind``, ``region`` come from the topic; ``fraction`` and ``site``
    from ``device`` when given (registered devices). Tags are written sorted by key, which is
    the order InfluxDB stores them in.
    """
    t = message.topic
    cached = _tags_cache.get(id(t))
    if cached is not None and cached[0] is t and cached[1] is device:
        tags, cut = cached[2], cached[3]
    else:
        tags, cut = _tags(t, device)
    ts = timestamp_ns(message)
    body = message.body
    seq = message.seq

    if type(body) is Fill:
        f = f"fill_pct={float_field(body.fill_pct)}"
        if body.distance_mm is not None:
            f += f",distance_mm={float_field(body.distance_mm)}"
        if body.temperature_c is not None:
            f += f",temperature_c={float_field(body.temperature_c)}"
        if body.tilt_deg is not None:
            f += f",tilt_deg={float_field(body.tilt_deg)}"
        return [f"fill,{tags} {f},seq={_seq(seq)} {ts}"]

    if type(body) is Status:
        f = ""
        if body.battery_v is not None:
            f += f"battery_v={float_field(body.battery_v)},"
        if body.battery_pct is not None:
            f += f"battery_pct={float_field(body.battery_pct)},"
        if body.rssi_dbm is not None:
            f += f"rssi_dbm={float_field(body.rssi_dbm)},"
        if body.temperature_c is not None:
            f += f"temperature_c={float_field(body.temperature_c)},"
        if body.uptime_s is not None:
            f += f"uptime_s={int_field(body.uptime_s)},"
        if body.firmware is not None:
            f += f"firmware={string_field(body.firmware)},"
        f += (
            f"faults={string_field(','.join(sorted(body.faults)))},fault_count={len(body.faults)}i,"
        )
        if body.mode is not None:
            f += f"mode={string_field(body.mode)},"
        lines = [f"status,{tags} {f}seq={_seq(seq)} {ts}"]
        head, tail = tags[:cut], tags[cut + 1 :]
        for material, pct in body.bins:
            lines.append(
                f"rvm_bin,{head},material={tag_value(material)},{tail} "
                f"fill_pct={float_field(pct)} {ts}"
            )
        return lines

    if type(body) is Deposit:
        if not 0 < len(body.items) <= MAX_ITEMS:
            raise ValueError(f"a deposit has 1..{MAX_ITEMS} items, got {len(body.items)}")
        txn = string_field(body.txn_id)
        head, tail = tags[:cut], tags[cut + 1 :]
        lines = []
        total = 0
        for i, item in enumerate(body.items):
            total += item.count
            vol = "" if item.volume_ml is None else f",volume_ml={int_field(item.volume_ml)}"
            lines.append(
                f"deposit,{head},material={tag_value(item.material)},{tail} "
                f"count={int_field(item.count)}{vol},txn_id={txn},item={i}i {ts + i}"
            )
        lines.append(
            f"deposit,{tags} txn_id={txn},items={int_field(total)},"
            f"rejected={int_field(body.rejected)},refund_minor={int_field(body.refund_minor)},"
            f"currency={string_field(body.currency)},seq={_seq(seq)} {ts}"
        )
        return lines

    if type(body) is Presence:
        if body.online:
            return [f'state,{tags} online=true,status="online" {ts}']
        return [f'state,{tags} online=false,status="offline" {ts}']

    raise TypeError(f"cannot encode {type(body).__name__}")


_tags_cache: Final[dict[int, tuple[Topic, DeviceInfo | None, str, int]]] = {}
_TAGS_CACHE_MAX: Final = 32768
"""Tag sets of the topics seen last. Bounded, and cleared when full, so a fleet of any size
costs at most this many entries (≈ 0.3 KB each with their Topic); a miss costs ≈ 1 µs."""


def _tags(t: Topic, device: DeviceInfo | None) -> tuple[str, int]:
    """The tag set (sorted by key: device_id, fraction, kind, material, region, site) and where
    ``material`` goes into it (``tags[:cut]`` before, ``tags[cut + 1:]`` after), cached per
    topic and device object: the decoder reuses one Topic per topic name and the registry one
    DeviceInfo per device, so identity is the key (the entry holds both objects, so their ids
    cannot be reused while cached)."""
    head = f"device_id={tag_value_uncached(t.device_id)}"
    tail = f"region={tag_value(t.region)}"
    if device is not None:
        if device.fraction:
            head += f",fraction={tag_value(device.fraction)}"
        if device.site:
            tail += f",site={tag_value(device.site)}"
    head += f",kind={tag_value(t.kind)}"
    tags = f"{head},{tail}"
    if len(_tags_cache) >= _TAGS_CACHE_MAX:
        _tags_cache.clear()
    _tags_cache[id(t)] = (t, device, tags, len(head))
    return tags, len(head)


def _seq(seq: int | None) -> str:
    if seq is None:
        raise ValueError("a JSON channel's message needs a seq")
    return int_field(seq)
