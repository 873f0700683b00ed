"""Physics of an eco-box (a street bin with an ultrasonic fill sensor).

The model is event-driven in simulated time: :meth:`EcoBox.events` yields the readings the
sensor reports (``fill`` every report interval, ``status`` every few reports, and alarms when
something happens), while the bin's true state is integrated between them.

Defaults and their sources are listed in :class:`EcoboxParams` and docs/simulator.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from devices import DeviceInfo
from simulator import profiles
from simulator.fleet import REGIONS, capacity_of, site_of
from simulator.timeline import Timeline

HOUR = 3600.0
DAY = 86400.0


def lognormal_sigma(median: float, p10: float, p90: float) -> float:
    """σ of a lognormal with this median, fitted to both tails (mean of the two estimates)."""
    z90 = 1.2815515655446004
    return (math.log(p90 / median) + math.log(median / p10)) / (2 * z90)


def _unit_lognormal(rng: np.random.Generator, sigma: float) -> float:
    """A lognormal factor with mean 1, so noise never shifts the calibrated mean rate."""
    return float(rng.lognormal(-(sigma**2) / 2.0, sigma))


def local_time(t: float, offset_min: int) -> tuple[int, int]:
    """(weekday 0=Monday, hour 0–23) at epoch second ``t`` in a zone ``offset_min`` from UTC."""
    local = t + offset_min * 60
    days = math.floor(local / DAY)
    return (days + 3) % 7, int((local - days * DAY) // HOUR)  # 1970-01-01 was a Thursday


@dataclass(frozen=True, slots=True)
class EcoboxParams:
    """Every knob of the eco-box model (``# CAL``: CALIBRATION.md, ``# ASSUMED``: no source)."""

    fill_median_pct_day: float = 36.0  # CAL Edinburgh Enevo 2016: median 36 %/day
    fill_p10_pct_day: float = 15.0  # CAL p10
    fill_p90_pct_day: float = 79.0  # CAL p90
    hourly_noise_sigma: float = 0.35  # ASSUMED hour-to-hour variability (lognormal σ)
    daily_noise_sigma: float = 0.20  # ASSUMED day-to-day variability (lognormal σ)
    collection: str = "threshold"  # "threshold" (sensor-led) or "schedule"
    threshold_pct: float = 80.0  # CAL Edinburgh: 100 % on the sensor = 80 % real
    crew_delay_median_h: float = 3.0  # ASSUMED time from the alert to the crew's visit
    schedule_days: float = 2.0  # CAL Philadelphia Bigbelly: median 2.0 days between emptyings
    residual_pct: tuple[float, float] = (1.0, 5.0)  # ASSUMED level left after emptying
    status_every: int = 4  # ASSUMED a status message every 4th fill report
    reading_noise_pct: float = 0.8  # ASSUMED ultrasonic noise (σ, percentage points)
    glitch_rate: float = 0.02  # CAL assumption: ~2 % outlier readings (no rate published)
    fire_rate_per_day: float = 0.0005  # ASSUMED bin fires (cigarettes): 1 per ~5.5 bin-years
    tip_rate_per_day: float = 0.002  # ASSUMED knocked over (vandalism, wind, trucks)
    lid_rate_per_day: float = 0.01  # ASSUMED lid left open
    battery_life_years: float = 5.0  # CAL vendors claim 5–10 years (linemetrics)
    battery_design_interval_s: float = 6 * HOUR  # CAL ultrasonic sensors report every 4–12 h
    weak_signal_fraction: float = 0.10  # ASSUMED share of bins in radio shadow
    overheat_c: float = 60.0  # ASSUMED firmware threshold for the `overheat` fault
    fire_c: float = 80.0  # ASSUMED firmware threshold for the `fire` fault
    low_battery_pct: float = 15.0  # ASSUMED firmware threshold for `low_battery`


@dataclass(slots=True)
class Reading:
    """One message body the device sends: ``channel`` and the JSON fields (without ts/seq)."""

    t: float
    channel: str
    fields: dict[str, object]
    alarm: bool = False


@dataclass(slots=True)
class _Incident:
    until: float = -math.inf

    def active(self, t: float) -> bool:
        return t < self.until


@dataclass(slots=True)
class EcoBox:
    spec: DeviceInfo
    rng: np.random.Generator
    params: EcoboxParams = field(default_factory=EcoboxParams)
    # state, set in __post_init__
    t: float = 0.0
    level: float = 0.0
    base_rate: float = 0.0  # %/day, weekly mean
    battery_pct: float = 100.0
    rssi_base: float = -90.0
    boot_t: float = 0.0
    tilt_base: float = 1.0
    collections: int = 0
    overflow_h: float = 0.0
    fire: _Incident = field(default_factory=_Incident)
    fire_peak: float = 0.0
    fire_start: float = 0.0
    tipped: bool = False
    tilt_deg: float = 0.0
    lid: _Incident = field(default_factory=_Incident)
    collection_at: float | None = None
    _hour_index: int = -1
    _hour_noise: float = 1.0
    _day_index: int = -1
    _day_noise: float = 1.0
    _temp_day_anomaly: float = 0.0

    def __post_init__(self) -> None:
        p = self.params
        sigma = lognormal_sigma(p.fill_median_pct_day, p.fill_p10_pct_day, p.fill_p90_pct_day)
        self.base_rate = float(self.rng.lognormal(math.log(p.fill_median_pct_day), sigma))
        self.level = float(self.rng.uniform(*p.residual_pct) + self.rng.uniform(0, 60))
        self.battery_pct = float(self.rng.uniform(35.0, 100.0))
        weak = self.rng.random() < p.weak_signal_fraction
        self.rssi_base = float(
            self.rng.uniform(-118.0, -105.0) if weak else self.rng.normal(-88.0, 7.0)
        )
        self.tilt_base = float(abs(self.rng.normal(0.0, 1.5)))
        self.tilt_deg = self.tilt_base
        self.boot_t = -float(self.rng.uniform(0.0, 30.0)) * DAY  # relative to start

    # ----- physics -----------------------------------------------------------------------

    @property
    def region_offset(self) -> int:
        region = REGIONS.get(self.spec.region)
        return region.utc_offset_min if region else 300

    def rate_at(self, t: float) -> float:
        """Fill rate in %/hour at ``t``, noise included (draws a new hourly noise per hour)."""
        hour_index = math.floor(t / HOUR)
        if hour_index != self._hour_index:
            self._hour_index = hour_index
            self._hour_noise = _unit_lognormal(self.rng, self.params.hourly_noise_sigma)
            day_index = math.floor(t / DAY)
            if day_index != self._day_index:
                self._day_index = day_index
                self._day_noise = _unit_lognormal(self.rng, self.params.daily_noise_sigma)
                self._temp_day_anomaly = float(self.rng.normal(0.0, 2.5))
        weekday, hour = local_time(t, self.region_offset)
        shape = profiles.weight(site_of(self.spec), weekday, hour)
        return self.base_rate / 24.0 * shape * self._hour_noise * self._day_noise

    def _integrate(self, t_end: float) -> None:
        while self.t < t_end:
            boundary = (math.floor(self.t / HOUR) + 1) * HOUR
            step_end = min(boundary, t_end)
            rate = self.rate_at(self.t)
            self.level += rate * (step_end - self.t) / HOUR
            if self.level >= 100.0:
                self.overflow_h += (step_end - self.t) / HOUR
                self.level = 100.0
            self.t = step_end

    def advance(self, t_end: float) -> None:
        """Integrate the true state to ``t_end``, applying crew visits on the way."""
        while self.collection_at is not None and self.collection_at <= t_end:
            self._integrate(self.collection_at)
            self._collect(self.collection_at)
        self._integrate(t_end)

    def _collect(self, t: float) -> None:
        self.level = float(self.rng.uniform(*self.params.residual_pct))
        self.collections += 1
        self.tipped = False
        self.tilt_deg = self.tilt_base
        self.lid.until = min(self.lid.until, t)
        self.collection_at = None
        if self.params.collection == "schedule":
            self.collection_at = self._next_scheduled(t + HOUR)

    def _next_scheduled(self, after: float) -> float:
        """Next round after ``after``: every ``schedule_days`` at about 08:00 local time."""
        period = self.params.schedule_days * DAY
        offset = self.region_offset * 60
        jitter = float(self.rng.normal(0.0, 0.5)) * HOUR
        local_after = after + offset
        start = math.floor(local_after / DAY) * DAY + 8 * HOUR
        while start < local_after:
            start += period
        return start - offset + jitter

    def _schedule_crew(self, t: float) -> None:
        if self.collection_at is not None:
            return
        delay = float(self.rng.lognormal(math.log(self.params.crew_delay_median_h), 0.5)) * HOUR
        when = t + delay
        _, hour = local_time(when, self.region_offset)
        if hour >= 22 or hour < 6:  # crews work 06:00–22:00 (ASSUMED)
            local = when + self.region_offset * 60
            day_start = math.floor(local / DAY) * DAY
            next6 = day_start + 6 * HOUR if hour < 6 else day_start + DAY + 6 * HOUR
            when = next6 - self.region_offset * 60 + float(self.rng.uniform(0, HOUR))
        self.collection_at = when

    # ----- sensor readings ---------------------------------------------------------------

    def temperature(self, t: float) -> float:
        region = REGIONS.get(self.spec.region)
        _weekday, hour = local_time(t, self.region_offset)
        month = int(np.datetime64(int(t), "s").astype("datetime64[M]").astype(int) % 12)
        mean = region.monthly_temp_c[month] if region else 10.0
        daily = 5.0 * math.cos(2 * math.pi * (hour - 15) / 24.0)
        value = mean + daily + self._temp_day_anomaly + float(self.rng.normal(0.0, 0.3))
        if self.fire.active(t):
            progress = (t - self.fire_start) / max(1.0, self.fire.until - self.fire_start)
            value = max(value, self.fire_peak * math.sin(math.pi * min(1.0, progress)) + 20.0)
        return round(min(150.0, max(-50.0, value)), 1)

    def depth_mm(self) -> float:
        """Usable depth of the container (ASSUMED: ~860 mm for 120 L up to ~1370 mm for 1100 L)."""
        return 700.0 + 160.0 * math.log2(max(capacity_of(self.spec), 60.0) / 60.0)

    def fill_fields(self, t: float) -> dict[str, object]:
        measured = self.level + float(self.rng.normal(0.0, self.params.reading_noise_pct))
        if self.rng.random() < self.params.glitch_rate:
            measured = float(self.rng.uniform(97.0, 100.0))  # bag or lid in front of the sensor
        fill = round(min(100.0, max(0.0, measured)), 1)
        distance = round(150.0 + self.depth_mm() * (1.0 - fill / 100.0), 0)
        tilt = self.tilt_deg + float(abs(self.rng.normal(0.0, 0.3)))
        return {
            "fill_pct": fill,
            "distance_mm": min(10000.0, distance),
            "temperature_c": self.temperature(t),
            "tilt_deg": round(min(180.0, tilt), 1),
        }

    def faults(self, t: float, temperature: float) -> list[str]:
        codes = []
        if self.lid.active(t):
            codes.append("lid_open")
        if temperature >= self.params.overheat_c:
            codes.append("overheat")
        if self.fire.active(t) and temperature >= self.params.fire_c:
            codes.append("fire")
        if self.battery_pct < self.params.low_battery_pct:
            codes.append("low_battery")
        if self.level >= 100.0:
            codes.append("bin_full")
        if self.tipped:
            codes.append("tilted")
        return sorted(codes)

    def status_fields(self, t: float, start: float) -> dict[str, object]:
        temperature = self.temperature(t)
        cold_sag = min(0.0, temperature) * 0.004  # Li-SOCl2 voltage drops in the cold
        pct = max(0.0, self.battery_pct)
        volts = 3.0 + 0.62 * (pct / 100.0) ** 0.35 + cold_sag
        rssi = self.rssi_base + float(self.rng.normal(0.0, 3.0))
        return {
            "battery_v": round(min(15.0, max(0.0, volts)), 3),
            "battery_pct": round(pct, 1),
            "rssi_dbm": float(round(min(0.0, max(-150.0, rssi)))),
            "temperature_c": temperature,
            "uptime_s": int(max(0.0, t - (start + self.boot_t))),
            "faults": self.faults(t, temperature),
        }

    def _drain(self) -> None:
        p = self.params
        reports_per_life = p.battery_life_years * 365.0 * DAY / p.battery_design_interval_s
        self.battery_pct -= 100.0 / reports_per_life

    # ----- the event loop ----------------------------------------------------------------

    def events(self, start: float, end: float) -> Iterator[Reading]:
        """All readings in ``[start, end)`` in time order."""
        p = self.params
        interval = float(self.spec.report_interval_s)
        self.t = start
        self._hour_index = -1
        self._day_index = -1
        if p.collection == "schedule":
            self.collection_at = self._next_scheduled(start + float(self.rng.uniform(0, DAY)))
        timeline = Timeline(self.rng)
        push, exp_next = timeline.push, timeline.after_exponential

        push(start + float(self.rng.uniform(0.0, interval)), "report")
        push(exp_next(start, p.fire_rate_per_day), "fire")
        push(exp_next(start, p.tip_rate_per_day), "tip")
        push(exp_next(start, p.lid_rate_per_day), "lid")
        reports = int(self.rng.integers(0, max(1, p.status_every)))
        while timeline:
            t, what = timeline.pop()
            if t >= end:
                break
            self.advance(t)
            if what == "report":
                reports += 1
                self._drain()
                yield Reading(t, "fill", self.fill_fields(t))
                if reports % max(1, p.status_every) == 0:
                    yield Reading(t, "status", self.status_fields(t, start))
                if p.collection == "threshold" and self.level >= p.threshold_pct:
                    self._schedule_crew(t)
                jitter = float(self.rng.normal(0.0, min(5.0, interval * 0.002)))
                push(t + interval + jitter, "report")
            elif what == "fire":
                self.fire_start = t
                self.fire_peak = float(self.rng.uniform(60.0, 130.0))
                self.fire.until = t + float(self.rng.lognormal(math.log(45 * 60), 0.4))
                push(t + (self.fire.until - t) * 0.25, "fire_alarm")
                push(t + (self.fire.until - t) * 0.5, "fire_check")
                push(exp_next(t, p.fire_rate_per_day), "fire")
            elif what == "fire_alarm":
                yield Reading(t, "status", self.status_fields(t, start), alarm=True)
            elif what == "fire_check":
                yield Reading(t, "fill", self.fill_fields(t), alarm=True)
            elif what == "tip":
                self.tipped = True
                self.tilt_deg = float(self.rng.uniform(45.0, 95.0))
                yield Reading(t, "status", self.status_fields(t, start), alarm=True)
                self._schedule_crew(t)
                push(exp_next(t, p.tip_rate_per_day), "tip")
            elif what == "lid":
                self.lid.until = t + float(self.rng.lognormal(math.log(2 * HOUR), 0.7))
                yield Reading(t, "status", self.status_fields(t, start), alarm=True)
                push(exp_next(t, p.lid_rate_per_day), "lid")
