"""Query parameters shared by the routes, validated before any work (422 names the one).

Times are RFC 3339 with an offset (``2026-05-01T12:00:00Z``); a time without an offset is
refused rather than guessed. Durations are an integer and a unit: ``90s``, ``15m``, ``6h``, ``7d``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated

from fastapi import Query
from pydantic import AwareDatetime

from devices.schema import FRACTIONS
from devices.topics import DEVICE_ID_RE, REGION_RE
from ingest.api.errors import BadParameter

REGION_PATTERN = f"^{REGION_RE.pattern}$"
DEVICE_ID_PATTERN = f"^{DEVICE_ID_RE.pattern}$"
DURATION_PATTERN = r"^[1-9][0-9]{0,5}[smhd]$"
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_SPAN = timedelta(days=400)

Fraction = StrEnum("Fraction", {f: f for f in sorted(FRACTIONS)})  # type: ignore[misc]

RegionQ = Annotated[
    str | None, Query(pattern=REGION_PATTERN, description="only this region", examples=["almaty"])
]
FromQ = Annotated[
    AwareDatetime | None,
    Query(alias="from", description="start, RFC 3339 with offset (default: `to` − 24 h)"),
]
ToQ = Annotated[AwareDatetime | None, Query(description="end, RFC 3339 (default: now)")]


def duration_s(text: str) -> int:
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"expected a duration such as 15m, got {text!r}")
    return int(text[:-1]) * _UNIT_S[text[-1]]


@dataclass(frozen=True, slots=True)
class Span:
    start: datetime
    end: datetime


def span(
    start: datetime | None, end: datetime | None, default: timedelta = timedelta(hours=24)
) -> Span:
    """``[from, to)``; ``from`` must be before ``to``; at most 400 days."""
    try:
        end = (end or datetime.now(UTC)).astimezone(UTC)
        start = (start or end - default).astimezone(UTC)
    except OverflowError:
        raise BadParameter("outside what the database stores", param="to") from None
    if start >= end:
        raise BadParameter("from must be before to", param="from")
    if end - start > MAX_SPAN:
        raise BadParameter(f"at most {MAX_SPAN.days} days between from and to", param="from")
    if start.year < 1678 or end.year > 2261:
        raise BadParameter("outside what the database stores (1678 – 2261)", param="from")
    return Span(start, end)
