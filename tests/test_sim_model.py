"""Statistical properties of the eco-box and RVM models (numpy, no servers).

Tolerances are set from the sample sizes: each test would fail if the modelled property were
absent (e.g. a flat daily profile, no emptying, a Poisson rate off by the profile's mean).
"""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime

import numpy as np
import pytest

from devices import DeviceInfo, Kind
from simulator.ecobox import DAY, HOUR, EcoBox, EcoboxParams, local_time, lognormal_sigma
from simulator.fleet import device_rng
from simulator.rvm import Rvm, RvmParams

# Monday 2025-03-03 00:00 in Almaty (UTC+5).
MONDAY = datetime(2025, 3, 2, 19, 0, tzinfo=UTC).timestamp()


def _spec(
    i: int, site: str = "residential", kind: str = "ecobox", interval: int = 900
) -> DeviceInfo:
    prefix = "eb" if kind == "ecobox" else "rvm"
    return DeviceInfo(
        f"{prefix}-almaty-{i:04d}",
        Kind(kind),
        "almaty",
        43.24,
        76.89,
        240.0 if kind == "ecobox" else 150.0,
        "mixed",
        site,
        interval,
    )


def _hourly_increments(site: str, devices: int = 40, days: int = 14) -> np.ndarray:
    """Level increase per local (weekday, hour), averaged over devices and weeks (no emptying)."""
    params = EcoboxParams(collection="schedule", schedule_days=10_000.0)
    sums = np.zeros((7, 24))
    counts = np.zeros((7, 24))
    for i in range(devices):
        box = EcoBox(_spec(i, site), device_rng(1, f"{site}-{i}"), params)
        box.t = MONDAY
        for h in range(days * 24):
            t0 = MONDAY + h * HOUR
            box.level = 0.0  # keep below 100 % so nothing is capped
            box.advance(t0 + HOUR)
            weekday, hour = local_time(t0, 300)
            sums[weekday, hour] += box.level
            counts[weekday, hour] += 1
    return sums / counts


def test_residential_bins_fill_in_the_evening_not_at_night() -> None:
    inc = _hourly_increments("residential")
    evening = inc[:, 18:22].mean()
    night = inc[:, 1:5].mean()
    assert evening > 4 * night
    assert evening > inc[:, 10:14].mean()  # the evening is the peak, not just "daytime"


def test_parks_peak_at_weekends_and_transit_stops_on_weekdays() -> None:
    park = _hourly_increments("park").sum(axis=1)  # per weekday
    assert park[5:7].mean() > 1.6 * park[0:5].mean()
    transit = _hourly_increments("transit")
    assert transit[0:5].sum(axis=1).mean() > 1.8 * transit[5:7].sum(axis=1).mean()
    weekday_commute = transit[0:5, 7:9].mean()
    assert weekday_commute > 2 * transit[0:5, 11:15].mean()


def test_fill_rates_follow_the_edinburgh_lognormal() -> None:
    rates = np.array([EcoBox(_spec(i), device_rng(2, f"rate-{i}")).base_rate for i in range(4000)])
    assert np.median(rates) == pytest.approx(36.0, rel=0.06)
    assert np.percentile(rates, 10) == pytest.approx(15.0, abs=2.5)
    assert np.percentile(rates, 90) == pytest.approx(79.0, abs=7.0)
    assert lognormal_sigma(36, 15, 79) == pytest.approx(0.648, abs=0.01)


def test_mean_daily_fill_equals_the_device_rate() -> None:
    """The profiles and the noise are normalised: over weeks a bin fills at its own rate."""
    params = EcoboxParams(collection="schedule", schedule_days=10_000.0)
    ratios = []
    for i in range(30):
        box = EcoBox(
            _spec(i, ("residential", "park", "transit", "commercial")[i % 4]),
            device_rng(3, f"mean-{i}"),
            params,
        )
        box.t = MONDAY
        total = 0.0
        for d in range(28):
            box.level = 0.0
            box.advance(MONDAY + (d + 1) * DAY)
            total += box.level
        ratios.append(total / 28 / box.base_rate)
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.06)


def _fills(box: EcoBox, days: float) -> list[tuple[float, float]]:
    return [
        (r.t, float(r.fields["fill_pct"]))  # type: ignore[arg-type]
        for r in box.events(MONDAY, MONDAY + days * DAY)
        if r.channel == "fill"
    ]


def test_crews_empty_full_bins_down_to_a_few_percent() -> None:
    params = EcoboxParams(glitch_rate=0.0, tip_rate_per_day=0.0)
    afters = []
    for i in range(20):
        box = EcoBox(_spec(i), device_rng(4, f"empty-{i}"), params)
        readings = _fills(box, 10)
        assert box.collections >= 1  # 36 %/day median: every bin is emptied within 10 days
        for (_, before), (_, after) in itertools.pairwise(readings):
            if before - after > 30:
                assert before >= params.threshold_pct - 5  # emptied because it was full
                afters.append(after)
        assert max(f for _, f in readings) <= 100.0
    assert len(afters) >= 20
    assert np.median(afters) <= 6.0  # a few percent left, plus what fell in since
    assert max(afters) <= 15.0
    # The visit itself leaves 1–5 %.
    box = EcoBox(_spec(99), device_rng(4, "visit"), params)
    box.t, box.level, box.collection_at = MONDAY, 93.0, MONDAY + 60
    box.advance(MONDAY + 60)
    assert 1.0 <= box.level <= 5.0


def test_scheduled_collection_happens_every_two_days() -> None:
    params = EcoboxParams(collection="schedule", schedule_days=2.0)
    counts = []
    for i in range(10):
        box = EcoBox(_spec(i), device_rng(5, f"sched-{i}"), params)
        _fills(box, 20)
        counts.append(box.collections)
    assert np.mean(counts) == pytest.approx(10.0, abs=1.0)


def test_ultrasonic_glitches_are_about_two_percent_and_last_one_sample() -> None:
    params = EcoboxParams(glitch_rate=0.02, collection="threshold", threshold_pct=50.0)
    glitches = total = 0
    for i in range(30):
        box = EcoBox(_spec(i), device_rng(6, f"glitch-{i}"), params)
        readings = [f for _, f in _fills(box, 7)]
        total += len(readings)
        for prev, cur, nxt in zip(readings, readings[1:], readings[2:], strict=False):
            if cur >= 97.0 and prev < 75.0 and nxt < 75.0:
                glitches += 1
    assert total > 15_000
    assert glitches / total == pytest.approx(0.02, abs=0.006)


def test_temperature_has_a_daily_cycle_and_battery_discharges() -> None:
    box = EcoBox(_spec(1), device_rng(7, "temp"))
    afternoon, night = [], []
    statuses = [r for r in box.events(MONDAY, MONDAY + 14 * DAY) if r.channel == "status"]
    for r in statuses:
        _, hour = local_time(r.t, 300)
        temp = float(r.fields["temperature_c"])  # type: ignore[arg-type]
        (afternoon if 13 <= hour <= 17 else night if 1 <= hour <= 5 else []).append(temp)
    assert np.mean(afternoon) - np.mean(night) > 6.0
    battery = [float(r.fields["battery_pct"]) for r in statuses]  # type: ignore[arg-type]
    assert all(a >= b for a, b in itertools.pairwise(battery))
    # 15-min reports drain a 5-year (at 6 h) battery in ~76 days: ~18 % in two weeks.
    assert battery[0] - battery[-1] == pytest.approx(14 * 100 / 76, rel=0.1)


def test_weak_signal_spots_exist() -> None:
    bases = [EcoBox(_spec(i), device_rng(8, f"rssi-{i}")).rssi_base for i in range(1000)]
    weak = sum(1 for b in bases if b <= -105)
    assert 70 <= weak <= 150  # ~10 % in radio shadow


# ----- RVMs -------------------------------------------------------------------------------------


def _rvm(i: int, **params: object) -> Rvm:
    defaults: dict[str, object] = {
        "jam_per_item": 0.0,
        "outage_rate_per_day": 0.0,
        "printer_rate_per_day": 0.0,
    }
    defaults.update(params)
    spec = DeviceInfo(
        f"rvm-almaty-{i:03d}", Kind.RVM, "almaty", 43.2, 76.9, 1e9, None, "commercial", 900
    )
    return Rvm(spec, device_rng(9, spec.device_id), RvmParams(**defaults))  # type: ignore[arg-type]


def test_rvm_sessions_are_poisson_with_the_configured_daily_rate() -> None:
    machines, days = 30, 28
    per_day_hour = np.zeros((machines, days, 24))
    deposits = []
    rvms = [_rvm(i) for i in range(machines)]
    for m, rvm in enumerate(rvms):
        for r in rvm.events(MONDAY, MONDAY + days * DAY):
            if r.channel == "deposit":
                d = int((r.t - MONDAY) // DAY)
                _, hour = local_time(r.t, 300)
                per_day_hour[m, d, hour] += 1
                deposits.append(r.fields)
    sessions = sum(r.sessions for r in rvms)
    expected = machines * days * 160.0 / 21.0
    assert sessions == pytest.approx(expected, rel=0.05)  # 5 % ≈ 4 σ of a Poisson count
    # Closed 22:00–07:00; busiest 10–12.
    by_hour = per_day_hour.sum(axis=(0, 1))
    assert by_hour[22:].sum() + by_hour[:7].sum() == 0
    assert set(np.argsort(by_hour)[-2:]) == {10, 11}
    # Poisson: for a fixed weekday hour, the variance across machine-days equals the mean.
    weekday = [d for d in range(days) if d % 7 < 5]
    counts = per_day_hour[:, weekday, 10:12].sum(axis=2).ravel()
    assert counts.var() / counts.mean() == pytest.approx(1.0, abs=0.2)
    # Weekends busier than weekdays.
    weekend = [d for d in range(days) if d % 7 >= 5]
    assert (
        per_day_hour[:, weekend].sum(axis=2).mean()
        > 1.3 * per_day_hour[:, weekday].sum(axis=2).mean()
    )
    items = [
        sum(int(i["count"]) for i in dep["items"]) + int(dep["rejected"])  # type: ignore[attr-defined, call-overload]
        for dep in deposits
    ]
    assert np.mean(items) == pytest.approx(21.0, abs=1.2)
    rejected = sum(int(dep["rejected"]) for dep in deposits)  # type: ignore[call-overload]
    assert rejected / sum(items) == pytest.approx(0.03, abs=0.004)


def test_rvm_material_mix_refunds_and_bins() -> None:
    rvm = _rvm(1)
    counts: dict[str, int] = {}
    refund = 0
    for r in rvm.events(MONDAY, MONDAY + 60 * DAY):
        if r.channel != "deposit":
            continue
        for item in r.fields["items"]:  # type: ignore[attr-defined]
            counts[item["material"]] = counts.get(item["material"], 0) + item["count"]
            refund += {"pet": 200, "alu": 300}[item["material"]] * item["count"]
        refund -= int(r.fields["refund_minor"])  # type: ignore[call-overload]
    assert set(counts) == {"pet", "alu"}  # Kazakh fandomats: PET and cans only
    assert counts["pet"] / sum(counts.values()) == pytest.approx(0.54, abs=0.02)
    assert refund == 0


def test_a_full_bin_puts_the_machine_in_full_mode_until_serviced() -> None:
    spec = DeviceInfo(
        "rvm-almaty-900", Kind.RVM, "almaty", 43.2, 76.9, 150.0, None, "commercial", 900
    )
    rvm = Rvm(
        spec,
        device_rng(10, spec.device_id),
        RvmParams(service_delay_median_h=48.0, jam_per_item=0.0, outage_rate_per_day=0.0),
    )
    modes = [
        (r.t, r.fields["mode"], r.fields["bins"])
        for r in rvm.events(MONDAY, MONDAY + 20 * DAY)
        if r.channel == "status"
    ]
    full = [i for i, (_, mode, _) in enumerate(modes) if mode == "full"]
    assert full, "150 L at 160 containers/day must fill up within 20 days"
    assert rvm.sessions_turned_away > 0
    after = next(i for i in range(full[0], len(modes)) if modes[i][1] == "ok")
    assert max(modes[after][2].values()) < 10.0  # type: ignore[attr-defined]
    assert rvm.services >= 1
    assert math.isfinite(modes[after][0])
