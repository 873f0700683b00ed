"""A plan shift the tests' clock is always well inside of.

The default shift (06:00–14:00 local) leaves a plan made in its last minutes no time to reach a
bin, so a test asserting a route would fail at that hour of the day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def shift_around_now(utc_offset_min: int = 300) -> dict[str, str]:
    """``TAZA_PLAN_SHIFT_START``/``_END``: from an hour ago to eight hours ahead, local time."""
    local = datetime.now(UTC) + timedelta(minutes=utc_offset_min)
    start, end = local - timedelta(hours=1), local + timedelta(hours=8)
    return {"TAZA_PLAN_SHIFT_START": start.strftime("%H:%M"),
            "TAZA_PLAN_SHIFT_END": end.strftime("%H:%M")}  # fmt: skip
