"""Device timestamps: RFC 3339 with an offset, or integer epoch milliseconds, to epoch ms.

Hand-written rather than ``datetime.fromisoformat``: since Python 3.11 that accepts far more
than RFC 3339 (dates without time, week dates, no offset), and a timestamp without an offset
is ambiguous on a device that may not know its time zone.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Final

from devices.errors import Reason, Rejected

_RFC3339: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,  # \d must not match other scripts' digits, which int() would accept
)
_COMMON_SHAPE: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:[0-5]\d)", re.ASCII
)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_MS_PER_DAY: Final = 86_400_000

# The database stores int64 nanoseconds; a point's time is ts_ms * 10**6 plus < 10**6 ns.
MIN_TS_MS: Final = -9_223_372_036_854
MAX_TS_MS: Final = 9_223_372_036_853


def ms_to_ns(ms: int) -> int:
    """``ms * 1_000_000`` as shifts and adds (10**6 = 2**19 + 2**18 + 2**17 + 2**16 + 2**14 +
    2**9 + 2**6). Compiled, a product stays inline only while both factors are below 2**30
    (mypyc's overflow test is that conservative), so an epoch time times 10**6 went through a
    boxed multiply, ≈ 1,000 instructions; a shift's overflow test is exact, and these stay
    inline (≈ 60)."""
    return (ms << 19) + (ms << 18) + (ms << 17) + (ms << 16) + (ms << 14) + (ms << 9) + (ms << 6)


def received_ms(received_at: datetime) -> int:
    """Exact epoch milliseconds of an aware datetime (floor), without float rounding."""
    try:
        return (received_at - _EPOCH) // _ONE_MS
    except TypeError:
        raise ValueError(
            f"received_at must be a timezone-aware datetime: {received_at!r}"
        ) from None


def parse_rfc3339(text: str) -> int:
    """Epoch milliseconds of an RFC 3339 date-time with offset; fractions below 1 ms are cut."""
    if _COMMON_SHAPE.fullmatch(text) is not None:
        # The common shape, checked strictly above, has its numbers at fixed places; anything
        # out of range there (leap second, day 31 of April) goes the exact way below.
        ms = _parse_common(text)
        if ms is not None:
            return ms
    return _parse_exact(text)


_DAYS_IN_MONTH: Final = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _parse_common(text: str) -> int | None:
    """``_parse_exact``'s result for text of ``_COMMON_SHAPE``, or ``None`` where that would
    refuse it: integer arithmetic from fixed positions (compiled, ≈ 3x cheaper than
    ``datetime.fromisoformat`` and the timedelta it needs; tested against ``_parse_exact``)."""
    y, mo, d = int(text[0:4]), int(text[5:7]), int(text[8:10])
    hour, minute, second = int(text[11:13]), int(text[14:16]), int(text[17:19])
    leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    if not (1 <= mo <= 12 and d >= 1 and y >= 1) or hour > 23 or minute > 59 or second > 59:
        return None
    if d > _DAYS_IN_MONTH[mo] + (1 if mo == 2 and leap else 0):
        return None
    # Days from the civil date (H. Hinnant's days_from_civil), exact for every year.
    yy = y - 1 if mo <= 2 else y
    era = yy // 400
    yoe = yy - era * 400
    doy = (153 * (mo - 3 if mo > 2 else mo + 9) + 2) // 5 + d - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    ms = days * _MS_PER_DAY + ((hour * 60 + minute) * 60 + second) * 1000
    end = len(text)
    if text[end - 1] == "Z":
        zone = end - 1
    else:
        zone = end - 6
        off_h = int(text[end - 5 : end - 3])
        if off_h > 23:
            return None
        off = (off_h * 60 + int(text[end - 2 :])) * 60_000
        ms = ms - off if text[zone] == "+" else ms + off
    if zone > 19:  # ".", then 1 to 9 digits
        ms += int((text[20:zone] + "00")[:3])
    return ms


def _parse_exact(text: str) -> int:
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise Rejected(
            Reason.BAD_TS,
            f"ts {_show(text)} is not RFC 3339 with an offset (e.g. 2024-05-01T12:00:00.250+05:00)",
            field="ts",
        )
    y, mo, d, h, mi, s, frac, z, sign, oh, om = m.groups()
    hour, minute, second = int(h), int(mi), int(s)
    try:
        days = date(int(y), int(mo), int(d)).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise Rejected(
            Reason.BAD_TS, f"ts {_show(text)} is not a calendar date", field="ts"
        ) from None
    if hour > 23 or minute > 59 or second > 59:
        # RFC 3339 allows a leap second (:60); epoch time has no place for it.
        raise Rejected(Reason.BAD_TS, f"ts {_show(text)} is not a valid time of day", field="ts")
    ms = days * _MS_PER_DAY + ((hour * 60 + minute) * 60 + second) * 1000
    if frac is not None:
        ms += int((frac + "00")[:3])
    if z is None:
        off_h, off_m = int(oh), int(om)
        if off_h > 23 or off_m > 59:
            raise Rejected(Reason.BAD_TS, f"ts {_show(text)} has an invalid offset", field="ts")
        off = (off_h * 60 + off_m) * 60_000
        ms = ms - off if sign == "+" else ms + off
    return ms


def ts_to_ms(value: object) -> int:
    """The ``ts`` field as epoch milliseconds: an RFC 3339 string or a JSON integer (not bool)."""
    if type(value) is int:
        ms = value
    elif type(value) is str:
        ms = parse_rfc3339(value)
    else:
        raise Rejected(
            Reason.BAD_TS,
            f"ts must be an RFC 3339 string or integer epoch milliseconds, got {_kind(value)}",
            field="ts",
        )
    if ms < MIN_TS_MS or ms > MAX_TS_MS:
        hint = _unit_hint(ms) if type(value) is int else ""
        raise Rejected(
            Reason.BAD_TS, f"ts {ms} ms is outside what the database can store{hint}", field="ts"
        )
    return ms


def _unit_hint(ts: int) -> str:
    """Name the unit an out-of-range integer ``ts`` most likely has (today in µs is ≈ 1.8e15,
    in ns ≈ 1.8e18; no millisecond value the database can store reaches 1e14)."""
    if 10**14 <= ts < 10**17:
        return " (epoch microseconds instead of milliseconds?)"
    if ts >= 10**17:
        return " (epoch nanoseconds instead of milliseconds?)"
    return ""


def check_window(ts_ms: int, now_ms: int, max_age_ms: int, max_future_ms: int) -> None:
    """Reject timestamps too far ahead of or behind the receive time (both bounds inclusive)."""
    if ts_ms > now_ms + max_future_ms:
        raise Rejected(
            Reason.TS_IN_FUTURE,
            f"ts is {_dur(ts_ms - now_ms)} ahead of the receive time (limit {_dur(max_future_ms)})",
            field="ts",
        )
    if ts_ms < now_ms - max_age_ms:
        hint = " (epoch seconds instead of milliseconds?)" if 0 <= ts_ms < 10**11 else ""
        raise Rejected(
            Reason.TS_TOO_OLD,
            f"ts is {_dur(now_ms - ts_ms)} older than the receive time (limit {_dur(max_age_ms)})"
            + hint,
            field="ts",
        )


def _dur(ms: int) -> str:
    if ms < 120_000:
        return f"{ms / 1000:g} s"
    if ms < 7_200_000:
        return f"{ms / 60_000:.1f} min"
    if ms < 172_800_000:
        return f"{ms / 3_600_000:.1f} h"
    return f"{ms / _MS_PER_DAY:.1f} days"


def _kind(value: object) -> str:
    return {bool: "boolean", float: "number with a fraction or exponent", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _show(s: str, limit: int = 40) -> str:
    return repr(s) if len(s) <= limit else repr(s[:limit]) + "…"
