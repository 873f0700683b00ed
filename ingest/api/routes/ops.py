"""``/metrics``, ``/healthz``, ``/readyz``: unchanged from the aiohttp server they replace.

``/healthz`` is the watchdog's verdict (see ``ingest.watchdog``): 503 names the stage that
failed or is stuck — the signal for a supervisor to restart the process.
``/readyz`` is 200 only while the subscription is granted and either the database is
reachable or the spool has room: a deployment, and a test, waits on it before sending.
With a tokens file, ``TAZA_API_METRICS_PUBLIC`` and ``TAZA_API_HEALTH_PUBLIC`` say whether
they need an operator token.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends, Response

from ingest.api.context import ApiContext, context
from ingest.metrics import CONTENT_TYPE

metrics_router = APIRouter(include_in_schema=False)
health_router = APIRouter(include_in_schema=False)
"""Two routers: with tokens, each is public or operator-only by its own setting."""


@metrics_router.get("/metrics")
async def metrics(ctx: ApiContext = Depends(context)) -> Response:
    return Response(ctx.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


@health_router.get("/healthz")
async def healthz(ctx: ApiContext = Depends(context)) -> Response:
    ok, stages = ctx.health()
    body = orjson.dumps({"healthy": ok, "stages": stages})
    return Response(body, status_code=200 if ok else 503, media_type="application/json")


@health_router.get("/readyz")
async def readyz(ctx: ApiContext = Depends(context)) -> Response:
    ok, detail = ctx.ready()
    body = orjson.dumps({"ready": ok, **detail})
    return Response(body, status_code=200 if ok else 503, media_type="application/json")
