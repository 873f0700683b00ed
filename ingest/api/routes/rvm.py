"""``GET /api/v1/rvm/summary``: what the reverse vending machines took (``deposit`` points).

Item points (with a ``material`` tag) give containers per material; transaction points (no
``material``) give transactions, rejected containers and refunds — see docs/protocol.md.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends

from ingest.api.context import ApiContext, context
from ingest.api.errors import HISTORY_RESPONSES
from ingest.api.influx import where
from ingest.api.models import RvmDevice, RvmSummary
from ingest.api.params import FromQ, RegionQ, ToQ, span
from ingest.api.routes.devices import iso_dt

router = APIRouter(tags=["rvm"])
ITEM_POINTS = "\"material\" <> ''"
TRANSACTION_POINTS = "\"material\" = ''"


@router.get("/rvm/summary", response_model=RvmSummary, responses=HISTORY_RESPONSES)
async def rvm_summary(
    region: RegionQ = None,
    from_: FromQ = None,
    to: ToQ = None,
    ctx: ApiContext = Depends(context),
) -> RvmSummary:
    """Totals in `[from, to)` (default: the last 7 days), overall and per machine."""
    r = span(from_, to, timedelta(days=7))
    influx = ctx.need_influx()
    tags = {"region": region}
    items_q = (
        f'SELECT sum("count") AS "containers" FROM "deposit" '
        f"{where(r.start, r.end, tags, ITEM_POINTS)} "
        'GROUP BY "device_id", "region", "material"'
    )
    txn_q = (
        'SELECT count("txn_id") AS "transactions", sum("rejected") AS "rejected", '
        f'sum("refund_minor") AS "refund_minor" FROM "deposit" '
        f"{where(r.start, r.end, tags, TRANSACTION_POINTS)} "
        'GROUP BY "device_id", "region"'
    )
    items_s, txn_s = ([], []) if r.empty else await influx.query(items_q, txn_q)
    by_material: dict[str, int] = {}
    devices: dict[str, RvmDevice] = {}

    def device(tags: dict[str, str]) -> RvmDevice:
        d = tags.get("device_id", "")
        if d not in devices:
            devices[d] = RvmDevice(
                device_id=d,
                region=tags.get("region", ""),
                containers=0,
                transactions=0,
                rejected=0,
                refund_minor=0,
            )
        return devices[d]

    for s in items_s:
        n = sum(int(row["containers"] or 0) for row in s.rows)
        material = s.tags.get("material", "")
        by_material[material] = by_material.get(material, 0) + n
        device(s.tags).containers += n
    for s in txn_s:
        d = device(s.tags)
        for row in s.rows:
            d.transactions += int(row["transactions"] or 0)
            d.rejected += int(row["rejected"] or 0)
            d.refund_minor += int(row["refund_minor"] or 0)
    listed = sorted(devices.values(), key=lambda d: d.device_id)
    return RvmSummary(
        region=region,
        start=iso_dt(r.start),
        end=iso_dt(r.end),
        containers=sum(by_material.values()),
        containers_by_material=dict(sorted(by_material.items())),
        transactions=sum(d.transactions for d in listed),
        rejected=sum(d.rejected for d in listed),
        refund_minor=sum(d.refund_minor for d in listed),
        devices=listed,
    )
