"""OR-Tools' vehicle routing: capacity, the shift as a time dimension, every bin optional.

Arc cost is road metres. Every bin is a disjunction with a penalty far above any detour, so a
bin is dropped only when it cannot fit (capacity or shift); the penalty grows with priority —
a bin due now over one due by forecast, a fuller one over an emptier one — so when not all
fit, the least urgent are left out. The search starts from the fallback's routes and guided
local search improves on them until the time limit: the result never costs more than the
fallback (distance + penalties of dropped bins).
"""

from __future__ import annotations

import math
from typing import Any

from ortools.constraint_solver import (  # type: ignore[import-untyped]
    pywrapcp,
    routing_enums_pb2,
)

from ingest.plan.errors import SolverFailed
from ingest.plan.instance import Instance, priority_penalty
from ingest.plan.model import Bin


def solve_ortools(
    inst: Instance, bins: tuple[Bin, ...], time_limit_s: float, initial: list[list[int]]
) -> list[list[int]]:
    """Routes as lists of node indices, one per truck; raises :class:`SolverFailed`."""
    manager = pywrapcp.RoutingIndexManager(inst.nodes, inst.vehicles, 0)
    routing = pywrapcp.RoutingModel(manager)
    dist = routing.RegisterTransitMatrix(inst.dist_m.tolist())
    routing.SetArcCostEvaluatorOfAllVehicles(dist)
    service = [0] + [inst.service_s] * (inst.nodes - 1)
    timed = inst.travel_s + [[s] for s in service]
    routing.AddDimension(
        routing.RegisterTransitMatrix(timed.tolist()), 0, inst.horizon_s, True, "time"
    )
    demand = routing.RegisterUnaryTransitVector(inst.demand_l.tolist())
    routing.AddDimensionWithVehicleCapacity(
        demand, 0, [inst.capacity_l] * inst.vehicles, True, "load"
    )
    for node, b in enumerate(bins, start=1):
        routing.AddDisjunction([manager.NodeToIndex(node)], priority_penalty(b))

    params = pywrapcp.DefaultRoutingSearchParameters()
    params.first_solution_strategy = routing_enums_pb2.FirstSolutionStrategy.PATH_CHEAPEST_ARC
    params.local_search_metaheuristic = (
        routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH
    )
    secs = max(time_limit_s, 0.001)
    params.time_limit.seconds = int(secs)
    params.time_limit.nanos = int((secs - math.floor(secs)) * 1e9)
    routing.CloseModelWithParameters(params)

    warm = [[int(manager.NodeToIndex(n)) for n in r] for r in initial]
    start: Any = routing.ReadAssignmentFromRoutes(warm, True) if any(warm) else None
    if start is not None:
        solution = routing.SolveFromAssignmentWithParameters(start, params)
    else:
        solution = routing.SolveWithParameters(params)
    if solution is None:
        raise SolverFailed("no_solution", f"OR-Tools found no solution (status {routing.status()})")
    routes: list[list[int]] = []
    for v in range(inst.vehicles):
        order: list[int] = []
        idx = solution.Value(routing.NextVar(routing.Start(v)))
        while not routing.IsEnd(idx):
            order.append(int(manager.IndexToNode(idx)))
            idx = solution.Value(routing.NextVar(idx))
        routes.append(order)
    return routes
