"""``GET /api/v1/fill-levels``: every eco-box's robust level and forecast, fullest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from ingest.api.auth import scoped
from ingest.api.context import ApiContext, context
from ingest.api.errors import STATE_RESPONSES
from ingest.api.models import FillLevel, FillLevels
from ingest.api.params import Fraction, RegionQ
from ingest.fleet import DeviceState, Forecast
from ingest.fleet.output import rfc3339

router = APIRouter(tags=["fill levels"])


def forecast_of(ctx: ApiContext, st: DeviceState) -> Forecast | None:
    """The fit runs once per new reading of a device, not once per request."""
    device_id = st.source.device_id
    cached = ctx.forecasts.get(device_id)
    if cached is not None and cached[0] == st.level_ts_ms:
        return cached[1]
    f = st.forecast_now()
    ctx.forecasts[device_id] = (st.level_ts_ms, f)
    return f


@router.get("/fill-levels", response_model=FillLevels, responses=STATE_RESPONSES)
async def fill_levels(
    request: Request,
    region: RegionQ = None,
    min_pct: Annotated[
        float | None, Query(ge=0, le=100, description="only bins at or above this level, %")
    ] = None,
    fraction: Annotated[Fraction | None, Query(description="only this waste fraction")] = None,
    ctx: ApiContext = Depends(context),
) -> FillLevels:
    """One item per eco-box that has a level; `forecast_full_at` is when it reaches its
    full threshold at the fitted rate (null if not rising or too few readings)."""
    region = scoped(request, region)
    fleet = ctx.need_fleet()
    items: list[FillLevel] = []
    want = None if fraction is None else str(fraction.value)
    for st in fleet.states():
        src = st.source
        level = st.level
        if src.kind != "ecobox" or level is None:
            continue
        if region is not None and src.region != region:
            continue
        if min_pct is not None and level < min_pct:
            continue
        info = src.info
        if want is not None and (info is None or info.fraction != want):
            continue
        f = forecast_of(ctx, st)
        items.append(
            FillLevel(
                device_id=src.device_id,
                fill_pct=level,
                forecast_full_at=None
                if f is None or f.full_at_ms is None
                else rfc3339(f.full_at_ms),
                fill_rate_pct_per_h=None if f is None else f.rate_pct_per_h,
                last_seen=rfc3339(max(st.last_seen_ms, 0)),
                lat=info.lat if info else None,
                lon=info.lon if info else None,
                site=info.site if info else None,
                fraction=info.fraction if info else None,
                capacity_l=info.capacity_l if info else None,
            )
        )
    items.sort(key=lambda i: (-i.fill_pct, i.device_id))
    return FillLevels(items=items)
