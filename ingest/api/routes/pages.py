"""The browsable API (Swagger UI, self-hosted: it must work offline) and the fleet page."""

from __future__ import annotations

from html import escape
from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response

from ingest.api.context import ApiContext, context

SWAGGER_DIR = Path(__file__).resolve().parent.parent / "static" / "swagger"
SWAGGER_URL = "/api/v1/docs/static"
OPENAPI_URL = "/api/v1/openapi.json"
PLACEHOLDER = (
    "<!doctype html><html><head><meta charset=utf-8><title>taza</title>"
    '<link rel="icon" href="data:,"></head><body><h1>taza</h1>'
    '<p>The fleet page is not installed. The API: <a href="/api/v1/docs">/api/v1/docs</a>.</p>'
    "</body></html>"
)

router = APIRouter(include_in_schema=False)


@router.get("/api/v1/docs")
async def swagger() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=OPENAPI_URL,
        title="taza API",
        swagger_js_url=f"{SWAGGER_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER_URL}/swagger-ui.css",
        swagger_favicon_url=f"{SWAGGER_URL}/favicon-32x32.png",
        swagger_ui_parameters={"validatorUrl": None},  # else it calls validator.swagger.io
    )


@router.get("/")
async def index(ctx: ApiContext = Depends(context)) -> Response:
    page = ctx.web_dir / "index.html"
    if not page.is_file():
        return HTMLResponse(PLACEHOLDER)
    if not ctx.tile_url:
        return FileResponse(page, media_type="text/html")
    html = page.read_text(encoding="utf-8").replace(
        '<body data-tiles=""', f'<body data-tiles="{escape(ctx.tile_url, quote=True)}"', 1
    )
    return HTMLResponse(html)
