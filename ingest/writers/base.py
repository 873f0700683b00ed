"""The writer interface and the one place that turns an HTTP status into a decision."""

from __future__ import annotations

from typing import Protocol

from ingest.errors import WriteError, WriteRefused, WriteUnavailable


class Writer(Protocol):
    """One attempt per call: no retries, no batching — delivery owns those."""

    description: str

    async def start(self) -> None:
        """Open connections; create the database where that is allowed. Never raises."""

    async def write(self, body: bytes) -> None:
        """Raise WriteRefused or WriteUnavailable; return only when every point is stored."""

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


def classify_status(status: int, body: str) -> WriteError:
    """Telegraf's rule, with one change: nothing is ever dropped here.

    400/422 bad data and 413 too large → refused (split to isolate); 429, 5xx, 401/403
    (credentials can be fixed), 404 (database not created yet) and anything unknown →
    unavailable (retry, then spool).
    """
    message = f"HTTP {status}: {body.strip()[:500]}"
    if status == 413:
        return WriteRefused(message, status=status, too_large=True)
    if status in (400, 422):
        return WriteRefused(message, status=status)
    return WriteUnavailable(message, status=status)
