"""A small synchronous client of ``/api/v1`` (httpx); its errors are mapped here only."""

from __future__ import annotations

from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"


class ApiError(Exception):
    """The API could not be asked, or answered with an error."""

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason


class ApiUnreachable(ApiError):
    """Nothing answered at the URL (refused, timeout, DNS)."""


class ApiClient:
    def __init__(
        self, url: str = DEFAULT_URL, timeout_s: float = 30.0, token: str | None = None
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # No proxies from the environment: an operator's http_proxy must not see loopback traffic.
        self._http = httpx.Client(
            base_url=self.url, timeout=timeout_s, trust_env=False, headers=headers
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, path: str, **params: Any) -> Any:
        """The JSON body of ``GET /api/v1{path}``; ``None`` parameters are left out."""
        query = {k: _param(v) for k, v in params.items() if v is not None}
        try:
            resp = self._http.get(f"/api/v1{path}", params=query)
        except httpx.TransportError as exc:
            raise ApiUnreachable(
                f"no answer from {self.url}: {exc or type(exc).__name__}"
            ) from None
        try:
            body = resp.json()
        except ValueError:
            raise ApiError(
                f"{self.url} answered {resp.status_code} with something other than JSON",
                status=resp.status_code,
            ) from None
        if resp.status_code >= 400:
            detail = body.get("detail") if isinstance(body, dict) else None
            reason = body.get("reason") if isinstance(body, dict) else None
            raise ApiError(
                f"{resp.status_code} {reason or 'error'}: {detail or body}",
                status=resp.status_code,
                reason=reason,
            )
        return body


def _param(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
