"""Query parameters shared by the routes, validated before any work (422 names the one).

Times are RFC 3339 with an offset (``2026-05-01T12:00:00Z``), years 1700–2199 (what the
database stores, with margin); a time without an offset, or a bare number, is refused rather than
guessed — the pattern in the OpenAPI document says so. ``from`` at or after ``to`` is an empty
range: an empty answer, not an error. Durations are an integer and a unit: ``90s``, ``15m``,
``6h``, ``7d``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated

from fastapi import Query

from devices.schema import FRACTIONS
from devices.topics import DEVICE_ID_RE, REGION_RE
from ingest.api.errors import BadParameter

REGION_PATTERN = f"^{REGION_RE.pattern}$"
DEVICE_ID_PATTERN = f"^{DEVICE_ID_RE.pattern}$"
DURATION_PATTERN = r"^[1-9][0-9]{0,4}[smhd]$"
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}

Fraction = StrEnum("Fraction", {f: f for f in sorted(FRACTIONS)})  # type: ignore[misc]

RegionQ = Annotated[
    str | None, Query(pattern=REGION_PATTERN, description="only this region", examples=["almaty"])
]
RFC3339_PATTERN = (
    r"^(1[7-9][0-9]{2}|2[01][0-9]{2})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
FromQ = Annotated[
    str | None,
    Query(
        alias="from",
        pattern=RFC3339_PATTERN,
        json_schema_extra={"format": "date-time"},
        description="start, RFC 3339 with offset (default: `to` − the endpoint's default span)",
        examples=["2026-05-01T00:00:00Z"],
    ),
]
ToQ = Annotated[
    str | None,
    Query(
        pattern=RFC3339_PATTERN,
        json_schema_extra={"format": "date-time"},
        description="end, exclusive, RFC 3339 with offset (default: now)",
        examples=["2026-05-02T00:00:00+05:00"],
    ),
]


def duration_s(text: str) -> int:
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"expected a duration such as 15m, got {text!r}")
    return int(text[:-1]) * _UNIT_S[text[-1]]


@dataclass(frozen=True, slots=True)
class Span:
    start: datetime
    end: datetime

    @property
    def empty(self) -> bool:
        return self.start >= self.end


def instant(text: str, param: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError as exc:  # the pattern passed, the calendar did not (Feb 30)
        raise BadParameter(f"{param}: {exc}", param=param) from None
    return t.astimezone(UTC)


def span(start: str | None, end: str | None, default: timedelta = timedelta(hours=24)) -> Span:
    """``[from, to)`` in UTC."""
    stop = instant(end, "to") if end is not None else datetime.now(UTC)
    begin = instant(start, "from") if start is not None else stop - default
    return Span(begin, stop)
