"""``GET /api/v1/collection-plan``: the region's due bins ordered into routes (ingest/plan).

The bins and their levels are the fill-levels endpoint's; the solve runs in the planner's
process pool, so the service's loop (intake, acknowledgements) never waits for it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from ingest.api.auth import scoped
from ingest.api.context import ApiContext, context
from ingest.api.errors import ERROR_RESPONSES, ErrorOut, NotFound, Unavailable
from ingest.api.params import DURATION_PATTERN, REGION_PATTERN, duration_s
from ingest.api.routes.fill_levels import forecast_of
from ingest.plan import FillReading, Plan, PlanUnavailable

router = APIRouter(tags=["collection plan"])
MAX_HORIZON_H = 168.0


class PlanFormat(StrEnum):
    json = "json"
    geojson = "geojson"


def readings(ctx: ApiContext, region: str) -> list[FillReading]:
    out = []
    for st in ctx.need_fleet().states():
        src, info, level = st.source, st.source.info, st.level
        if src.kind != "ecobox" or src.region != region or level is None or info is None:
            continue  # a bin the registry does not place cannot be routed
        f = forecast_of(ctx, st)
        full_at = None if f is None or f.full_at_ms is None else f.full_at_ms / 1000
        out.append(
            FillReading(
                src.device_id, info.lat, info.lon, level, info.capacity_l, info.fraction,
                info.site, None if full_at is None else datetime.fromtimestamp(full_at, UTC),
            )
        )  # fmt: skip
    return out


@router.get(
    "/collection-plan",
    response_model=None,
    responses={
        **ERROR_RESPONSES,
        200: {
            "model": Plan,
            "description": "the plan; with format=geojson an RFC 7946 FeatureCollection",
            "content": {"application/geo+json": {"schema": {"type": "object"}}},
        },
        404: {"model": ErrorOut, "description": "no depot for the region (settings)"},
        503: {"model": ErrorOut, "description": "no fleet state, or the planner is busy/down"},
    },
)
async def collection_plan(
    request: Request,
    region: Annotated[str, Query(pattern=REGION_PATTERN, description="the region to plan")],
    horizon: Annotated[
        str | None,
        Query(
            pattern=DURATION_PATTERN,
            description="also bins forecast full before now + horizon (default: settings; "
            "at most 7d)",
        ),
    ] = None,
    trucks: Annotated[
        int | None, Query(ge=0, le=200, description="trucks (default: settings)")
    ] = None,
    format: Annotated[PlanFormat, Query(description="json or geojson")] = PlanFormat.json,
    ctx: ApiContext = Depends(context),
) -> JSONResponse:
    """Bins at or above the threshold now, or by forecast before the horizon, as routes from
    the region's depot with stops, ETAs, distance and load; bins that do not fit are listed as
    unassigned with the reason. The solver's gain over the fallback is `improvement_ratio`."""
    region = scoped(request, region) or region
    levels = readings(ctx, region)
    settings, pool = ctx.plan_settings, ctx.plan_pool
    if settings is None or pool is None:
        raise Unavailable("the collection planner is not running", reason="no_planner")
    horizon_h = None if horizon is None else min(MAX_HORIZON_H, duration_s(horizon) / 3600)
    try:
        req = settings.request(
            region, levels, datetime.now(UTC), horizon_h=horizon_h, trucks=trucks
        )
        plan = await pool.solve(req)
    except PlanUnavailable as exc:
        if exc.reason == "unknown_region":
            raise NotFound(exc.message, param="region", reason="unknown_region") from None
        raise Unavailable(exc.message, reason=f"plan_{exc.reason}") from None
    if format is PlanFormat.geojson:
        return JSONResponse(plan.to_geojson(), media_type="application/geo+json")
    doc: dict[str, Any] = plan.model_dump(mode="json")
    return JSONResponse(doc)
