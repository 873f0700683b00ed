"""The ASGI application: operations endpoints, ``/api/v1``, its OpenAPI and docs, the page."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from ingest.api import errors
from ingest.api.context import ApiContext
from ingest.api.routes import alerts, collections, devices, fill_levels, ops, pages, plan, rvm
from ingest.api.routes.pages import OPENAPI_URL, SWAGGER_DIR, SWAGGER_URL

PREFIX = "/api/v1"


def _version() -> str:
    try:
        return version("taza-telemetry")
    except PackageNotFoundError:
        return "0"


def build_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(
        title="taza operators' API",
        version=_version(),
        description="Fleet state, fill levels, alerts, collections, RVM totals and collection "
        "plans of a smart-waste fleet. Times are RFC 3339 (UTC); errors are JSON with a "
        "machine-readable `reason`. See docs/operators.md.",
        openapi_url=OPENAPI_URL,
        docs_url=None,
        redoc_url=None,
    )
    app.state.ctx = ctx
    errors.install(app)
    app.include_router(ops.router)
    for module in (devices, fill_levels, alerts, collections, rvm, plan):
        app.include_router(module.router, prefix=PREFIX)
    app.include_router(pages.router)
    app.mount(SWAGGER_URL, StaticFiles(directory=SWAGGER_DIR), name="swagger")
    app.mount("/static", StaticFiles(directory=ctx.web_dir, check_dir=False), name="web")
    return app
