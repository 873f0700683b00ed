"""Topic names: ``taza/v1/{region}/{kind}/{device_id}/{channel}``.

The topic is the device's identity, so it is checked before anything in the payload is
trusted. Parsed topics are cached: a fleet has a bounded set of topics and every message
repeats one of them.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

from devices.errors import Ignored, Reason, Rejected
from devices.message import CHANNELS, Channel, Kind, Topic, format_topic

__all__ = ["INTAKE_FILTER", "PREFIX", "RESERVED_REGIONS", "format_topic", "parse_topic"]

PREFIX: Final = "taza/v1/"
INTAKE_FILTER: Final = "taza/v1/#"
"""Everything under ``taza/v1/``: a wrongly shaped topic is dead-lettered (``bad_topic``),
never silently missed by a narrower filter."""
RESERVED_REGIONS: Final = frozenset({"alerts", "_deadletter", "_feedback"})
"""Names in the region slot that belong to taza itself (``taza/v1/alerts/...``, its dead-letter
republishing ``taza/v1/_deadletter/...``, and ``taza/v1/_feedback/...`` reserved): ignored,
so what taza publishes never comes back in as input, even under a ``taza/#`` filter."""

REGION_RE: Final = re.compile(r"[a-z][a-z0-9-]{0,31}")
DEVICE_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

_KINDS: Final = {k.value: k for k in Kind}
_CHANNELS: Final = {c.value: c for c in Channel}


def parse_topic(topic: str) -> Topic:
    """Validate a topic name: raise :class:`Rejected`, or :class:`Ignored` when reserved."""
    return _parse(topic)


@lru_cache(maxsize=32768)
def _parse(topic: str) -> Topic:
    parts = topic.split("/")
    if len(parts) >= 3 and parts[0] == "taza" and parts[1] == "v1" and parts[2] in RESERVED_REGIONS:
        raise Ignored(topic, f"reserved namespace taza/v1/{parts[2]}/")
    if len(parts) != 6 or parts[0] != "taza" or parts[1] != "v1":
        raise Rejected(
            Reason.BAD_TOPIC,
            f"topic {_show(topic)} is not taza/v1/{{region}}/{{kind}}/{{device_id}}/{{channel}}",
        )
    _, _, region, kind_s, device_id, channel_s = parts
    if REGION_RE.fullmatch(region) is None:
        raise Rejected(
            Reason.BAD_TOPIC,
            f"region {_show(region)} does not match ^[a-z][a-z0-9-]{{0,31}}$",
            field="region",
        )
    kind = _KINDS.get(kind_s)
    if kind is None:
        raise Rejected(Reason.BAD_TOPIC, f"kind {_show(kind_s)} is not ecobox or rvm", field="kind")
    if DEVICE_ID_RE.fullmatch(device_id) is None:
        raise Rejected(
            Reason.BAD_TOPIC,
            f"device_id {_show(device_id)} does not match ^[A-Za-z0-9][A-Za-z0-9_-]{{0,63}}$",
            field="device_id",
        )
    channel = _CHANNELS.get(channel_s)
    if channel is None or channel not in CHANNELS[kind]:
        allowed = ", ".join(sorted(CHANNELS[kind]))
        raise Rejected(
            Reason.BAD_CHANNEL,
            f"channel {_show(channel_s)} is not one of {kind}'s channels ({allowed})",
            field="channel",
        )
    return Topic(region, kind, device_id, channel)


def _show(s: str, limit: int = 80) -> str:
    """repr() escapes control characters, so details are safe to log; long input is cut."""
    return repr(s) if len(s) <= limit else repr(s[:limit]) + "…"
