"""The ASGI application: operations endpoints, ``/api/v1``, its OpenAPI and docs, the page."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from ingest.api import errors
from ingest.api.auth import authenticated, operator_only
from ingest.api.context import ApiContext
from ingest.api.routes import (
    alerts,
    collections,
    devices,
    fill_levels,
    ops,
    pages,
    plan,
    rvm,
    token,
)
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
    secured = ctx.auth is not None

    def guard(dependency: Callable[..., Any], public: bool = False) -> dict[str, Any]:
        """Router options: the token check and its 401/403 in OpenAPI, when there are tokens
        (without, the document declares no security: it would not be true)."""
        if not secured or public:
            return {}
        return {"dependencies": [Depends(dependency)], "responses": errors.AUTH_RESPONSES}

    app.include_router(ops.metrics_router, **guard(operator_only, ctx.metrics_public))
    app.include_router(ops.health_router, **guard(operator_only, ctx.health_public))
    crew_may = (fill_levels, alerts, plan, token)  # the routes confine a crew to its region
    for module in (devices, fill_levels, alerts, collections, rvm, plan, token):
        who = authenticated if module in crew_may else operator_only
        app.include_router(module.router, prefix=PREFIX, **guard(who))
    app.include_router(pages.router)
    app.mount(SWAGGER_URL, StaticFiles(directory=SWAGGER_DIR), name="swagger")
    app.mount("/static", StaticFiles(directory=ctx.web_dir, check_dir=False), name="web")
    return app
