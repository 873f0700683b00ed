"""``/metrics`` (Prometheus), ``/healthz`` (every stage alive and moving) and ``/readyz``.

``/healthz`` is the watchdog's verdict (see ``ingest.watchdog``): 503 names the stage that
failed or is stuck — the signal for a supervisor to restart the process.
``/readyz`` is 200 only while the subscription is granted and either the database is
reachable or the spool has room: a deployment, and a test, waits on it before sending.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from aiohttp import web

from ingest.lifetime import Lifetime
from ingest.metrics import CONTENT_TYPE, Metrics

ReadyCheck = Callable[[], tuple[bool, dict[str, object]]]
HealthCheck = Callable[[], tuple[bool, dict[str, dict[str, object]]]]


class HttpServer(Lifetime):
    """Serves while inside ``async with``."""

    def __init__(
        self, host: str, port: int, metrics: Metrics, ready: ReadyCheck, health: HealthCheck
    ) -> None:
        self.host = host
        self.port = port
        self.metrics = metrics
        self.ready = ready
        self.health = health
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)

    async def open(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()

    async def close(self) -> None:
        await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def _healthz(self, request: web.Request) -> web.Response:
        ok, stages = self.health()
        return web.Response(
            body=orjson.dumps({"healthy": ok, "stages": stages}),
            status=200 if ok else 503,
            content_type="application/json",
        )

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, detail = self.ready()
        return web.Response(
            body=orjson.dumps({"ready": ok, **detail}),
            status=200 if ok else 503,
            content_type="application/json",
        )
