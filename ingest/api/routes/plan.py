"""``GET /api/v1/collection-plan``: the bins due, ordered into routes by the planner."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from ingest.api.context import ApiContext, context
from ingest.api.errors import STATE_RESPONSES, ErrorOut, Unavailable
from ingest.api.params import DURATION_PATTERN, RegionQ, duration_s

router = APIRouter(tags=["collection plan"])


class PlanFormat(StrEnum):
    json = "json"
    geojson = "geojson"


@router.get(
    "/collection-plan",
    responses={
        **STATE_RESPONSES,
        200: {"description": "the plan (JSON, or a GeoJSON FeatureCollection)"},
        503: {"model": ErrorOut, "description": "no fleet state or no planner"},
    },
)
async def collection_plan(
    region: RegionQ = None,
    horizon: Annotated[
        str, Query(pattern=DURATION_PATTERN, description="bins due before now + horizon")
    ] = "6h",
    trucks: Annotated[
        int | None, Query(ge=1, le=100, description="trucks (default: settings)")
    ] = None,
    format: Annotated[PlanFormat, Query(description="json or geojson")] = PlanFormat.json,
    ctx: ApiContext = Depends(context),
) -> JSONResponse:
    """Bins at or above their threshold now, or by forecast before the horizon, as routes
    from the region's depot with stops, ETAs, distance and load; what does not fit is listed
    as unassigned with the reason."""
    ctx.need_fleet()
    if ctx.planner is None:
        raise Unavailable("the collection planner is not running", reason="no_planner")
    doc: dict[str, Any] = await ctx.planner(
        region, float(duration_s(horizon)), trucks, format is PlanFormat.geojson
    )
    media = "application/geo+json" if format is PlanFormat.geojson else "application/json"
    return JSONResponse(doc, media_type=media)
