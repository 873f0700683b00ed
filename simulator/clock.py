"""The simulated clock and the small time helpers the CLI needs.

A run maps wall time onto simulated time linearly:
``sim(w) = sim_start + (w - wall_start) * speed``.
By default the mapping is anchored at the *end* of the run (the simulated clock reaches the real
clock exactly when the run ends), so no payload ever carries a timestamp in the future and a 60 s
run at ``--speed 600`` covers the 10 hours before its end.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """``"60s"``, ``"10m"``, ``"1.5h"``, ``"2d"``, ``"250ms"`` or a bare number of seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 60s, 10m, 2h, 1d)")
    value = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if value < 0:
        raise ValueError(f"negative duration: {text!r}")
    return value


def parse_instant(text: str) -> datetime:
    """An RFC 3339 / ISO 8601 instant; without an offset it is taken as UTC."""
    value = text.strip()
    if value.lower() == "now":
        return datetime.now(UTC)
    if value.endswith("Z") or value.endswith("z"):
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"not a date/time: {text!r} (use e.g. 2025-03-01T08:00:00+05:00)") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def epoch_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def rfc3339_ms(ts_ms: int, offset_minutes: int = 0) -> str:
    """Format epoch milliseconds as RFC 3339 with millisecond precision and the given offset.

    Built from integers so that parsing the string gives back exactly ``ts_ms``.
    """
    tz = UTC if offset_minutes == 0 else timezone(timedelta(minutes=offset_minutes))
    seconds, millis = divmod(ts_ms, 1000)
    moment = datetime.fromtimestamp(seconds, tz)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}"
    if offset_minutes == 0:
        return text + "Z"
    sign = "+" if offset_minutes > 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


@dataclass(frozen=True, slots=True)
class SimClock:
    """Linear wall → simulated time mapping (all values in epoch seconds)."""

    wall_start: float
    sim_start: float
    speed: float

    def sim_at(self, wall: float) -> float:
        return self.sim_start + (wall - self.wall_start) * self.speed

    def wall_at(self, sim: float) -> float:
        return self.wall_start + (sim - self.sim_start) / self.speed

    def now(self) -> float:
        return self.sim_at(time.time())

    @classmethod
    def plan(
        cls,
        *,
        speed: float,
        duration_s: float | None,
        start: datetime | None,
        wall_start: float | None = None,
    ) -> tuple[SimClock, float | None]:
        """Build the clock and return it with the run's wall duration (None: until stopped).

        - ``duration`` and no ``start``: the simulated clock ends at the real end of the run.
        - ``start`` given: the simulated clock starts there; without a duration the run ends when
          simulated time catches up with real time (only possible for ``speed > 1``).
        - neither: only at ``speed <= 1`` (a live fleet), which never runs ahead of real time; a
          slow-motion run (``speed < 1``) starts at the real clock and falls behind it.
        """
        if speed <= 0:
            raise ValueError("--speed must be positive")
        w0 = time.time() if wall_start is None else wall_start
        if start is not None:
            s0 = start.timestamp()
            if duration_s is None and speed > 1:
                lag = w0 - s0
                if lag <= 0:
                    raise ValueError("--start is in the future; give --duration")
                duration_s = lag / (speed - 1)
            return cls(w0, s0, speed), duration_s
        if duration_s is not None and speed >= 1:
            w1 = w0 + duration_s
            return cls(w0, w1 - duration_s * speed, speed), duration_s
        if speed > 1:
            raise ValueError(
                "--speed above 1 needs --duration (or --start): otherwise the simulated clock "
                "would run ahead of the real one and every timestamp would lie in the future"
            )
        return cls(w0, w0, speed), duration_s
