"""The writer interface and the one boundary where a database reply, or an exception met
while writing, becomes a decision: refused (split / dead-letter) or unavailable (retry,
then spool). Writers hand over raw bytes and headers; nothing here can raise."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Protocol

from ingest.errors import LimitRefusal, WriteError, WriteRefused, WriteUnavailable

RETRY_AFTER_MAX_S = 60.0
"""A longer Retry-After is cut to this: the spool, not a sleeping batch, is where waiting
belongs (Telegraf's influxdb_v2 output caps it too)."""

BODY_SHOWN = 500

_LIMIT = re.compile(r"(max-values-per-tag|max-series-per-database) limit exceeded")
_TAG_VALUE = re.compile(
    r'measurement="((?:[^"\\]|\\.)*)" tag="((?:[^"\\]|\\.)*)" value="((?:[^"\\]|\\.)*)"'
)
_DROPPED = re.compile(r"\bdropped=(\d+)\s*$")


class Writer(Protocol):
    """One attempt per call: no retries, no batching — delivery owns those."""

    description: str

    async def start(self) -> None:
        """Open connections; create the database where that is allowed. Never raises."""

    async def write(self, body: bytes) -> None:
        """Raise WriteRefused or WriteUnavailable; return only when every point is stored."""

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


def show_body(body: bytes | str | None) -> str:
    """A reply body as text for logs and dead letters: any encoding, never an exception;
    InfluxDB's JSON ``{"error": ...}`` (v1) or ``{"message": ...}`` (v2) is unwrapped."""
    if body is None:
        return ""
    text = body if isinstance(body, str) else body.decode("utf-8", "replace")
    text = text.strip()
    try:
        doc = json.loads(text)
    except ValueError:
        return text[:BODY_SHOWN]
    if isinstance(doc, dict):
        for key in ("error", "message"):
            if isinstance(doc.get(key), str):
                return str(doc[key])[:BODY_SHOWN]
    return text[:BODY_SHOWN]


def retry_after_s(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds to wait (delta-seconds or an HTTP-date), capped at
    RETRY_AFTER_MAX_S; None when absent or unreadable (then our own backoff applies)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


def classify_status(
    status: int, body: bytes | str | None, headers: Mapping[str, str] | None = None
) -> WriteError:
    """Telegraf's rule, with one change: nothing is ever dropped here.

    400/422 bad data and 413 too large → refused (split to isolate); 429, 5xx, 401/403
    (credentials can be fixed), 404 (database not created yet) and anything unknown →
    unavailable (retry, then spool), honouring Retry-After on 429/503.
    """
    shown = show_body(body)
    message = f"HTTP {status}: {shown}"
    if status == 413:
        return WriteRefused(message, status=status, too_large=True)
    if status in (400, 422):
        return WriteRefused(
            message, status=status, dropped=_dropped(shown), limit=_limit_refusal(shown)
        )
    wait = None
    if status in (429, 503) and headers is not None:
        wait = retry_after_s(_header(headers, "Retry-After"))
    return WriteUnavailable(message, status=status, retry_after=wait)


def classify_exception(exc: BaseException) -> WriteUnavailable:
    """Anything raised while talking to the database (connection reset, timeout, a reply
    that is not HTTP, a body in an odd encoding...) is "not stored this time": retry, then
    spool. Nothing a writer meets may escape and stop the service."""
    detail = str(exc) or type(exc).__name__
    return WriteUnavailable(f"{type(exc).__name__}: {detail}"[:BODY_SHOWN])


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lower = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lower), None)
    return value


def _dropped(message: str) -> int | None:
    """InfluxDB 1.x's ``partial write: ... dropped=N``: how many points it did not store."""
    m = _DROPPED.search(message)
    return int(m.group(1)) if m else None


def _limit_refusal(message: str) -> LimitRefusal | None:
    m = _LIMIT.search(message)
    if m is None:
        return None
    tag = _TAG_VALUE.search(message, m.end())
    if tag is None:
        return LimitRefusal(m.group(1))
    measurement, key, value = (_unquote(g) for g in tag.groups())
    return LimitRefusal(m.group(1), measurement, key, value)


def _unquote(go_quoted: str) -> str:
    """Go's %q body (InfluxDB's quoting) → the string; as JSON for the ASCII cases."""
    try:
        value = json.loads(f'"{go_quoted}"')
    except ValueError:
        return go_quoted
    return value if isinstance(value, str) else go_quoted


def names_line(limit: LimitRefusal | None, line: str) -> bool:
    """Whether a line-protocol line belongs to the series key a limit refusal names."""
    if limit is None or limit.measurement is None or limit.tag is None or limit.value is None:
        return False
    head = _escape(limit.measurement, ", ") + ","
    if not line.startswith(head):
        return False
    series_key = _series_key(line)
    pair = f"{_escape(limit.tag, ',= ')}={_escape(limit.value, ',= ')}"
    return any(part == pair for part in _split_unescaped(series_key[len(head) :], ","))


def _escape(text: str, specials: str) -> str:
    out = text
    for ch in specials:
        out = out.replace(ch, "\\" + ch)
    return out


def _series_key(line: str) -> str:
    i = 0
    while i < len(line):
        if line[i] == "\\":
            i += 2
            continue
        if line[i] == " ":
            return line[:i]
        i += 1
    return line


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, start, i = [], 0, 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == sep:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts
