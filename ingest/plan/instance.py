"""A request as integer matrices, shared by both solvers, and the cost of a route.

Node 0 is the depot, node i the request's bin i-1. Distances are whole metres and travel
times whole seconds (rounded up), so OR-Tools, the fallback and the ETAs in the output all
count the same numbers: a route one solver finds feasible is feasible for the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ingest.plan.model import Bin, PlanRequest

EARTH_RADIUS_M = 6_371_008.8
PENALTY_BASE = 10_000_000
"""metres: 10,000 km, more than any city route; dropping a bin always costs more than driving"""

IntMatrix = npt.NDArray[np.int64]


def haversine_m(
    lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Great-circle metres (broadcasting)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp = p2 - p1
    dl = np.radians(lon2) - np.radians(lon1)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))))


@dataclass(frozen=True, slots=True)
class Instance:
    dist_m: IntMatrix
    """road metres between nodes: haversine × detour factor"""
    travel_s: IntMatrix
    """driving seconds between nodes at the average speed"""
    service_s: int
    demand_l: npt.NDArray[np.int64]
    """litres per node (0 for the depot), rounded up"""
    capacity_l: int
    horizon_s: int
    """seconds from the plan's start to the shift's end"""
    vehicles: int

    @property
    def nodes(self) -> int:
        return int(self.dist_m.shape[0])

    @classmethod
    def of(cls, req: PlanRequest) -> Instance:
        lat = np.array([req.depot.lat] + [b.lat for b in req.bins], dtype=np.float64)
        lon = np.array([req.depot.lon] + [b.lon for b in req.bins], dtype=np.float64)
        road = haversine_m(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
        road *= req.detour_factor
        speed_ms = req.speed_kmh / 3.6
        demand = [0] + [math.ceil(b.load_l) for b in req.bins]
        return cls(
            dist_m=np.rint(road).astype(np.int64),
            travel_s=np.ceil(road / speed_ms).astype(np.int64),
            service_s=math.ceil(req.service_time_s),
            demand_l=np.array(demand, dtype=np.int64),
            capacity_l=math.floor(req.truck_capacity_l),
            horizon_s=max(0, math.floor((req.shift_end - req.shift_start).total_seconds())),
            vehicles=req.trucks,
        )

    def route_m(self, order: list[int]) -> int:
        """Metres of depot → order → depot."""
        path = [0, *order, 0]
        return int(self.dist_m[path[:-1], path[1:]].sum())

    def route_s(self, order: list[int]) -> int:
        """Seconds from leaving the depot to being back, service at every stop included."""
        path = [0, *order, 0]
        return int(self.travel_s[path[:-1], path[1:]].sum()) + self.service_s * len(order)

    def route_load(self, order: list[int]) -> int:
        return int(self.demand_l[order].sum()) if order else 0

    def feasible(self, order: list[int]) -> bool:
        return self.route_load(order) <= self.capacity_l and self.route_s(order) <= self.horizon_s


def priority_penalty(b: Bin) -> int:
    """What leaving ``b`` out costs, in metres: due now over forecast, fuller over emptier."""
    urgency = 2.0 if b.due == "now" else 1.0
    return int(PENALTY_BASE * (urgency + min(b.fill_pct, 150.0) / 100.0))
