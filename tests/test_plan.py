"""Collection planner (ingest/plan): every route checked by an independent checker.

The checker below recomputes distances, loads and ETAs from the bins' coordinates with its own
haversine, so a planner bug in the shared matrices cannot hide behind itself.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime, timedelta
from datetime import time as dtime

import numpy as np
import pytest
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from devices.registry import Kind
from ingest.plan import (
    Depot,
    Plan,
    PlanRequest,
    PlanSettings,
    PlanUnavailable,
    SolverFailed,
    select_due,
    solve_plan,
)
from ingest.plan import (
    FillReading as Reading,
)
from ingest.plan.instance import Instance, priority_penalty
from simulator.fleet import capacity_of, generate

NOW = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)  # 06:00 in Almaty (UTC+5): the shift starts
REASONS = {"no_trucks", "capacity", "shift_window", "solver_limit"}


def fleet_readings(n: int, *, seed: int = 7, region: str = "almaty") -> list[Reading]:
    """The simulator's eco-boxes of a region, half full now, half due by forecast."""
    rng = np.random.default_rng(seed)
    devices = [d for d in generate(ecoboxes=n, rvms=0, regions=[region], seed=seed)]
    assert all(d.kind is Kind.ECOBOX for d in devices)
    out = []
    for i, d in enumerate(devices):
        now_due = i % 2 == 0
        out.append(
            Reading(
                device_id=d.device_id,
                lat=d.lat,
                lon=d.lon,
                fill_pct=float(rng.uniform(80, 100) if now_due else rng.uniform(50, 79)),
                capacity_l=capacity_of(d),
                fraction=d.fraction,
                site=d.site,
                forecast_full_at=None if now_due else NOW + timedelta(hours=rng.uniform(0, 6)),
            )
        )
    return out


def make_request(n: int, *, seed: int = 7, **kw: object) -> PlanRequest:
    settings = PlanSettings(**kw)  # type: ignore[arg-type]
    return settings.request("almaty", fleet_readings(n, seed=seed), NOW)


# --- the independent checker ----------------------------------------------------------------


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    r = 6371.0088
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * r * math.asin(math.sqrt(a))


def check_plan(req: PlanRequest, plan: Plan) -> None:
    """Capacity, shift window, each due bin once (served or unassigned with a reason), ETAs."""
    bins = {b.device_id: b for b in req.bins}
    served = [s.device_id for r in plan.routes for s in r.stops]
    left = [u.device_id for u in plan.unassigned]
    assert len(served) == len(set(served)), "a bin is served twice"
    assert sorted(served + left) == sorted(bins), "a due bin is neither served nor unassigned"
    assert plan.bins_served == len(served)
    assert plan.bins_due == len(bins)
    for u in plan.unassigned:
        assert u.reason in REASONS
        assert u.detail
    assert len({r.truck for r in plan.routes}) == len(plan.routes) <= req.trucks
    total_km = 0.0
    for r in plan.routes:
        assert r.stops, "an empty route is listed"
        load = sum(bins[s.device_id].load_l for s in r.stops)
        assert load <= req.truck_capacity_l + 1e-6, f"truck {r.truck} over capacity"
        assert r.load_l == pytest.approx(load)
        assert r.start >= req.shift_start, f"truck {r.truck} early"
        assert r.end <= req.shift_end, f"truck {r.truck} late"
        t, km = r.start, 0.0
        prev = (req.depot.lat, req.depot.lon)
        for seq, s in enumerate(r.stops, start=1):
            b = bins[s.device_id]
            assert s.seq == seq
            assert (s.lat, s.lon) == (b.lat, b.lon)
            leg = _km(*prev, b.lat, b.lon) * req.detour_factor
            drive = timedelta(hours=leg / req.speed_kmh)
            # the planner rounds each leg up to a whole second and to a whole metre
            assert t + drive <= s.eta <= t + drive + timedelta(seconds=seq), s
            assert s.leg_km == pytest.approx(leg, abs=1e-3)
            km += leg
            t = s.eta + timedelta(seconds=req.service_time_s)
            prev = (b.lat, b.lon)
        back = _km(*prev, req.depot.lat, req.depot.lon) * req.detour_factor
        km += back
        end = t + timedelta(hours=back / req.speed_kmh)
        assert end <= r.end <= end + timedelta(seconds=2), (end, r.end)
        assert r.duration_s == pytest.approx((r.end - r.start).total_seconds())
        assert r.distance_km == pytest.approx(km, abs=1e-3 * (len(r.stops) + 1))
        total_km += r.distance_km
    assert plan.distance_km == pytest.approx(total_km)


# --- solving ----------------------------------------------------------------------------------


def test_ortools_routes_are_valid_and_never_longer_than_the_fallback() -> None:
    req = make_request(80, trucks=2, time_limit_s=1.0)
    t0 = time.perf_counter()
    plan = solve_plan(req)
    took = time.perf_counter() - t0
    check_plan(req, plan)
    assert plan.solver == "ortools"
    assert plan.solver_error is None
    assert plan.bins_served == len(req.bins) == plan.fallback_served
    assert plan.distance_km <= plan.fallback_km
    assert plan.improvement_ratio == pytest.approx(plan.fallback_km / plan.distance_km)
    assert plan.improvement_ratio is not None
    assert plan.improvement_ratio >= 1.0
    assert took < 1.0 + 1.5, f"the solve took {took:.2f} s for a 1 s limit"

    only = solve_plan(req.model_copy(update={"time_limit_s": 0}))
    check_plan(req, only)
    assert only.solver == "fallback"
    assert only.improvement_ratio is None
    assert only.distance_km == pytest.approx(plan.fallback_km)
    assert only.solver_time_s < 0.5


def _left_out(plan: Plan, req: PlanRequest) -> int:
    """What the plan leaves undone, in the planner's priority units (metres of penalty)."""
    bins = {b.device_id: b for b in req.bins}
    return sum(priority_penalty(bins[u.device_id]) for u in plan.unassigned)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ortools_never_worse_when_not_everything_fits(seed: int) -> None:
    """Tight shift: OR-Tools leaves out no more urgent work than the fallback, and no more km
    for the same work."""
    req = make_request(120, seed=seed, trucks=2, time_limit_s=0.5, shift_end=dtime(8, 0))
    plan = solve_plan(req)
    fb = solve_plan(req.model_copy(update={"time_limit_s": 0}))
    check_plan(req, plan)
    check_plan(req, fb)
    assert plan.solver == "ortools"
    assert fb.distance_km == pytest.approx(plan.fallback_km)
    assert fb.bins_served == plan.fallback_served
    assert plan.unassigned
    assert {u.reason for u in plan.unassigned} <= {"shift_window"}
    assert plan.bins_served >= fb.bins_served
    left, fb_left = _left_out(plan, req), _left_out(fb, req)
    assert left + plan.distance_km * 1000 <= fb_left + fb.distance_km * 1000 + len(req.bins)
    if left == fb_left:
        assert plan.distance_km <= fb.distance_km + 1e-3 * len(req.bins)


def test_capacity_leaves_the_least_urgent_bins() -> None:
    req = make_request(40, trucks=2, truck_capacity_l=1500, time_limit_s=0.5)
    plan = solve_plan(req)
    check_plan(req, plan)
    assert plan.unassigned
    assert all(u.reason == "capacity" for u in plan.unassigned)
    for r in plan.routes:  # no truck could have taken one more of those left
        assert r.load_l + min(u.load_l for u in plan.unassigned) > req.truck_capacity_l
    # a bin due now is left out only if it could not replace a served bin due by forecast
    for u in (u for u in plan.unassigned if u.due == "now"):
        for r in plan.routes:
            for f in (s for s in r.stops if s.due == "forecast"):
                assert r.load_l - f.load_l + u.load_l > req.truck_capacity_l, (u, f)
    assert any(u.due == "forecast" for u in plan.unassigned)


def test_a_bin_bigger_than_a_truck_and_one_too_far() -> None:
    base = fleet_readings(6)
    big = Reading("eb-big", 43.25, 76.90, 95.0, 5000.0)
    far = Reading("eb-far", 44.40, 76.90, 95.0, 240.0)  # ~130 km north: not there and back
    settings = PlanSettings(trucks=1, truck_capacity_l=4500, time_limit_s=0.3)
    req = settings.request("almaty", [*base, big, far], NOW)
    plan = solve_plan(req)
    check_plan(req, plan)
    why = {u.device_id: u for u in plan.unassigned}
    assert why["eb-big"].reason == "capacity"
    assert "4750 L" in why["eb-big"].detail
    assert why["eb-far"].reason == "shift_window"
    assert "round trip" in why["eb-far"].detail
    assert plan.bins_served == len(req.bins) - 2


def test_no_trucks_and_an_ended_shift() -> None:
    req = make_request(10, trucks=0)
    plan = solve_plan(req)
    check_plan(req, plan)
    assert not plan.routes
    assert {u.reason for u in plan.unassigned} == {"no_trucks"}

    late = PlanSettings(shift_start=dtime(6, 0), shift_end=dtime(6, 10), time_limit_s=0.2)
    req = late.request("almaty", fleet_readings(10), NOW + timedelta(minutes=9))
    plan = solve_plan(req)
    check_plan(req, plan)
    assert (req.shift_end - req.shift_start) == timedelta(minutes=1)
    assert not plan.routes
    assert {u.reason for u in plan.unassigned} == {"shift_window"}


def _raises(*_: object) -> list[list[int]]:
    raise RuntimeError("solver crashed")


def _fails(*_: object) -> list[list[int]]:
    raise SolverFailed("no_solution", "nothing found")


def _duplicates(inst: Instance, *_: object) -> list[list[int]]:
    return [[1, 1]] + [[] for _ in range(inst.vehicles - 1)]


@pytest.mark.parametrize(
    ("solver", "reason"),
    [(_raises, "exception"), (_fails, "no_solution"), (_duplicates, "invalid_routes")],
)
def test_a_failing_solver_falls_back(solver: object, reason: str) -> None:
    req = make_request(30, trucks=2, time_limit_s=1.0)
    plan = solve_plan(req, solver=solver)  # type: ignore[arg-type]
    check_plan(req, plan)
    assert plan.solver == "fallback"
    assert plan.improvement_ratio is None
    assert plan.solver_error is not None
    assert plan.solver_error.startswith(reason)
    assert plan.bins_served == plan.fallback_served == len(req.bins)


def test_geojson_is_a_valid_feature_collection() -> None:
    req = make_request(25, trucks=2, truck_capacity_l=3000, time_limit_s=0.3)
    plan = solve_plan(req)
    gj = json.loads(json.dumps(plan.to_geojson()))
    assert gj["type"] == "FeatureCollection"
    kinds: dict[str, list[dict[str, object]]] = {}
    for f in gj["features"]:
        assert f["type"] == "Feature"
        assert isinstance(f["properties"], dict)
        g = f["geometry"]
        positions = [g["coordinates"]] if g["type"] == "Point" else g["coordinates"]
        assert g["type"] in ("Point", "LineString")
        for lon, lat in positions:  # RFC 7946: [longitude, latitude]
            assert 76 < lon < 78
            assert 42.5 < lat < 44
        kinds.setdefault(f["properties"]["kind"], []).append(f)
    assert len(kinds["depot"]) == 1
    assert len(kinds["stop"]) == plan.bins_served
    assert len(kinds.get("unassigned", [])) == len(plan.unassigned) > 0
    depot = [req.depot.lon, req.depot.lat]
    assert len(kinds["route"]) == len(plan.routes)
    for f, r in zip(kinds["route"], plan.routes, strict=True):
        line = f["geometry"]["coordinates"]  # type: ignore[index]
        assert line[0] == line[-1] == depot
        assert len(line) == len(r.stops) + 2
    assert {f["properties"]["reason"] for f in kinds["unassigned"]} == {"capacity"}  # type: ignore[index]


def test_plan_serialises_to_json_for_the_api() -> None:
    plan = solve_plan(make_request(10, trucks=1, time_limit_s=0))
    again = Plan.model_validate_json(plan.model_dump_json())
    assert again == plan
    assert plan.routes[0].stops[0].eta.utcoffset() == timedelta(hours=5)


# --- choosing bins, the shift, the settings ----------------------------------------------------


def test_select_due_by_level_and_forecast() -> None:
    soon, later = NOW + timedelta(hours=5), NOW + timedelta(hours=7)
    levels = [
        Reading("at", 0, 0, 80.0, 240.0),
        Reading("over", 0, 0, 97.0, 660.0),
        Reading("soon", 0, 0, 60.0, 240.0, forecast_full_at=soon),
        Reading("naive", 0, 0, 60.0, None, forecast_full_at=soon.replace(tzinfo=None)),
        Reading("later", 0, 0, 60.0, 240.0, forecast_full_at=later),
        Reading("unknown", 0, 0, 79.9, 240.0),
        Reading("overflow", 0, 0, 130.0, 120.0),
        Reading("nan", 0, 0, math.nan, 240.0, forecast_full_at=soon),
    ]
    due = select_due(levels, NOW, horizon_h=6, threshold_pct=80)
    by = {b.device_id: b for b in due}
    assert [b.device_id for b in due] == ["overflow", "over", "at", "naive", "soon"]
    assert by["at"].due == "now"
    assert by["soon"].due == "forecast"
    assert by["over"].load_l == pytest.approx(660 * 0.97)
    assert by["soon"].load_l == pytest.approx(240 * 0.80)  # planned at the threshold
    assert by["overflow"].load_l == pytest.approx(120)  # never more than the volume
    assert by["naive"].capacity_l == 240
    assert by["naive"].forecast_full_at == soon
    assert "nan" not in by
    assert "later" not in by
    assert "unknown" not in by
    assert len(select_due(levels, NOW, horizon_h=8)) == 6


def test_shift_window() -> None:
    s = PlanSettings()  # 06:00–14:00, UTC+5
    tz = s.tz
    day = datetime(2026, 12, 1, tzinfo=tz)
    assert s.shift_window(day.replace(hour=4)) == (day.replace(hour=6), day.replace(hour=14))
    noon = day.replace(hour=12, minute=30)
    assert s.shift_window(noon) == (noon, day.replace(hour=14))
    nxt = day + timedelta(days=1)
    assert s.shift_window(day.replace(hour=15)) == (nxt.replace(hour=6), nxt.replace(hour=14))
    night = PlanSettings(shift_start=dtime(22, 0), shift_end=dtime(6, 0))
    at2 = nxt.replace(hour=2)
    assert night.shift_window(at2) == (at2, nxt.replace(hour=6))


def test_settings_parse_depots_and_refuse_nonsense() -> None:
    s = PlanSettings.model_validate({"depots": {"Almaty": "43.3, 76.9"}, "trucks": "4"})
    assert s.depots == {"almaty": Depot(lat=43.3, lon=76.9)}
    assert s.trucks == 4
    assert set(PlanSettings().depots) == {"almaty", "astana"}
    for bad in (
        {"shift_start": "06:00", "shift_end": "06:00"},
        {"depots": {"x": "43.3"}},
        {"detour_factor": 0.5},
        {"time_limit_s": -1},
        {"trucks": -1},
    ):
        with pytest.raises(ValidationError):
            PlanSettings.model_validate(bad)
    with pytest.raises(PlanUnavailable) as e:
        PlanSettings().request("shymkent", [], NOW)
    assert e.value.reason == "unknown_region"


def test_settings_nest_as_taza_plan_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recipe ingest/config.py uses: ``plan: PlanSettings`` read from ``TAZA_PLAN_*``."""

    class Outer(BaseSettings):
        model_config = SettingsConfigDict(
            env_prefix="TAZA_", env_nested_delimiter="_", env_nested_max_split=1
        )
        mqtt_url: str = "mqtt://127.0.0.1:1883"
        plan: PlanSettings = Field(default_factory=PlanSettings)

    monkeypatch.setenv("TAZA_MQTT_URL", "mqtt://127.0.0.1:1884")
    monkeypatch.setenv("TAZA_PLAN_TRUCKS", "5")
    monkeypatch.setenv("TAZA_PLAN_TRUCK_CAPACITY_L", "9000")
    monkeypatch.setenv("TAZA_PLAN_SHIFT_START", "07:30")
    monkeypatch.setenv("TAZA_PLAN_DEPOTS", '{"almaty": "43.1,76.8"}')
    s = Outer()
    assert s.mqtt_url.endswith(":1884")
    assert (s.plan.trucks, s.plan.truck_capacity_l) == (5, 9000)
    assert s.plan.shift_start == dtime(7, 30)
    assert s.plan.depots == {"almaty": Depot(lat=43.1, lon=76.8)}


def test_a_bin_that_would_fit_is_reported_as_the_solvers_limit() -> None:
    from ingest.plan.solve import _unassigned

    req = make_request(3, trucks=1)
    inst = Instance.of(req)
    u = _unassigned(req, inst, [[1]], 2)
    assert u.device_id == req.bins[1].device_id
    assert u.reason == "solver_limit"
