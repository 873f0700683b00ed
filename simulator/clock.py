"""The simulated clock and the small time helpers the CLI needs.

A run maps wall time onto simulated time linearly:
``sim(w) = sim_start + (w - wall_start) * speed``.
By default the mapping is anchored at the *end* of the run (the simulated clock reaches the real
clock exactly when the run ends), so no payload ever carries a timestamp in the future and a 60 s
run at ``--speed 600`` covers the 10 hours before its end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from devices.timeparse import parse_duration, parse_instant

__all__ = ["SimClock", "epoch_ms", "parse_duration", "parse_instant", "rfc3339_ms"]


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
