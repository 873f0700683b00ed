"""Durations and instants as people type them on command lines.

Shared by ``taza-ingest deadletter --since`` and ``taza-sim run --duration/--start`` so both
commands accept the same spellings (``90s``, ``10m``, ``1.5h``, ``2d``, RFC 3339).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """``"60s"``, ``"10m"``, ``"1.5h"``, ``"2d"``, ``"250ms"`` or a bare number of seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 60s, 10m, 2h, 1d)")
    value = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if value < 0:
        raise ValueError(f"negative duration: {text!r}")
    return value


def parse_instant(text: str) -> datetime:
    """An RFC 3339 / ISO 8601 instant; without an offset it is taken as UTC."""
    value = text.strip()
    if value.lower() == "now":
        return datetime.now(UTC)
    if value.endswith("Z") or value.endswith("z"):
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"not a date/time: {text!r} (use e.g. 2025-03-01T08:00:00+05:00)") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed
