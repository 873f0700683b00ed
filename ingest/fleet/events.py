"""What the fleet stage tells the rest of the service: alert transitions, collections, anomalies.

Every event carries the device time it belongs to (``ts_ms``, epoch ms) and the exact point time
of the reading it came from (``time_ns``, the same formula as the raw points, see
``devices.lineprotocol.timestamp_ns``), so the wiring can decide live notification vs history
only (``TAZA_ALERT_NOTIFY_MAX_AGE_S``) and the stored points line up with the readings.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from devices.registry import DeviceInfo


class AlertState(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class Severity(StrEnum):
    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"


class AnomalyKind(StrEnum):
    SPIKE = "spike"  # one reading jumped up and the next came back: a bag under the sensor
    FALL_WITHOUT_COLLECTION = "fall_without_collection"  # fell, but not like an emptying
    IMPOSSIBLE_RATE = "impossible_rate"  # rose faster than any bin fills, and stayed
    STUCK = "stuck"  # the same reading again and again


class Cause(StrEnum):
    """Why an alert fired or resolved (the ``cause`` field and payload key)."""

    THRESHOLD = "threshold"
    FORECAST = "forecast"
    FAULT = "fault"
    TEMPERATURE = "temperature"
    TILT = "tilt"
    BATTERY = "battery"
    MODE = "mode"
    STUCK = "stuck"
    SILENT = "silent"
    LAST_WILL = "last_will"
    COLLECTED = "collected"
    BELOW_CLEAR = "below_clear"
    FULL = "full"
    FORECAST_OUT = "forecast_out"
    CLEARED = "cleared"
    BACK_ONLINE = "back_online"


@dataclass(frozen=True, slots=True)
class Source:
    """The device an event is about (one object per device, shared by its events)."""

    device_id: str
    region: str
    kind: str
    info: DeviceInfo | None


@dataclass(frozen=True, slots=True)
class Forecast:
    """Fill rate from the readings since the last collection, and when it reaches ``threshold``."""

    rate_pct_per_h: float
    full_at_ms: int | None  # None: not rising
    threshold_pct: float
    points: int


@dataclass(frozen=True, slots=True)
class AlertTransition:
    """An alert episode started (``firing``) or ended (``resolved``).

    ``since_ms`` is the episode's start and never changes within an episode; ``ts_ms`` is the
    device time of this transition (for ``offline``, the wall clock that judged it).
    """

    source: Source
    alert: str
    state: AlertState
    severity: Severity
    value: float
    threshold: float | None
    since_ms: int
    ts_ms: int
    time_ns: int
    episode: str
    cause: Cause
    forecast: Forecast | None = None

    @property
    def device_time_ms(self) -> int:
        return self.ts_ms


@dataclass(frozen=True, slots=True)
class Collection:
    """A fall only an emptying explains; ``ts_ms`` is the reading that showed it."""

    source: Source
    fill_before_pct: float
    fill_after_pct: float
    ts_ms: int
    time_ns: int

    @property
    def device_time_ms(self) -> int:
        return self.ts_ms


@dataclass(frozen=True, slots=True)
class Anomaly:
    """A reading the sensor's physics forbids: stored as it came, flagged here."""

    source: Source
    anomaly: AnomalyKind
    value: float
    ts_ms: int
    time_ns: int

    @property
    def device_time_ms(self) -> int:
        return self.ts_ms


Event = AlertTransition | Collection | Anomaly


def episode_id(device_id: str, alert: str, since_ms: int) -> str:
    """Stable: the same episode gets the same id after a restart or a replay from history."""
    return f"{device_id}/{alert}/{since_ms}"
