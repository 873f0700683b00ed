"""The decoded, validated form of one device message.

Immutable and fully checked: once a :class:`Message` exists, every value in it is within
the contract, so encoders and alert rules need no defensive code.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    ECOBOX = "ecobox"
    RVM = "rvm"


class Channel(StrEnum):
    FILL = "fill"
    STATUS = "status"
    STATE = "state"
    DEPOSIT = "deposit"


CHANNELS: dict[Kind, frozenset[Channel]] = {
    Kind.ECOBOX: frozenset({Channel.FILL, Channel.STATUS, Channel.STATE}),
    Kind.RVM: frozenset({Channel.DEPOSIT, Channel.STATUS, Channel.STATE}),
}


def format_topic(region: str, kind: str, device_id: str, channel: str) -> str:
    """The topic a device publishes ``channel`` on: the inverse of :func:`parse_topic`.

    Not validated here (the simulator builds wrong topics on purpose); ``parse_topic`` judges.
    """
    return f"taza/v1/{region}/{kind}/{device_id}/{channel}"


@dataclass(frozen=True, slots=True)
class Topic:
    region: str
    kind: Kind
    device_id: str
    channel: Channel

    def __str__(self) -> str:
        return format_topic(self.region, self.kind, self.device_id, self.channel)


@dataclass(frozen=True, slots=True)
class Fill:
    """ecobox/fill: one ultrasonic reading."""

    fill_pct: float
    distance_mm: float | None = None
    temperature_c: float | None = None
    tilt_deg: float | None = None


@dataclass(frozen=True, slots=True)
class Status:
    """ecobox/status and rvm/status: device health. ``bins`` and ``mode`` are RVM-only."""

    battery_v: float | None = None
    battery_pct: float | None = None
    rssi_dbm: float | None = None
    temperature_c: float | None = None
    uptime_s: int | None = None
    firmware: str | None = None
    faults: tuple[str, ...] = ()
    bins: tuple[tuple[str, float], ...] = ()  # (material, fill percent), sorted by material
    mode: str | None = None


@dataclass(frozen=True, slots=True)
class Item:
    material: str
    count: int
    volume_ml: int | None = None


@dataclass(frozen=True, slots=True)
class Deposit:
    """rvm/deposit: one customer transaction."""

    txn_id: str
    items: tuple[Item, ...]
    rejected: int = 0
    refund_minor: int = 0
    currency: str = "KZT"


@dataclass(frozen=True, slots=True)
class Presence:
    """state: the retained online/offline message (Last Will ``offline``)."""

    online: bool


Body = Fill | Status | Deposit | Presence


@dataclass(frozen=True, slots=True)
class Message:
    """One accepted message.

    ``ts_ms`` is the device's timestamp in epoch milliseconds (for ``state``, which carries
    none, the receive time). ``seq`` is ``None`` only for ``state``. ``extra_fields`` names
    unknown payload keys that were ignored (counted, not stored).
    """

    topic: Topic
    ts_ms: int
    seq: int | None
    body: Body
    extra_fields: tuple[str, ...] = ()
