"""The alert rules of issue 9, unit level: one device fed reading by reading."""

from __future__ import annotations

import pytest

from devices.message import Channel, Status
from ingest.fleet import (
    AlertState,
    Anomaly,
    AnomalyKind,
    Cause,
    Collection,
    Fleet,
    FleetConfigError,
    FleetSettings,
)
from tests.test_fleet_support import MIN, T0, Bin, info, replace, transitions

FIRING, RESOLVED = AlertState.FIRING, AlertState.RESOLVED


def ramp(start: float, stop: float, n: int) -> list[float]:
    return [round(start + (stop - start) * i / (n - 1), 1) for i in range(n)]


def anomalies(events: list[object], kind: AnomalyKind | None = None) -> list[Anomaly]:
    return [e for e in events if type(e) is Anomaly and (kind is None or e.anomaly is kind)]


def collections(events: list[object]) -> list[Collection]:
    return [e for e in events if type(e) is Collection]


def test_a_filling_bin_fires_full_once_on_the_second_reading_over_the_threshold() -> None:
    b = Bin(Fleet())
    b.fills(ramp(10, 79, 30))
    assert transitions(b.events, "full") == []
    b.fill(80.5)
    assert transitions(b.events, "full") == [], "one reading over the threshold is not enough"
    b.fills([81.2, 83.0, 85.1, 88.0, 90.3, 93.0, 96.0, 99.0, 100.0])
    fired = transitions(b.events, "full")
    assert [t.state for t in fired] == [FIRING]
    assert fired[0].value == 81.2
    assert fired[0].threshold == 80.0
    assert fired[0].cause is Cause.THRESHOLD
    assert fired[0].severity == "major"
    assert fired[0].since_ms == b.t - 8 * b.step_ms


def test_noise_around_the_threshold_and_the_clear_level_does_not_flap() -> None:
    b = Bin(Fleet())
    b.fills(ramp(40, 78, 20))
    noise = [80.6, 79.2, 80.9, 79.5, 81.0, 80.2, 79.1, 80.7] * 6
    b.fills(noise)
    assert [t.state for t in transitions(b.events, "full")] == [FIRING]
    b.fills([60.0 - i for i in range(11)])  # falls slowly to 50: no emptying, no clear
    assert [t.state for t in transitions(b.events, "full")] == [FIRING]
    b.fills([49.5, 50.5, 49.1, 50.9, 49.8] * 4)
    states = [(t.state, t.cause) for t in transitions(b.events, "full")]
    assert states == [(FIRING, Cause.THRESHOLD), (RESOLVED, Cause.BELOW_CLEAR)]


def test_a_glitch_spike_is_flagged_late_and_fires_nothing() -> None:
    b = Bin(Fleet())
    b.fills(ramp(30, 40, 10))
    glitch_t = b.t + b.step_ms
    assert b.fill(99.0) == [], "the spike is decided by the next reading"
    got = b.fill(40.6)
    assert [(a.anomaly, a.value, a.ts_ms) for a in anomalies(got)] == [
        (AnomalyKind.SPIKE, 99.0, glitch_t)
    ]
    b.fills([40.9, 41.3])
    assert transitions(b.events) == []
    st = b.fleet.get("eb-1")
    assert st is not None
    assert st.level == 41.3


def test_a_glitch_on_a_bin_near_the_threshold_is_flagged_too() -> None:
    b = Bin(Fleet())
    b.fills(ramp(72, 74, 12))  # filling slowly: no full_soon either
    b.fills([99.5, 74.4, 98.7, 74.9, 75.0])
    assert transitions(b.events) == []
    assert len(anomalies(b.events, AnomalyKind.SPIKE)) == 2


def test_a_real_jump_is_applied_after_one_reading_and_can_fire() -> None:
    b = Bin(Fleet())
    b.fills(ramp(20, 45, 8))
    b.fills([92.0, 93.0])  # a large bag dumped? or two glitches in a row
    assert transitions(b.events, "full") == []
    b.fill(93.1)  # a third reading up: real
    assert anomalies(b.events) == []
    assert [t.state for t in transitions(b.events, "full")] == [FIRING]


def test_a_jump_no_bin_can_make_is_flagged_and_does_not_fire_by_itself() -> None:
    b = Bin(Fleet(), step_ms=2 * MIN)
    b.fills([30.0, 30.2, 30.1])
    b.fills([85.0, 85.3])  # +55 points in two minutes
    assert anomalies(b.events) == []
    assert transitions(b.events, "full") == []
    b.fill(85.6)  # ... and it stays: real, but the first reading of it was impossible
    flagged = anomalies(b.events, AnomalyKind.IMPOSSIBLE_RATE)
    assert [a.value for a in flagged] == [85.0]
    full = transitions(b.events, "full")
    assert [t.value for t in full] == [85.6], "85.0 was flagged: 85.3 and 85.6 fire"


def test_an_emptying_is_a_collection_and_resolves_full() -> None:
    b = Bin(Fleet())
    b.fills([*ramp(50, 88, 12), 88.4, 88.9])
    assert [t.state for t in transitions(b.events, "full")] == [FIRING]
    got = b.fill(3.1)
    assert [(c.fill_before_pct, c.fill_after_pct, c.ts_ms) for c in collections(got)] == [
        (88.9, 3.1, b.t)
    ]
    resolved = transitions(got, "full", RESOLVED)
    assert len(resolved) == 1
    assert resolved[0].cause is Cause.COLLECTED
    assert resolved[0].episode == transitions(b.events, "full", FIRING)[0].episode


@pytest.mark.parametrize(
    ("before", "after", "collected"),
    [
        (15.0, 2.0, True),  # an emptying of a bin only 15 % full (fixed schedules do this)
        (11.0, 1.5, True),
        (90.0, 45.0, True),  # partial emptying
        (60.0, 45.0, False),  # 15 points: less than 30 % of the level
        (30.0, 25.0, False),
        (40.0, 37.5, False),  # inside the noise tolerance: not even an anomaly
    ],
)
def test_emptying_rule(before: float, after: float, collected: bool) -> None:
    b = Bin(Fleet())
    b.fills([before - 0.4, before - 0.2, before])
    got = b.fill(after)
    assert bool(collections(got)) is collected
    flagged = anomalies(got, AnomalyKind.FALL_WITHOUT_COLLECTION)
    assert bool(flagged) is (not collected and before - after >= 4.0)


def test_a_fall_without_collection_is_flagged_then_followed_when_confirmed() -> None:
    b = Bin(Fleet())
    b.fills([*ramp(70, 84, 8), 84.5])
    assert [t.state for t in transitions(b.events, "full")] == [FIRING]
    got = b.fill(68.0)  # 16.5 down: not an emptying
    assert anomalies(got, AnomalyKind.FALL_WITHOUT_COLLECTION)
    assert transitions(got) == []
    assert collections(got) == []
    b.fill(67.6)  # confirmed: the level is 67.6 now, still above the clear level
    st = b.fleet.get("eb-1")
    assert st is not None
    assert st.level == 67.6
    assert [t.state for t in transitions(b.events, "full")] == [FIRING]


def test_a_stuck_sensor_is_flagged_once_and_raises_sensor_fault() -> None:
    b = Bin(Fleet())
    b.fills(ramp(30, 40, 5))
    b.fills([41.7] * 12)
    assert len(anomalies(b.events, AnomalyKind.STUCK)) == 1
    assert [t.state for t in transitions(b.events, "sensor_fault")] == [FIRING]
    b.fills([42.3, 42.9, 43.1])
    sf = transitions(b.events, "sensor_fault")
    assert [t.state for t in sf] == [FIRING, RESOLVED]
    assert sf[0].cause is Cause.STUCK


def test_full_soon_fires_before_full_on_a_steadily_filling_bin() -> None:
    b = Bin(Fleet())
    b.fills(ramp(20, 95, 76))  # 1 point per 15 min = 4 %/h
    soon = transitions(b.events, "full_soon")
    full = transitions(b.events, "full")
    assert [t.state for t in soon] == [FIRING, RESOLVED]
    assert soon[1].cause is Cause.FULL
    assert full[0].state is FIRING
    lead_h = (full[0].ts_ms - soon[0].ts_ms) / 3_600_000
    assert 5.0 <= lead_h <= 6.5, lead_h
    f = soon[0].forecast
    assert f is not None
    assert f.full_at_ms is not None
    assert 3.8 <= f.rate_pct_per_h <= 4.2
    assert abs(f.full_at_ms - full[0].ts_ms) <= 45 * MIN


def test_full_soon_clears_when_the_forecast_moves_out() -> None:
    b = Bin(Fleet())
    b.fills(ramp(40, 66, 27))  # 4 %/h: about 3.5 h to 80 %
    assert [t.state for t in transitions(b.events, "full_soon")] == [FIRING]
    b.fills([66.0 + 0.1 * (i % 2) for i in range(60)])  # the bin stops filling
    soon = transitions(b.events, "full_soon")
    assert [t.state for t in soon] == [FIRING, RESOLVED]
    assert soon[1].cause is Cause.FORECAST_OUT


def test_temperature_alerts_use_a_lower_clear_limit() -> None:
    b = Bin(Fleet())
    b.fills([30.0, 30.1], temperature_c=25.0)
    b.fill(30.2, temperature_c=85.0)
    b.fill(30.3, temperature_c=55.0)  # under the fire limit, over the clear limit: holds
    b.fill(30.4, temperature_c=45.0)
    b.fill(30.5, temperature_c=44.0)
    fire = transitions(b.events, "fire")
    over = transitions(b.events, "overheat")
    assert [(t.state, t.cause) for t in fire] == [
        (FIRING, Cause.TEMPERATURE),
        (RESOLVED, Cause.CLEARED),
    ]
    assert fire[0].severity == "critical"
    assert fire[0].value == 85.0
    assert [t.state for t in over] == [FIRING, RESOLVED]
    assert fire[1].ts_ms == b.t


def test_fault_codes_fire_and_clear_after_consecutive_reports() -> None:
    b = Bin(Fleet())
    b.fill(30.0)
    b.status(faults=("lid_open", "tilted"), battery_pct=12.0)
    b.status(faults=(), battery_pct=12.0)
    assert {t.alert for t in transitions(b.events, state=FIRING)} == {
        "lid_open",
        "tilted",
        "battery_low",
    }
    assert transitions(b.events, state=RESOLVED) == []
    b.status(faults=(), battery_pct=18.0)  # battery: still under the clear level (20)
    resolved = {t.alert for t in transitions(b.events, state=RESOLVED)}
    assert resolved == {"lid_open", "tilted"}
    b.status(faults=(), battery_pct=95.0)  # a new battery
    b.status(faults=(), battery_pct=95.0)
    assert {t.alert for t in transitions(b.events, state=RESOLVED)} == {
        "lid_open",
        "tilted",
        "battery_low",
    }


def test_a_knocked_over_bin_fires_tilted_from_its_fill_readings() -> None:
    b = Bin(Fleet())
    b.fills([30.0, 30.5], tilt_deg=2.0)
    b.fill(31.0, tilt_deg=70.0)
    b.fill(31.0, tilt_deg=20.0)  # still over the clear limit
    b.fill(31.0, tilt_deg=2.0)
    b.fill(31.0, tilt_deg=2.0)
    assert [t.state for t in transitions(b.events, "tilted")] == [FIRING, RESOLVED]


def test_offline_by_silence_on_the_wall_clock_and_back_online() -> None:
    f = Fleet()
    b = Bin(f)
    b.fill(30.0)
    last = b.t
    assert f.tick(last + 3 * 900_000) == []
    got = f.tick(last + 3 * 900_000 + 1)
    assert [(t.alert, t.state, t.cause, t.since_ms) for t in transitions(got)] == [
        ("offline", FIRING, Cause.SILENT, last + 2_700_000)
    ]
    assert f.tick(last + 10 * 900_000) == [], "fires once"
    st = f.get("eb-1")
    assert st is not None
    assert not st.online
    b.t = last + 12 * 900_000
    got = b.fill(31.0)
    assert [(t.alert, t.state, t.cause) for t in transitions(got)] == [
        ("offline", RESOLVED, Cause.BACK_ONLINE)
    ]
    assert st.online


def test_the_last_will_fires_offline_at_once_and_online_clears_it() -> None:
    b = Bin(Fleet())
    b.fill(30.0)
    got = b.presence(False, b.t + MIN)
    assert [(t.alert, t.cause) for t in transitions(got)] == [("offline", Cause.LAST_WILL)]
    assert b.presence(False, b.t + 2 * MIN) == [], "a repeated will changes nothing"
    got = b.presence(True, b.t + 30 * MIN)
    assert [(t.state, t.cause) for t in transitions(got)] == [(RESOLVED, Cause.BACK_ONLINE)]


def test_rvm_bin_and_mode_alerts() -> None:
    b = Bin(Fleet(), info("rvm-1", "rvm", fraction=None, site="mall"))

    def status(**kw: object) -> None:
        b.send(Channel.STATUS, Status(**kw))

    status(bins=(("alu", 40.0), ("pet", 70.0)), mode="ok")
    status(bins=(("alu", 41.0), ("pet", 84.5)), mode="ok")
    status(bins=(("alu", 42.0), ("pet", 60.0)), mode="ok")  # still stored: not emptied
    status(bins=(("alu", 42.0), ("pet", 100.0)), mode="full", faults=("bin_full", "jam"))
    status(bins=(("alu", 43.0), ("pet", 100.0)), mode="jam", faults=("door_open",))
    status(bins=(("alu", 1.0), ("pet", 0.5)), mode="out_of_service", faults=("printer_error",))
    status(bins=(("alu", 1.0), ("pet", 0.5)), mode="ok")
    got = [(t.alert, t.state, t.cause) for t in transitions(b.events)]
    assert got == [
        ("bin_full_pet", FIRING, Cause.THRESHOLD),
        ("jam", FIRING, Cause.MODE),
        ("door_open", FIRING, Cause.FAULT),
        ("jam", RESOLVED, Cause.CLEARED),
        ("out_of_service", FIRING, Cause.MODE),
        ("door_open", RESOLVED, Cause.CLEARED),
        ("printer_error", FIRING, Cause.FAULT),
        ("bin_full_pet", RESOLVED, Cause.COLLECTED),
        ("out_of_service", RESOLVED, Cause.CLEARED),
        ("printer_error", RESOLVED, Cause.CLEARED),
    ]


def test_thresholds_per_fraction_site_and_device() -> None:
    settings = FleetSettings.from_mapping(
        {
            "full_threshold_pct": 85,
            "fraction": {"glass": {"full_threshold_pct": 70, "full_clear_pct": 40}},
            "site": {"park": {"full_threshold_pct": 75}},
        }
    )
    assert settings.thresholds_for("mixed", None).full_threshold_pct == 85
    assert settings.thresholds_for("glass", None).full_threshold_pct == 70
    assert settings.thresholds_for("glass", "park").full_threshold_pct == 75
    assert settings.thresholds_for("glass", "park").full_clear_pct == 40
    assert settings.thresholds_for("glass", "park", 60.0).full_threshold_pct == 60
    b = Bin(Fleet(settings), replace(info(), fraction="glass"))
    b.fills([*ramp(40, 69, 10), 71.0, 72.0])
    assert [t.threshold for t in transitions(b.events, "full")] == [70.0]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"full_treshold_pct": 80}, "unknown setting"),
        ({"full_clear_pct": 85}, "hysteresis"),
        ({"full_threshold_pct": "80"}, "expected a number"),
        ({"full_consecutive": 1.5}, "whole number"),
        ({"site": {"park": {"tilt_clear_deg": 40}}}, "alerts.site.park.tilt_clear_deg"),
    ],
)
def test_bad_settings_name_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(FleetConfigError, match=message):
        FleetSettings.from_mapping(table)


def test_since_is_the_episode_start_and_ids_are_stable() -> None:
    b = Bin(Fleet())
    b.fills([*ramp(50, 85, 10), 86.0, 87.0, 88.0])
    fired = transitions(b.events, "full", FIRING)[0]
    st = b.fleet.get("eb-1")
    assert st is not None
    [now] = [t for t in st.firing() if t.alert == "full"]
    assert (now.since_ms, now.episode) == (fired.since_ms, fired.episode)
    assert now.value == 88.0, "the firing view carries the latest value"
    assert fired.episode == f"eb-1/full/{fired.since_ms}"
    assert fired.since_ms > T0


def test_fault_codes_alone_fire_fire_and_sensor_fault() -> None:
    b = Bin(Fleet())
    b.fill(30.0, temperature_c=20.0)
    b.status(faults=("fire", "sensor_error"), temperature_c=22.0)
    fired = {(t.alert, t.cause) for t in transitions(b.events, state=FIRING)}
    assert fired == {("fire", Cause.FAULT), ("sensor_fault", Cause.FAULT)}
    b.status(faults=(), temperature_c=21.0)
    b.status(faults=(), temperature_c=21.0)
    assert {t.alert for t in transitions(b.events, state=RESOLVED)} == {"fire", "sensor_fault"}


def test_the_fleet_file_column_full_threshold_pct_overrides_per_device() -> None:
    """The registry's optional column ``full_threshold_pct`` is this bin's own threshold."""
    b = Bin(Fleet(), replace(info(), full_threshold_pct=65.0))
    b.fills([*ramp(40, 64, 8), 66.0, 67.0])
    assert [t.threshold for t in transitions(b.events, "full")] == [65.0]
