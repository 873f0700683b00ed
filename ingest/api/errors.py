"""Errors of the HTTP API, answered as JSON ``{"reason", "detail", "param"}``.

``reason`` is machine-readable and stable (docs/operators.md lists them). Foreign errors
(the database client's, request validation) become one of these at one place each:
:mod:`ingest.api.influx` for the database, :func:`install` for requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException


class ErrorOut(BaseModel):
    """Every error answer."""

    reason: str
    detail: str
    param: str | None = None


class ApiError(Exception):
    status = 500
    reason = "internal_error"
    headers: ClassVar[Mapping[str, str] | None] = None

    def __init__(self, detail: str, *, param: str | None = None, reason: str | None = None):
        super().__init__(detail)
        self.detail = detail
        self.param = param
        if reason is not None:
            self.reason = reason


class BadParameter(ApiError):
    """A query parameter that cannot be answered (beyond what its type already checks)."""

    status = 422
    reason = "bad_parameter"


class NotFound(ApiError):
    status = 404
    reason = "not_found"


class UnknownDevice(NotFound):
    reason = "unknown_device"


class DatabaseUnavailable(ApiError):
    """The database did not answer (connection, timeout, 5xx): try again later."""

    status = 503
    reason = "database_unavailable"


class QueryFailed(ApiError):
    """The database answered the query with an error."""

    status = 502
    reason = "query_failed"


class HistoryUnsupported(ApiError):
    """History needs InfluxQL on InfluxDB 1.x; this service writes elsewhere (v2 API)."""

    status = 501
    reason = "history_unsupported"


class Unauthorized(ApiError):
    """No bearer token (``token_missing``), or one the tokens file does not hold
    (``token_invalid``: unknown, revoked or malformed). RFC 6750's challenge goes with it."""

    status = 401
    reason = "token_missing"
    headers: ClassVar[Mapping[str, str]] = {"WWW-Authenticate": 'Bearer realm="taza"'}


class Forbidden(ApiError):
    """A valid token whose role may not see this (``role_forbidden``) or this region
    (``region_forbidden``)."""

    status = 403
    reason = "role_forbidden"


class Unavailable(ApiError):
    """A part of the service the endpoint needs is not running (fleet state, planner)."""

    status = 503
    reason = "unavailable"


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorOut, "description": "a parameter is invalid (named in `param`)"},
}
HISTORY_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    501: {"model": ErrorOut, "description": "history needs InfluxDB 1.x (TAZA_INFLUX_API=v1)"},
    502: {"model": ErrorOut, "description": "the database refused the query"},
    503: {"model": ErrorOut, "description": "the database is unavailable"},
}
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no bearer token, or not a valid one"},
    403: {"model": ErrorOut, "description": "the token's role or region may not see this"},
}
STATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    503: {"model": ErrorOut, "description": "the fleet state is not available"},
}


def _answer(
    status: int,
    reason: str,
    detail: str,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorOut(reason=reason, detail=detail, param=param).model_dump()
    return JSONResponse(body, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Error handlers: ours, request validation (422 naming the parameter), and 404/405."""

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return _answer(exc.status, exc.reason, exc.detail, exc.param, exc.headers)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body")]
        param = loc[0] if loc else None
        msg = str(first.get("msg", "invalid request"))
        detail = f"{param}: {msg}" if param else msg
        return _answer(422, "bad_parameter", detail, param)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _answer(exc.status_code, reason, str(exc.detail), headers=exc.headers)  # Allow

    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises it after this answer: uvicorn logs the traceback.
        return _answer(500, "internal_error", f"{type(exc).__name__}: the service logged it")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(Exception, crashed)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
