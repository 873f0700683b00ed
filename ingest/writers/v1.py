"""InfluxDB 1.x ``/write`` (db, retention policy, user/password) over aiohttp."""

from __future__ import annotations

import aiohttp
import structlog

from ingest.config import Settings
from ingest.tls import client_context
from ingest.writers.base import classify_exception, classify_status, show_body

log = structlog.get_logger("ingest.writer")


class V1Writer:
    def __init__(self, settings: Settings) -> None:
        self._url = settings.influx_url
        self._db = settings.influx_db
        self._params = {"db": settings.influx_db, "precision": "ns"}
        if settings.influx_rp:
            self._params["rp"] = settings.influx_rp
        self._auth = (
            aiohttp.BasicAuth(
                settings.influx_user,
                settings.influx_password.get_secret_value() if settings.influx_password else "",
            )
            if settings.influx_user
            else None
        )
        self._timeout = aiohttp.ClientTimeout(total=settings.influx_timeout_s)
        self._create = settings.influx_create_db
        self._https = settings.influx_url.startswith("https:")
        self._ca_file = settings.influx_ca_file
        self._session: aiohttp.ClientSession | None = None
        self.description = f"InfluxDB v1 {self._url} db={self._db}"

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = (
                aiohttp.TCPConnector(ssl=client_context(self._ca_file)) if self._https else None
            )  # https: the certificate is verified; a failure is "unavailable" (base.py)
            self._session = aiohttp.ClientSession(
                auth=self._auth, timeout=self._timeout, connector=connector
            )
        return self._session

    async def start(self) -> None:
        if self._create:
            await self.create_database()

    async def create_database(self) -> bool:
        """CREATE DATABASE is idempotent in 1.x; a user without rights gets a warning."""
        try:
            async with self.session.post(
                f"{self._url}/query", data={"q": f'CREATE DATABASE "{_quote(self._db)}"'}
            ) as resp:
                if resp.status == 200:
                    return True
                log.warning(
                    "create_database_failed",
                    status=resp.status,
                    body=show_body(await resp.read())[:200],
                )
        except Exception as exc:  # start() and a write's repair attempt never raise
            log.warning("create_database_failed", error=classify_exception(exc).message)
        return False

    async def write(self, body: bytes) -> None:
        try:
            async with self.session.post(
                f"{self._url}/write", params=self._params, data=body
            ) as resp:
                if resp.status in (200, 204):
                    return
                error = classify_status(resp.status, await resp.read(), resp.headers)
        except Exception as exc:  # every failure is a decision, made in base.py
            raise classify_exception(exc) from exc
        if resp.status == 404 and "database not found" in error.message and self._create:
            await self.create_database()
        raise error

    async def ping(self) -> bool:
        try:
            async with self.session.get(
                f"{self._url}/ping", timeout=aiohttp.ClientTimeout(total=2)
            ) as resp:
                return resp.status in (200, 204)
        except Exception as exc:  # a yes/no question; cancellation still propagates
            log.warning("database_ping_failed", error=classify_exception(exc).message)  # e.g. TLS
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _quote(identifier: str) -> str:
    return identifier.replace("\\", "\\\\").replace('"', '\\"')
