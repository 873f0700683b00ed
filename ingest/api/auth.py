"""Bearer tokens with a role, checked on every API request when a tokens file is configured.

- ``operator``: everything. ``crew``: its region's alerts, fill levels and collection plan
  (a crew token asking for another region gets 403 ``region_forbidden``; asking for no region
  gets its own); every other endpoint 403 ``role_forbidden``.
- No token: 401 ``token_missing``; a token the file does not hold (unknown, revoked,
  malformed): 401 ``token_invalid`` — both with ``WWW-Authenticate: Bearer``.
- Revocation needs no restart: the file's identity (inode, size, mtime) is checked on each
  request (one ``stat``) and the file re-read when it changed. A file that became unreadable
  or malformed refuses everyone (503 ``tokens_unavailable``) rather than keep tokens that may
  have been revoked.
- The token never reaches a log line, a metric label or an error message; failures are
  counted by reason in ``taza_api_auth_failures_total``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import structlog
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, Counter

from ingest.api.errors import Forbidden, Unauthorized, Unavailable
from ingest.tokens import Role, TokenFile, TokenFileError

log = structlog.get_logger("ingest.api.auth")

FAILURE_REASONS = ("token_missing", "token_invalid", "role_forbidden", "region_forbidden")

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An operator API token (`taza tokens add`), sent as `Authorization: Bearer …`.",
)


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    role: Role
    region: str | None


OPEN = Caller("anonymous", Role.operator, None)
"""Who asks when the API has no tokens file (development)."""


class Authenticator:
    """The tokens file, reloaded when it changes."""

    def __init__(self, path: Path, registry: CollectorRegistry | None = None) -> None:
        self.path = path
        self._key: tuple[int, int, int] | None = None
        self._tokens: TokenFile | None = None
        self._failures = Counter(
            "taza_api_auth_failures_total",
            "API requests refused for their token, by reason",
            ["reason"],
            registry=registry,
        )
        for reason in FAILURE_REASONS:
            self._failures.labels(reason)
        self.load()  # at start a missing or malformed file is a TokenFileError: exit 2

    def load(self) -> TokenFile:
        st = os.stat(self.path)
        tokens = TokenFile.load(self.path)
        self._key = (st.st_ino, st.st_size, st.st_mtime_ns)
        self._tokens = tokens
        log.info("api_tokens_loaded", path=str(self.path), tokens=len(tokens.entries))
        return tokens

    def current(self) -> TokenFile:
        try:
            st = os.stat(self.path)
            if (st.st_ino, st.st_size, st.st_mtime_ns) != self._key or self._tokens is None:
                return self.load()
        except (OSError, TokenFileError) as exc:
            if self._tokens is not None:
                log.error("api_tokens_unreadable", path=str(self.path), error=str(exc))
            self._tokens, self._key = None, None
            raise Unavailable(
                "the API's tokens file cannot be read: every request is refused until it can",
                reason="tokens_unavailable",
            ) from None
        return self._tokens

    def caller(self, token: str | None) -> Caller:
        if not token:
            self.refused("token_missing")
            raise Unauthorized("this API needs a bearer token: Authorization: Bearer <token>")
        entry = self.current().find(token)
        if entry is None:
            self.refused("token_invalid")
            raise Unauthorized(
                "the bearer token is not valid (unknown or revoked)", reason="token_invalid"
            )
        return Caller(entry.name, entry.role, entry.region)

    def refused(self, reason: str) -> None:
        self._failures.labels(reason).inc()


def _authenticator(request: Request) -> Authenticator | None:
    auth: Authenticator | None = request.app.state.ctx.auth
    return auth


async def authenticated(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
) -> Caller:
    """Any valid token; the caller is kept on the request for :func:`crew_region`."""
    auth = _authenticator(request)
    caller = OPEN if auth is None else auth.caller(None if creds is None else creds.credentials)
    request.state.caller = caller
    return caller


async def operator_only(request: Request, caller: Caller = Depends(authenticated)) -> Caller:
    if caller.role is not Role.operator:
        auth = _authenticator(request)
        if auth is not None:
            auth.refused("role_forbidden")
        raise Forbidden(f"a {caller.role.value} token may not read {request.url.path}")
    return caller


def crew_region(request: Request) -> str | None:
    """The region a crew caller is confined to; None for an operator or without auth."""
    caller: Caller | None = getattr(request.state, "caller", None)
    return caller.region if caller is not None and caller.role is Role.crew else None


def scoped(request: Request, region: str | None) -> str | None:
    """The region to answer for: the one asked, confined to a crew caller's own (asking for
    none gets its own; asking for another is 403)."""
    only = crew_region(request)
    if only is None or region is None or region == only:
        return region if only is None else only
    auth = _authenticator(request)
    if auth is not None:
        auth.refused("region_forbidden")
    raise Forbidden(f"this token is for region {only!r}", param="region", reason="region_forbidden")
