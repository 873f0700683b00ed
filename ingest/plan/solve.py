"""One plan from one request: the fallback always, OR-Tools when allowed, the better one kept.

A plain function of picklable arguments, so that :class:`ingest.plan.pool.PlanPool` can run
it in another process (both solvers hold the GIL for the whole solve).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from itertools import pairwise

from ingest.plan.errors import SolverFailed
from ingest.plan.fallback import solve_fallback
from ingest.plan.instance import Instance, priority_penalty
from ingest.plan.model import (
    Bin,
    Plan,
    PlanRequest,
    Route,
    SolverName,
    Stop,
    Unassigned,
    UnassignedReason,
)

Solver = Callable[[Instance, tuple[Bin, ...], float, list[list[int]]], list[list[int]]]


def _ortools(
    inst: Instance, bins: tuple[Bin, ...], limit: float, initial: list[list[int]]
) -> list[list[int]]:
    from ingest.plan.ortools_solver import solve_ortools

    return solve_ortools(inst, bins, limit, initial)


def solve_plan(req: PlanRequest, solver: Solver = _ortools) -> Plan:
    """Never raises for a valid request: a solver failure is reported in ``solver_error``."""
    inst = Instance.of(req)
    t0 = time.perf_counter()
    fb = solve_fallback(inst) if req.trucks else []
    fb_time = time.perf_counter() - t0

    routes, used_time, error = fb, fb_time, None
    used: SolverName = "fallback"
    if req.trucks and req.bins and req.time_limit_s > 0:
        t1 = time.perf_counter()
        try:
            found = solver(inst, req.bins, req.time_limit_s, fb)
            _check_routes(inst, found)
        except SolverFailed as e:
            error = f"{e.reason}: {e.message}"
        except Exception as e:  # the one boundary where OR-Tools' own errors are mapped
            error = f"exception: {type(e).__name__}: {e}"
        else:
            if _objective(inst, req.bins, found) <= _objective(inst, req.bins, fb):
                routes, used, used_time = found, "ortools", time.perf_counter() - t1
            else:
                error = "worse_than_fallback: kept the fallback's routes"
    return _plan(req, inst, routes, used, used_time, error, fb, fb_time)


def _check_routes(inst: Instance, routes: list[list[int]]) -> None:
    seen = [n for r in routes for n in r]
    if (
        len(routes) != inst.vehicles
        or len(seen) != len(set(seen))
        or any(not 0 < n < inst.nodes for n in seen)
        or not all(inst.feasible(r) for r in routes)
    ):
        raise SolverFailed("invalid_routes", "the solver's routes break a constraint")


def _objective(inst: Instance, bins: tuple[Bin, ...], routes: list[list[int]]) -> int:
    served = {n for r in routes for n in r}
    dropped = sum(priority_penalty(b) for i, b in enumerate(bins, 1) if i not in served)
    return sum(inst.route_m(r) for r in routes) + dropped


def _plan(
    req: PlanRequest,
    inst: Instance,
    routes: list[list[int]],
    solver: SolverName,
    solver_time: float,
    error: str | None,
    fb: list[list[int]],
    fb_time: float,
) -> Plan:
    out: list[Route] = []
    for truck, order in enumerate(routes, start=1):
        if not order:
            continue
        stops: list[Stop] = []
        t, prev = 0, 0
        for seq, node in enumerate(order, start=1):
            t += int(inst.travel_s[prev, node])
            b = req.bins[node - 1]
            stops.append(
                Stop(
                    seq=seq,
                    device_id=b.device_id,
                    lat=b.lat,
                    lon=b.lon,
                    due=b.due,
                    fill_pct=b.fill_pct,
                    load_l=b.load_l,
                    eta=req.shift_start + timedelta(seconds=t),
                    leg_km=int(inst.dist_m[prev, node]) / 1000,
                )
            )
            t += inst.service_s
            prev = node
        dur = inst.route_s(order)
        out.append(
            Route(
                truck=truck,
                stops=tuple(stops),
                distance_km=inst.route_m(order) / 1000,
                load_l=sum(s.load_l for s in stops),
                duration_s=dur,
                start=req.shift_start,
                end=req.shift_start + timedelta(seconds=dur),
            )
        )
    served = {n for r in routes for n in r}
    unassigned = tuple(
        _unassigned(req, inst, routes, node) for node in range(1, inst.nodes) if node not in served
    )
    km = sum(r.distance_km for r in out)
    fb_km = sum(inst.route_m(r) for r in fb) / 1000
    return Plan(
        region=req.region,
        depot=req.depot,
        shift_start=req.shift_start,
        shift_end=req.shift_end,
        trucks=req.trucks,
        truck_capacity_l=req.truck_capacity_l,
        routes=tuple(out),
        unassigned=unassigned,
        distance_km=km,
        bins_due=len(req.bins),
        bins_served=len(served),
        solver=solver,
        solver_time_s=solver_time,
        time_limit_s=req.time_limit_s,
        solver_error=error,
        fallback_km=fb_km,
        fallback_served=sum(len(r) for r in fb),
        fallback_time_s=fb_time,
        improvement_ratio=fb_km / km if solver == "ortools" and km > 0 else None,
    )


def _unassigned(req: PlanRequest, inst: Instance, routes: list[list[int]], node: int) -> Unassigned:
    b = req.bins[node - 1]

    def out(reason: UnassignedReason, detail: str) -> Unassigned:
        return Unassigned(
            device_id=b.device_id,
            due=b.due,
            fill_pct=b.fill_pct,
            load_l=b.load_l,
            lat=b.lat,
            lon=b.lon,
            reason=reason,
            detail=detail,
        )

    demand = int(inst.demand_l[node])
    alone = int(inst.travel_s[0, node] + inst.travel_s[node, 0]) + inst.service_s
    if not req.trucks:
        return out("no_trucks", "the plan has no truck")
    if demand > inst.capacity_l:
        return out("capacity", f"{b.load_l:.0f} L is more than a truck takes ({inst.capacity_l} L)")
    if alone > inst.horizon_s:
        return out(
            "shift_window",
            f"a round trip to it takes {alone / 60:.0f} min, the shift has "
            f"{inst.horizon_s / 60:.0f} min left",
        )
    room = [inst.route_load(r) + demand <= inst.capacity_l for r in routes]
    spare = [_insertion_s(inst, r, node) <= inst.horizon_s for r in routes]
    if any(r and s for r, s in zip(room, spare, strict=True)):
        return out("solver_limit", "it would fit; the solver did not place it within its limit")
    if not any(room):
        return out("capacity", "every truck is full with more urgent bins")
    if not any(spare):
        return out("shift_window", "no truck has the time left in the shift to add it")
    return out("capacity", "the trucks with room have no time left; those with time, no room")


def _insertion_s(inst: Instance, order: list[int], node: int) -> int:
    """The route's duration with ``node`` inserted where it costs least time."""
    path = [0, *order, 0]
    t = inst.travel_s
    extra = min(int(t[a, node] + t[node, b] - t[a, b]) for a, b in pairwise(path))
    return inst.route_s(order) + extra + inst.service_s
