"""Read-only InfluxQL client for the history endpoints: ``GET /query`` of InfluxDB 1.x.

Only ``SELECT`` is sent (the API builds every statement; values are quoted here). The
database's and aiohttp's errors become :class:`DatabaseUnavailable` or :class:`QueryFailed`
in :meth:`InfluxReader.query`, nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from ingest.api.errors import DatabaseUnavailable, QueryFailed
from ingest.tls import client_context


@dataclass(frozen=True, slots=True)
class Series:
    """One series of a result: its tags (GROUP BY) and rows as column → value dicts."""

    name: str
    tags: dict[str, str]
    rows: list[dict[str, Any]]


def quote_str(value: str) -> str:
    """An InfluxQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def time_literal(t: datetime) -> str:
    return quote_str(t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


def where(start: datetime, end: datetime, tags: dict[str, str | None], *extra: str) -> str:
    """``WHERE time >= start AND time < end AND tag = 'v' ...`` (``None`` tags left out)."""
    parts = [f"time >= {time_literal(start)}", f"time < {time_literal(end)}"]
    parts += [f"{quote_ident(k)} = {quote_str(v)}" for k, v in tags.items() if v is not None]
    parts += extra
    return "WHERE " + " AND ".join(parts)


class InfluxReader:
    """One session, opened with the HTTP server and closed with it."""

    def __init__(
        self,
        url: str,
        db: str,
        *,
        rp: str | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
        ca_file: Path | None = None,
    ) -> None:
        self.url = url.rstrip("/") + "/query"
        self._https = url.startswith("https:")
        self._ca_file = ca_file
        self.params = {"db": db, "epoch": "ms"}
        if rp:
            self.params["rp"] = rp
        # Basic auth, not u=/p= in the query string: a URL ends up in proxies' and InfluxDB's
        # own request logs, and in exception texts.
        self._auth = aiohttp.BasicAuth(user, password or "") if user else None
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = (
            aiohttp.TCPConnector(ssl=client_context(self._ca_file)) if self._https else None
        )  # https: the server's certificate is verified (TAZA_INFLUX_CA_FILE or the system's)
        self._session = aiohttp.ClientSession(
            timeout=self.timeout, connector=connector, auth=self._auth
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def query(self, *statements: str) -> list[list[Series]]:
        """The series of each statement, in order."""
        if self._session is None:
            await self.open()
        assert self._session is not None
        params = {**self.params, "q": ";".join(statements)}
        try:
            async with self._session.get(self.url, params=params) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise DatabaseUnavailable(
                f"InfluxDB at {self.url} did not answer: {type(exc).__name__} {exc}".strip()
            ) from None
        if status >= 500:
            raise DatabaseUnavailable(f"InfluxDB answered {status}: {_message(body)}")
        if status in (401, 403):
            raise DatabaseUnavailable(f"InfluxDB refused the credentials ({status})")
        if status >= 400:
            raise QueryFailed(f"InfluxDB answered {status}: {_message(body)}")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise QueryFailed("InfluxDB answered something other than JSON") from None
        out: list[list[Series]] = []
        for result in doc.get("results", []):
            if "error" in result:
                error = str(result["error"])
                if error.startswith("database not found"):
                    out.append([])  # nothing written yet: an empty history, not an error
                    continue
                raise QueryFailed(f"InfluxDB: {error}")
            series = []
            for s in result.get("series", []):
                cols = s.get("columns", [])
                rows = [dict(zip(cols, v, strict=False)) for v in s.get("values", [])]
                series.append(Series(s.get("name", ""), s.get("tags") or {}, rows))
            out.append(series)
        while len(out) < len(statements):
            out.append([])
        return out


def _message(body: bytes) -> str:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace")
    return str(doc.get("error", doc)) if isinstance(doc, dict) else str(doc)
