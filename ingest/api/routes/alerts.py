"""``GET /api/v1/alerts`` (firing now, from the fleet state) and ``/alerts/history`` (InfluxDB)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from ingest.api.auth import scoped
from ingest.api.context import ApiContext, context
from ingest.api.errors import HISTORY_RESPONSES, STATE_RESPONSES
from ingest.api.influx import where
from ingest.api.models import AlertEvent, AlertHistory, AlertOut, Alerts, ForecastOut
from ingest.api.params import FromQ, RegionQ, ToQ, span
from ingest.fleet import AlertTransition
from ingest.fleet.output import rfc3339

router = APIRouter(tags=["alerts"])
ALERT_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
AlertQ = Annotated[
    str | None,
    Query(pattern=ALERT_PATTERN, description="only this alert (full, offline, bin_full_pet…)"),
]


class StateQ(StrEnum):
    firing = "firing"
    resolved = "resolved"


def alert_out(t: AlertTransition) -> AlertOut:
    s, f, info = t.source, t.forecast, t.source.info
    return AlertOut(
        alert=t.alert,
        state=t.state.value,
        device_id=s.device_id,
        region=s.region,
        kind=s.kind,
        severity=t.severity.value,
        value=t.value,
        threshold=t.threshold,
        since=rfc3339(t.since_ms),
        episode=t.episode,
        cause=t.cause.value,
        site=info.site if info else None,
        fraction=info.fraction if info else None,
        lat=info.lat if info else None,
        lon=info.lon if info else None,
        forecast=None
        if f is None
        else ForecastOut(
            rate_pct_per_h=f.rate_pct_per_h,
            full_at=None if f.full_at_ms is None else rfc3339(f.full_at_ms),
            threshold_pct=f.threshold_pct,
            points=f.points,
        ),
    )


@router.get("/alerts", response_model=Alerts, responses=STATE_RESPONSES)
async def current_alerts(
    request: Request,
    region: RegionQ = None,
    alert: AlertQ = None,
    state: Annotated[StateQ | None, Query(description="current alerts are all `firing`")] = None,
    ctx: ApiContext = Depends(context),
) -> Alerts:
    """The alerts firing now, oldest first."""
    region = scoped(request, region)
    fleet = ctx.need_fleet()
    if state is StateQ.resolved:
        return Alerts(items=[])
    found = [
        t
        for t in fleet.firing()
        if (region is None or t.source.region == region) and (alert is None or t.alert == alert)
    ]
    found.sort(key=lambda t: (t.since_ms, t.episode))
    return Alerts(items=[alert_out(t) for t in found])


def _opt(row: dict[str, Any], key: str) -> Any:
    v = row.get(key)
    return None if v == "" else v


@router.get("/alerts/history", response_model=AlertHistory, responses=HISTORY_RESPONSES)
async def alert_history(
    request: Request,
    from_: FromQ = None,
    to: ToQ = None,
    region: RegionQ = None,
    alert: AlertQ = None,
    state: Annotated[StateQ | None, Query(description="firing or resolved")] = None,
    limit: Annotated[int, Query(ge=1, le=10000, description="newest events kept")] = 1000,
    ctx: ApiContext = Depends(context),
) -> AlertHistory:
    """Alert transitions (firing, resolved) in `[from, to)`, newest first."""
    region = scoped(request, region)
    r = span(from_, to)
    influx = ctx.need_influx()
    extra = [] if state is None else [f"\"state\" = '{state.value}'"]
    q = (
        f'SELECT * FROM "alert" {where(r.start, r.end, {"region": region, "alert": alert}, *extra)}'
        f" ORDER BY time DESC LIMIT {limit + 1}"
    )
    (series,) = ([],) if r.empty else await influx.query(q)
    rows = [row for s in series for row in s.rows]
    items = [
        AlertEvent(
            time=rfc3339(row["time"]),
            alert=str(row.get("alert")),
            state=str(row.get("state")),
            device_id=str(row.get("device_id")),
            region=str(row.get("region")),
            kind=_opt(row, "kind"),
            severity=_opt(row, "severity"),
            value=_opt(row, "value"),
            episode=_opt(row, "episode"),
            cause=_opt(row, "cause"),
            site=_opt(row, "site"),
            fraction=_opt(row, "fraction"),
        )
        for row in rows[:limit]
    ]
    return AlertHistory(items=items, truncated=len(rows) > limit)
