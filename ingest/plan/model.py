"""What the planner takes and gives: pydantic models, so the HTTP API can serialise them as is.

Times are aware datetimes (RFC 3339 in JSON); distances in km; loads in litres of bin
contents (loose, as the bins hold them).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

Due = Literal["now", "forecast"]
"""``now``: at or above the threshold; ``forecast``: predicted to reach it before the horizon."""

UnassignedReason = Literal["no_trucks", "capacity", "shift_window", "solver_limit"]
"""Why a due bin is in no route:

- ``no_trucks``: the request had no truck;
- ``capacity``: its load does not fit any truck (alone, or beside the loads already planned);
- ``shift_window``: it cannot be reached, served and driven back to the depot before the shift ends
  (alone, or after the stops already planned);
- ``solver_limit``: it would fit, but the solver did not place it within its time limit.
"""

SolverName = Literal["ortools", "fallback"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Depot(_Frozen):
    """Where a region's trucks start and end their shift (and unload)."""

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    name: str = ""

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, v: Any) -> Any:
        """``"43.33,76.93"`` is accepted too: one env var or TOML string per depot."""
        if isinstance(v, str):
            lat, sep, lon = v.partition(",")
            if not sep:
                raise ValueError(f"expected 'LAT,LON', got {v!r}")
            return {"lat": lat.strip(), "lon": lon.strip()}
        return v


class Bin(_Frozen):
    """A candidate bin: what the fleet state knows of it, and why it is due."""

    device_id: str
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    fill_pct: float = Field(ge=0)
    capacity_l: float = Field(gt=0)
    fraction: str | None = None
    site: str | None = None
    forecast_full_at: AwareDatetime | None = None
    due: Due
    load_l: float = Field(ge=0, description="litres the truck takes from it (see select_due)")


class PlanRequest(_Frozen):
    """One planning problem: the due bins of a region and the means to empty them."""

    region: str
    depot: Depot
    bins: tuple[Bin, ...]
    trucks: int = Field(ge=0, le=200)
    truck_capacity_l: float = Field(gt=0)
    shift_start: AwareDatetime
    shift_end: AwareDatetime
    service_time_s: float = Field(ge=0, le=3600)
    speed_kmh: float = Field(gt=0, le=150)
    detour_factor: float = Field(ge=1, le=5)
    time_limit_s: float = Field(ge=0, le=600)
    horizon_h: float = Field(0, ge=0, description="informational: how far forecasts were read")
    threshold_pct: float = Field(80, ge=0, le=100, description="informational: 'full' level")

    def cache_key(self) -> tuple[Any, ...]:
        """What makes two requests for a region the same question (the bins are the state's)."""
        return (
            self.region,
            self.trucks,
            self.truck_capacity_l,
            self.service_time_s,
            self.speed_kmh,
            self.detour_factor,
            self.time_limit_s,
            self.horizon_h,
            self.threshold_pct,
        )


class Stop(_Frozen):
    seq: int = Field(description="1 for the first bin after the depot")
    device_id: str
    lat: float
    lon: float
    due: Due
    fill_pct: float
    load_l: float
    eta: datetime = Field(description="arrival at the bin; service starts then")
    leg_km: float = Field(description="road km from the previous stop (or the depot)")


class Route(_Frozen):
    truck: int = Field(description="1-based truck number")
    stops: tuple[Stop, ...]
    distance_km: float = Field(description="depot → stops → depot, road km")
    load_l: float
    duration_s: float = Field(description="leaving the depot to being back, service included")
    start: datetime
    end: datetime


class Unassigned(_Frozen):
    device_id: str
    due: Due
    fill_pct: float
    load_l: float
    lat: float
    lon: float
    reason: UnassignedReason
    detail: str


class Plan(_Frozen):
    region: str
    depot: Depot
    shift_start: datetime
    shift_end: datetime
    trucks: int
    truck_capacity_l: float
    routes: tuple[Route, ...]
    unassigned: tuple[Unassigned, ...]
    distance_km: float = Field(description="all routes")
    bins_due: int
    bins_served: int
    solver: SolverName = Field(description="whose routes these are")
    solver_time_s: float = Field(description="wall time of that solver")
    time_limit_s: float
    solver_error: str | None = Field(None, description="why OR-Tools did not answer, if it did not")
    fallback_km: float = Field(description="nearest-neighbour + 2-opt on the same instance")
    fallback_served: int
    fallback_time_s: float
    improvement_ratio: float | None = Field(
        None, description="fallback km ÷ OR-Tools km (> 1: OR-Tools is shorter); null without it"
    )

    def to_geojson(self) -> dict[str, Any]:
        """RFC 7946 FeatureCollection: the depot, stops and unassigned bins as Points, routes as
        LineStrings (depot → stops → depot). Coordinates are [lon, lat]."""
        feats: list[dict[str, Any]] = [
            _point(self.depot.lon, self.depot.lat, kind="depot", region=self.region)
        ]
        for r in self.routes:
            line = [[self.depot.lon, self.depot.lat]]
            line += [[s.lon, s.lat] for s in r.stops]
            line.append([self.depot.lon, self.depot.lat])
            feats.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "LineString", "coordinates": line},
                    "properties": {
                        "kind": "route",
                        "truck": r.truck,
                        "distance_km": r.distance_km,
                        "load_l": r.load_l,
                        "duration_s": r.duration_s,
                        "stops": len(r.stops),
                        "start": r.start.isoformat(),
                        "end": r.end.isoformat(),
                    },
                }
            )
            for s in r.stops:
                feats.append(
                    _point(
                        s.lon,
                        s.lat,
                        kind="stop",
                        truck=r.truck,
                        seq=s.seq,
                        device_id=s.device_id,
                        due=s.due,
                        fill_pct=s.fill_pct,
                        load_l=s.load_l,
                        eta=s.eta.isoformat(),
                    )
                )
        for u in self.unassigned:
            feats.append(
                _point(
                    u.lon,
                    u.lat,
                    kind="unassigned",
                    device_id=u.device_id,
                    due=u.due,
                    fill_pct=u.fill_pct,
                    reason=u.reason,
                    detail=u.detail,
                )
            )
        return {
            "type": "FeatureCollection",
            "features": feats,
            "properties": {
                "region": self.region,
                "solver": self.solver,
                "distance_km": self.distance_km,
                "improvement_ratio": self.improvement_ratio,
            },
        }


def _point(lon: float, lat: float, **props: Any) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
        "properties": props,
    }
