"""Planner settings, which bins are due, and the request the solvers take.

``PlanSettings`` is nested by ``ingest/config.py`` as ``[plan]`` in TOML and ``TAZA_PLAN_*`` in the
environment. Defaults marked *assumption* have no public source; set them to your fleet's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, timezone

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ingest.plan.errors import PlanUnavailable
from ingest.plan.model import Bin, Depot, Due, PlanRequest

DEFAULT_DEPOTS = {
    # assumption: a yard a few km north of the simulator's city centre, by the ring road
    "almaty": Depot(lat=43.3320, lon=76.9050, name="Almaty north yard (assumed)"),
    "astana": Depot(lat=51.2240, lon=71.4180, name="Astana north yard (assumed)"),
}


class PlanSettings(BaseModel):
    """How collection plans are made: one set for every region except the depot."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    depots: dict[str, Depot] = Field(
        default_factory=lambda: dict(DEFAULT_DEPOTS),
        description="region → depot, {lat, lon, name} or 'LAT,LON'",
    )
    trucks: int = Field(3, ge=0, le=200, description="trucks per region and shift (assumption)")
    truck_capacity_l: float = Field(
        48_000,
        gt=0,
        description="litres of bin contents per truck and trip: a 16 m³ body compacting ~3:1 "
        "(assumption)",
    )
    shift_start: time = Field(time(6, 0), description="crews' shift start, local time")
    shift_end: time = Field(time(14, 0), description="crews' shift end, local time")
    utc_offset_min: int = Field(
        300, ge=-720, le=840, description="local time: Kazakhstan is UTC+5 since 2024-03-01"
    )
    service_time_s: float = Field(120, ge=0, le=3600, description="per bin (assumption)")
    speed_kmh: float = Field(30, gt=0, le=150, description="average driving speed in the city")
    detour_factor: float = Field(1.3, ge=1, le=5, description="road km ÷ straight-line km")
    time_limit_s: float = Field(5, ge=0, le=600, description="OR-Tools' limit; 0: fallback only")
    threshold_pct: float = Field(80, ge=0, le=100, description="a bin at this level is full")
    horizon_h: float = Field(6, ge=0, le=168, description="default look-ahead for forecast bins")
    default_capacity_l: float = Field(
        240, gt=0, description="for a bin whose volume the registry does not give"
    )
    cache_ttl_s: float = Field(30, ge=0, le=3600, description="a region's last plan is reused")
    workers: int = Field(1, ge=1, le=8, description="solver processes")

    @model_validator(mode="after")
    def _check(self) -> PlanSettings:
        if self.shift_start == self.shift_end:
            raise ValueError("shift_start and shift_end are equal: the shift has no time")
        self.depots = {k.lower(): v for k, v in self.depots.items()}
        return self

    @property
    def tz(self) -> timezone:
        return timezone(timedelta(minutes=self.utc_offset_min))

    def shift_window(self, now: datetime) -> tuple[datetime, datetime]:
        """The shift a plan made at ``now`` is for: the current one from ``now`` on, else the
        next. A shift ending at or before its start ends the next day (a night shift)."""
        local = now.astimezone(self.tz)
        for day in (local.date() - timedelta(days=1), local.date(), local.date() + timedelta(1)):
            start = datetime.combine(day, self.shift_start, self.tz)
            end = datetime.combine(day, self.shift_end, self.tz)
            if end <= start:
                end += timedelta(days=1)
            if now < end:
                return max(start, now), end
        raise AssertionError("unreachable: tomorrow's shift ends after now")

    def request(
        self,
        region: str,
        levels: Iterable[FillReading],
        now: datetime,
        *,
        horizon_h: float | None = None,
        trucks: int | None = None,
        time_limit_s: float | None = None,
    ) -> PlanRequest:
        """The planning problem for ``region`` from its current fill levels."""
        depot = self.depots.get(region.lower())
        if depot is None:
            known = ", ".join(sorted(self.depots)) or "none"
            raise PlanUnavailable("unknown_region", f"no depot for {region!r} (known: {known})")
        horizon = self.horizon_h if horizon_h is None else horizon_h
        start, end = self.shift_window(now)
        bins = select_due(
            levels,
            now,
            horizon_h=horizon,
            threshold_pct=self.threshold_pct,
            default_capacity_l=self.default_capacity_l,
        )
        return PlanRequest(
            region=region.lower(),
            depot=depot,
            bins=tuple(bins),
            trucks=self.trucks if trucks is None else trucks,
            truck_capacity_l=self.truck_capacity_l,
            shift_start=start,
            shift_end=end,
            service_time_s=self.service_time_s,
            speed_kmh=self.speed_kmh,
            detour_factor=self.detour_factor,
            time_limit_s=self.time_limit_s if time_limit_s is None else time_limit_s,
            horizon_h=horizon,
            threshold_pct=self.threshold_pct,
        )


@dataclass(frozen=True, slots=True)
class FillReading:
    """What the fleet state knows of an eco-box (the fields of ``GET /api/v1/fill-levels``)."""

    device_id: str
    lat: float
    lon: float
    fill_pct: float
    capacity_l: float | None
    fraction: str | None = None
    site: str | None = None
    forecast_full_at: datetime | None = None


def select_due(
    levels: Iterable[FillReading],
    now: datetime,
    *,
    horizon_h: float,
    threshold_pct: float = 80.0,
    default_capacity_l: float = 240.0,
) -> list[Bin]:
    """The bins to empty, fullest first.

    Due ``now``: at or above the threshold. Due by ``forecast``: below it, with a forecast
    crossing at or before ``now + horizon``. Load is what the truck will find, planned as
    ``capacity_l × max(fill_pct, threshold_pct) / 100`` (at most the volume): a bin due now
    holds at least its current level, a forecast bin is planned as reaching the threshold —
    the level it is predicted to have when the crew is meant to come.
    """
    limit = now + timedelta(hours=horizon_h)
    out: list[Bin] = []
    for lv in levels:
        due: Due
        if not math.isfinite(lv.fill_pct):
            continue  # no level known: the fill-levels view shows it, a plan cannot weigh it
        if lv.fill_pct >= threshold_pct:
            due = "now"
        elif lv.forecast_full_at is not None and _aware(lv.forecast_full_at) <= limit:
            due = "forecast"
        else:
            continue
        cap = lv.capacity_l or default_capacity_l
        out.append(
            Bin(
                device_id=lv.device_id,
                lat=lv.lat,
                lon=lv.lon,
                fill_pct=lv.fill_pct,
                capacity_l=cap,
                fraction=lv.fraction,
                site=lv.site,
                forecast_full_at=None
                if lv.forecast_full_at is None
                else _aware(lv.forecast_full_at),
                due=due,
                load_l=cap * min(100.0, max(lv.fill_pct, threshold_pct)) / 100.0,
            )
        )
    out.sort(key=lambda b: (b.due != "now", -b.fill_pct, b.device_id))
    return out


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
