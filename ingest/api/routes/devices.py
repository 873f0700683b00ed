"""``GET /api/v1/devices`` (registry + current state) and ``/devices/{id}/history`` (InfluxDB)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from devices.registry import DeviceInfo
from ingest.api.context import ApiContext, context
from ingest.api.errors import (
    HISTORY_RESPONSES,
    STATE_RESPONSES,
    ErrorOut,
    UnknownDevice,
)
from ingest.api.influx import quote_ident, where
from ingest.api.models import AnomalyOut, DeviceOut, Devices, History, HistoryPoint
from ingest.api.params import (
    DEVICE_ID_PATTERN,
    DURATION_PATTERN,
    FromQ,
    RegionQ,
    ToQ,
    duration_s,
    span,
)
from ingest.fleet import DeviceState
from ingest.fleet.completeness import DAY_MS
from ingest.fleet.output import rfc3339

router = APIRouter(tags=["devices"])
MAX_POINTS = 5000
MAX_EVERY_S = 366 * 86400


def iso(ms: int | None) -> str | None:
    return None if ms is None or ms < 0 else rfc3339(ms)


def iso_dt(t: datetime) -> str:
    return rfc3339(int(t.timestamp() * 1000))


def completeness_today(state: DeviceState, now_ms: int) -> float | None:
    today = now_ms // DAY_MS * DAY_MS
    for day, received, expected in state.seq.per_day():
        if day == today and expected > 0:
            return round(100.0 * received / expected, 2)
    return None


def device_out(device_id: str, info: DeviceInfo | None, st: DeviceState | None) -> DeviceOut:
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    kind = info.kind.value if info is not None else st.source.kind if st is not None else ""
    region = info.region if info is not None else st.source.region if st is not None else ""
    heard = st is not None and st.last_heard_ms >= 0
    return DeviceOut(
        device_id=device_id,
        kind=kind,
        region=region,
        registered=info is not None,
        site=info.site if info else None,
        fraction=info.fraction if info else None,
        lat=info.lat if info else None,
        lon=info.lon if info else None,
        capacity_l=info.capacity_l if info else None,
        online=st.online if st is not None and heard else None,
        last_seen=iso(st.last_seen_ms) if st is not None else None,
        fill_pct=st.level if st is not None and kind == "ecobox" else None,
        battery_pct=st.battery_pct if st is not None else None,
        battery_v=st.battery_v if st is not None else None,
        faults=list(st.faults) if st is not None else [],
        alerts=sorted(st.alerts) if st is not None else [],
        completeness_pct_today=completeness_today(st, now_ms) if st is not None else None,
    )


@router.get("/devices", response_model=Devices, responses=STATE_RESPONSES)
async def list_devices(region: RegionQ = None, ctx: ApiContext = Depends(context)) -> Devices:
    """Every device of the fleet file and every device heard from, by `device_id`."""
    fleet = ctx.need_fleet()
    registry = ctx.registry or {}
    states = {s.source.device_id: s for s in fleet.states()}
    ids = sorted(set(registry) | set(states))
    items = [device_out(i, registry.get(i), states.get(i)) for i in ids]
    return Devices(items=[d for d in items if region is None or d.region == region])


@router.get(
    "/devices/{device_id}/history",
    response_model=History,
    responses={**HISTORY_RESPONSES, 404: {"model": ErrorOut, "description": "unknown device"}},
)
async def device_history(
    device_id: Annotated[str, Path(pattern=DEVICE_ID_PATTERN)],
    from_: FromQ = None,
    to: ToQ = None,
    every: Annotated[
        str, Query(pattern=DURATION_PATTERN, description="interval: 90s, 15m, 1h, 1d")
    ] = "15m",
    ctx: ApiContext = Depends(context),
) -> History:
    """Fill level per interval (mean, min, max) with the anomalies flagged in each."""
    info = (ctx.registry or {}).get(device_id)
    st = ctx.fleet.get(device_id) if ctx.fleet is not None else None
    if info is None and st is None:
        raise UnknownDevice(f"no device {device_id!r} in the fleet file or heard from")
    r = span(from_, to)
    influx = ctx.need_influx()
    step = duration_s(every)
    if step > MAX_EVERY_S:  # InfluxQL overflows near 292 years; one interval is the answer
        step, every = MAX_EVERY_S, f"{MAX_EVERY_S // 86400}d"
    intervals = (r.end - r.start).total_seconds() / step
    if intervals > MAX_POINTS:  # coarser, so that the answer stays bounded; `every` says so
        step = math.ceil((r.end - r.start).total_seconds() / MAX_POINTS)
        every = f"{step}s"
    kind = info.kind.value if info is not None else st.source.kind if st is not None else ""
    measurement = "rvm_bin" if kind == "rvm" else "fill"
    rng = where(r.start, r.end, {"device_id": device_id})
    agg = "max" if measurement == "rvm_bin" else "mean"
    series_q = (
        f'SELECT {agg}("fill_pct") AS "fill_pct", min("fill_pct") AS "min_pct", '
        f'max("fill_pct") AS "max_pct", count("fill_pct") AS "readings" '
        f"FROM {quote_ident(measurement)} {rng} GROUP BY time({every}) fill(none)"
    )
    anomaly_q = f'SELECT "anomaly", "value" FROM "anomaly" {rng}'
    points_s, anomalies_s = ([], []) if r.empty else await influx.query(series_q, anomaly_q)
    anomalies = [
        AnomalyOut(time=rfc3339(row["time"]), anomaly=str(row["anomaly"]), value=row["value"])
        for s in anomalies_s
        for row in s.rows
    ]
    flagged: dict[int, list[str]] = {}
    step_ms = step * 1000
    for s in anomalies_s:
        for row in s.rows:
            flagged.setdefault(row["time"] // step_ms * step_ms, []).append(str(row["anomaly"]))
    points = [
        HistoryPoint(
            time=rfc3339(row["time"]),
            fill_pct=round(row["fill_pct"], 3),
            min_pct=row["min_pct"],
            max_pct=row["max_pct"],
            readings=row["readings"],
            anomalies=sorted(set(flagged.get(row["time"], []))),
        )
        for s in points_s
        for row in s.rows
    ]
    return History(
        device_id=device_id,
        measurement=measurement,
        start=iso_dt(r.start),
        end=iso_dt(r.end),
        every=every,
        points=points,
        anomalies=anomalies,
    )
