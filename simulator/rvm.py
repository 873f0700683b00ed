"""A reverse vending machine ("fandomat"): customers, bins, refunds and breakdowns.

Customer sessions arrive as a non-homogeneous Poisson process (thinning) shaped by the ``rvm``
profile in :mod:`simulator.profiles` (open 07:00–22:00, busiest 10–12, weekends busier), scaled
so that a machine sees ``daily_items`` containers on an average day. Each accepted container
fills its material's bin by its compacted volume; a full bin puts the machine in ``full`` mode
until a crew empties it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from devices import DeviceInfo
from simulator import profiles
from simulator.ecobox import DAY, HOUR, Reading, local_time
from simulator.fleet import REGIONS, capacity_of
from simulator.timeline import Timeline

# CAL: Norway PET 54 %, cans 46 % — Kazakh fandomats take PET and cans only (tomra.com).
KZ_MIX = {"pet": 0.54, "alu": 0.46}
# CAL: Lithuania PET 52 %, cans 41.5 %, glass 6.4 % (USAD) — for machines that take glass.
GLASS_MIX = {"pet": 0.54, "alu": 0.41, "glass": 0.05}
# CAL compaction: PET 2.5:1, cans 6:1 (tomra.com); glass is stored whole (ASSUMED: 1:1).
COMPACTION = {"pet": 2.5, "alu": 6.0, "glass": 1.0, "hdpe": 2.0, "other": 1.0}
# ASSUMED container sizes (ml → share); no public per-size split for Kazakhstan was found.
VOLUMES_ML: dict[str, dict[int, float]] = {
    "pet": {330: 0.10, 500: 0.45, 1000: 0.20, 1500: 0.15, 2000: 0.10},
    "alu": {330: 0.45, 450: 0.25, 500: 0.30},
    "glass": {330: 0.5, 500: 0.5},
    "hdpe": {1000: 1.0},
    "other": {500: 1.0},
}
# ASSUMED bonus per container in KZT (glass: CAL 8–15 KZT/bottle, diapazon.kz); paid in minor
# units (1 tenge = 100 tiyn).
REFUND_KZT = {"pet": 2, "alu": 3, "glass": 10, "hdpe": 2, "other": 0}


@dataclass(frozen=True, slots=True)
class RvmParams:
    """Every knob of the RVM model (``# CAL``: CALIBRATION.md, ``# ASSUMED``: no source)."""

    daily_items: float = 160.0  # CAL Kazakh mall fandomat ≈ 150–170 containers/day
    items_per_session: float = 21.0  # CAL TOMRA 2017: 21 containers per session (mean)
    session_dispersion: float = 1.5  # ASSUMED gamma shape of the session-size spread
    mix: dict[str, float] = field(default_factory=lambda: dict(KZ_MIX))
    reject_rate: float = 0.03  # CAL assumption: ~3 % of items refused (no figure published)
    jam_per_item: float = 1 / 4000  # ASSUMED
    jam_fix_median_h: float = 0.75  # ASSUMED
    printer_rate_per_day: float = 0.02  # ASSUMED
    printer_fix_median_h: float = 12.0  # ASSUMED
    outage_rate_per_day: float = 0.1  # ASSUMED; with jams ≈ 97.5 % uptime (CAL Cleanaway)
    outage_median_h: float = 3.0  # ASSUMED
    service_threshold_pct: float = 80.0  # ASSUMED, same rule as the eco-boxes
    service_delay_median_h: float = 6.0  # ASSUMED
    currency: str = "KZT"
    refund_kzt: dict[str, int] = field(default_factory=lambda: dict(REFUND_KZT))


def bin_shares(mix: dict[str, float]) -> dict[str, float]:
    """How the storage volume is split: PET gets two thirds unless glass is taken too."""
    materials = sorted(m for m, w in mix.items() if w > 0)
    if set(materials) <= {"pet", "alu"}:
        base = {"pet": 2 / 3, "alu": 1 / 3}
        return {m: base[m] / sum(base[x] for x in materials) for m in materials}
    weights = {m: (2.0 if m == "pet" else 1.0) for m in materials}
    total = sum(weights.values())
    return {m: w / total for m, w in weights.items()}


def mean_volume(material: str) -> float:
    sizes = VOLUMES_ML[material]
    return sum(v * w for v, w in sizes.items()) / sum(sizes.values())


@dataclass(slots=True)
class Rvm:
    spec: DeviceInfo
    rng: np.random.Generator
    params: RvmParams = field(default_factory=RvmParams)
    t: float = 0.0
    bins_l: dict[str, float] = field(default_factory=dict)  # stored litres per material
    capacity_l: dict[str, float] = field(default_factory=dict)
    mode: str = "ok"
    jam_until: float = -math.inf
    outage_until: float = -math.inf
    printer_until: float = -math.inf
    service_at: float | None = None
    txn_counter: int = 0
    boot_t: float = 0.0
    rssi_base: float = -70.0
    sessions: int = 0
    sessions_turned_away: int = 0
    items_accepted: int = 0
    items_rejected: int = 0
    services: int = 0
    full_since: float | None = None
    full_seconds: float = 0.0
    session_rate_per_s: float = 0.0

    def __post_init__(self) -> None:
        p = self.params
        shares = bin_shares(p.mix)
        total = max(capacity_of(self.spec), 1.0)
        self.capacity_l = {m: total * s for m, s in shares.items()}
        self.bins_l = {m: c * float(self.rng.uniform(0.0, 0.6)) for m, c in self.capacity_l.items()}
        self.session_rate_per_s = p.daily_items / p.items_per_session / DAY
        self.boot_t = -float(self.rng.uniform(0.0, 20.0)) * DAY
        self.rssi_base = float(self.rng.normal(-75.0, 8.0))

    @property
    def region_offset(self) -> int:
        region = REGIONS.get(self.spec.region)
        return region.utc_offset_min if region else 300

    def fill_pct(self, material: str) -> float:
        return min(100.0, 100.0 * self.bins_l[material] / self.capacity_l[material])

    def intensity(self, t: float) -> float:
        """Session arrival rate (per second) at ``t``."""
        weekday, hour = local_time(t, self.region_offset)
        return self.session_rate_per_s * profiles.weight("rvm", weekday, hour)

    def current_mode(self, t: float) -> str:
        if t < self.outage_until:
            return "out_of_service"
        if t < self.jam_until:
            return "jam"
        if any(self.fill_pct(m) >= 100.0 for m in self.bins_l):
            return "full"
        return "ok"

    def _set_mode(self, t: float) -> None:
        mode = self.current_mode(t)
        if mode == "full" and self.full_since is None:
            self.full_since = t
        elif mode != "full" and self.full_since is not None:
            self.full_seconds += t - self.full_since
            self.full_since = None
        self.mode = mode

    def faults(self, t: float) -> list[str]:
        codes = []
        if t < self.jam_until:
            codes.append("jam")
        if t < self.printer_until:
            codes.append("printer_error")
        if any(self.fill_pct(m) >= 100.0 for m in self.bins_l):
            codes.append("bin_full")
        return sorted(codes)

    def status_fields(self, t: float, start: float) -> dict[str, object]:
        self._set_mode(t)
        _weekday, hour = local_time(t, self.region_offset)
        indoor = 21.0 + 1.5 * math.sin(2 * math.pi * (hour - 9) / 24.0)
        return {
            "rssi_dbm": float(round(min(0.0, self.rssi_base + float(self.rng.normal(0, 2.0))))),
            "temperature_c": round(indoor + float(self.rng.normal(0.0, 0.4)), 1),
            "uptime_s": int(max(0.0, t - (start + self.boot_t))),
            "faults": self.faults(t),
            "bins": {m: round(self.fill_pct(m), 1) for m in sorted(self.bins_l)},
            "mode": self.mode,
        }

    def _draw_material(self) -> str:
        names = sorted(self.params.mix)
        probs = np.array([self.params.mix[n] for n in names], dtype=float)
        return names[int(self.rng.choice(len(names), p=probs / probs.sum()))]

    def _draw_volume(self, material: str) -> int:
        sizes = VOLUMES_ML[material]
        keys = sorted(sizes)
        probs = np.array([sizes[k] for k in keys], dtype=float)
        return keys[int(self.rng.choice(len(keys), p=probs / probs.sum()))]

    def session_size(self) -> int:
        """1 + gamma-Poisson: mean ``items_per_session``, over-dispersed like real visits."""
        p = self.params
        extra_mean = max(0.0, p.items_per_session - 1.0)
        lam = float(self.rng.gamma(p.session_dispersion, extra_mean / p.session_dispersion))
        return 1 + min(999, int(self.rng.poisson(lam)))

    def session(self, t: float) -> dict[str, object] | None:
        """One customer at ``t``: the deposit fields, or None when nothing was accepted."""
        p = self.params
        self._set_mode(t)
        if self.mode != "ok":
            self.sessions_turned_away += 1
            return None
        self.sessions += 1
        accepted: Counter[tuple[str, int]] = Counter()
        rejected = 0
        for _ in range(self.session_size()):
            material = self._draw_material()
            if self.rng.random() < p.reject_rate or material not in self.bins_l:
                rejected += 1
                continue
            if self.fill_pct(material) >= 100.0 or t < self.jam_until:
                rejected += 1  # the customer takes the rest home
                continue
            volume = self._draw_volume(material)
            self.bins_l[material] += volume / 1000.0 / COMPACTION[material]
            accepted[(material, volume)] += 1
            if self.rng.random() < p.jam_per_item:
                self.jam_until = (
                    t + float(self.rng.lognormal(math.log(p.jam_fix_median_h), 0.5)) * HOUR
                )
        self.items_accepted += sum(accepted.values())
        self.items_rejected += rejected
        if not accepted:
            return None
        self.txn_counter += 1
        items = [
            {"material": m, "count": n, "volume_ml": v} for (m, v), n in sorted(accepted.items())
        ]
        refund = sum(p.refund_kzt.get(m, 0) * n for (m, _), n in accepted.items()) * 100
        return {
            "txn_id": f"{int(t * 1000):x}-{self.txn_counter}",
            "items": items,
            "rejected": rejected,
            "refund_minor": refund,
            "currency": p.currency,
        }

    def _service(self, t: float) -> None:
        for m in self.bins_l:
            self.bins_l[m] = self.capacity_l[m] * float(self.rng.uniform(0.0, 0.02))
        self.services += 1
        self.service_at = None
        self._set_mode(t)

    def _maybe_schedule_service(self, t: float) -> None:
        if self.service_at is not None:
            return
        if max(self.fill_pct(m) for m in self.bins_l) < self.params.service_threshold_pct:
            return
        delay = float(self.rng.lognormal(math.log(self.params.service_delay_median_h), 0.5))
        when = t + delay * HOUR
        _, hour = local_time(when, self.region_offset)
        if hour < 7 or hour >= 22:  # crews come while the venue is open (ASSUMED)
            local = when + self.region_offset * 60
            day_start = math.floor(local / DAY) * DAY
            next7 = day_start + 7 * HOUR if hour < 7 else day_start + DAY + 7 * HOUR
            when = next7 - self.region_offset * 60 + float(self.rng.uniform(0.0, 2 * HOUR))
        self.service_at = when

    def events(self, start: float, end: float) -> Iterator[Reading]:
        """All messages in ``[start, end)`` in time order: deposits and status reports."""
        p = self.params
        interval = float(self.spec.report_interval_s)
        peak = self.session_rate_per_s * profiles.peak("rvm")
        timeline = Timeline(self.rng)
        push, exp_next = timeline.push, timeline.after_exponential

        if peak > 0:
            push(start + float(self.rng.exponential(1.0 / peak)), "arrival")
        push(start + float(self.rng.uniform(0.0, interval)), "status")
        push(exp_next(start, p.printer_rate_per_day), "printer")
        push(exp_next(start, p.outage_rate_per_day), "outage")
        while timeline:
            t, what = timeline.pop()
            if t >= end:
                break
            if self.service_at is not None and self.service_at <= t:
                serviced = self.service_at
                self._service(serviced)
                yield Reading(serviced, "status", self.status_fields(serviced, start))
            if what == "arrival":
                push(t + float(self.rng.exponential(1.0 / peak)), "arrival")
                if self.rng.random() * peak > self.intensity(t):
                    continue  # thinning: no customer at this candidate time
                before = self.mode
                deposit = self.session(t)
                if deposit is not None:
                    yield Reading(t, "deposit", deposit)
                self._set_mode(t)
                self._maybe_schedule_service(t)
                if self.mode != before and self.mode in ("full", "jam"):
                    yield Reading(t, "status", self.status_fields(t, start), alarm=True)
            elif what == "status":
                yield Reading(t, "status", self.status_fields(t, start))
                push(t + interval + float(self.rng.normal(0.0, 1.0)), "status")
            elif what == "printer":
                self.printer_until = t + float(
                    self.rng.lognormal(math.log(p.printer_fix_median_h), 0.5) * HOUR
                )
                yield Reading(t, "status", self.status_fields(t, start), alarm=True)
                push(exp_next(t, p.printer_rate_per_day), "printer")
            elif what == "outage":
                self.outage_until = t + float(
                    self.rng.lognormal(math.log(p.outage_median_h), 0.6) * HOUR
                )
                yield Reading(t, "status", self.status_fields(t, start), alarm=True)
                push(exp_next(t, p.outage_rate_per_day), "outage")
