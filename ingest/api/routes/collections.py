"""``GET /api/v1/collections``: detected emptyings (the ``collection`` measurement)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from ingest.api.context import ApiContext, context
from ingest.api.errors import HISTORY_RESPONSES
from ingest.api.influx import where
from ingest.api.models import CollectionOut, Collections
from ingest.api.params import DEVICE_ID_PATTERN, FromQ, RegionQ, ToQ, span
from ingest.fleet.output import rfc3339

router = APIRouter(tags=["collections"])


@router.get("/collections", response_model=Collections, responses=HISTORY_RESPONSES)
async def collections(
    region: RegionQ = None,
    device_id: Annotated[str | None, Query(pattern=DEVICE_ID_PATTERN)] = None,
    from_: FromQ = None,
    to: ToQ = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    ctx: ApiContext = Depends(context),
) -> Collections:
    """Emptyings in `[from, to)` (default: the last 24 h), newest first, with the level
    before and after and the litres taken when the capacity is known."""
    r = span(from_, to)
    influx = ctx.need_influx()
    tags = {"region": region, "device_id": device_id}
    q = (
        f'SELECT * FROM "collection" {where(r.start, r.end, tags)}'
        f" ORDER BY time DESC LIMIT {limit + 1}"
    )
    (series,) = ([],) if r.empty else await influx.query(q)
    rows = [row for s in series for row in s.rows]
    registry = ctx.registry or {}
    items = [_item(row, registry) for row in rows[:limit]]
    return Collections(items=items, truncated=len(rows) > limit)


def _item(row: dict[str, Any], registry: Any) -> CollectionOut:
    device_id = str(row.get("device_id"))
    before, after = float(row["fill_before_pct"]), float(row["fill_after_pct"])
    info = registry.get(device_id)
    litres = None
    if info is not None and info.capacity_l is not None:
        litres = round(info.capacity_l * (before - after) / 100, 1)
    return CollectionOut(
        time=rfc3339(row["time"]),
        device_id=device_id,
        region=str(row.get("region")),
        site=row.get("site") or None,
        fraction=row.get("fraction") or None,
        fill_before_pct=before,
        fill_after_pct=after,
        litres=litres,
    )
