"""The one place that turns strings from outside into line-protocol text.

Every line taza writes (``devices.lineprotocol`` for device points, ``ingest.fleet.output`` for
collection, anomaly and alert history) builds its tag values, string fields and numbers with
these functions and nothing else, so one set of rules decides whether a string can add a line,
a tag or a field. ``tests/test_escaping.py`` checks with hypothesis that no string can (any
unicode, control characters, ``\\n``, ``\\r``, ``,``, ``=``, space, ``"``, ``\\``, a trailing
backslash): each produced line parses back, with a strict reader of influxd's rules, to exactly
the intended measurement, tags and fields — or the function refuses with ``ValueError``.

The rules are what influxd 1.6.7 parses (measured, see docs/protocol.md "Escaping"):

- keys and tag values: ``,`` ``=`` and space are special; one is literal when the character
  right before it is a backslash, and only those three pairs are unescaped. So each gets one
  backslash and other backslashes stay as they are. A value ending in a backslash would escape
  the separator after it, and a newline ends the line: both cannot be written. Nor can an
  empty tag value (InfluxDB drops the tag).
- measurements: as keys, but ``=`` is not special there.
- string fields: inside double quotes, ``\\`` and ``"`` are escaped (both unescaped by the
  reader); a newline is refused, although influxd would keep it, so every point stays one
  physical line for every reader (spool files, the dead-letter detail, other databases).
- floats always in float syntax, integers with ``i``: a field never changes type.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "float_field",
    "int_field",
    "key",
    "measurement",
    "string_field",
    "tag_value",
    "tag_value_uncached",
]

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_SHORT: Final = 2**62 - 1
"""Compiled, an int within this is unboxed and compares inline; the int64 bounds do not fit
that form, and comparing every value with them took two thirds of ``int_field``."""

_tag_cache: Final[dict[str, str]] = {}
_TAG_CACHE_MAX: Final = 1024
"""Escaped tag values that repeat across devices (materials, fractions, sites, regions)."""


def tag_value(value: str) -> str:
    """Escape a tag value (``,`` ``=`` space); ``ValueError`` if InfluxDB cannot hold it."""
    cached = _tag_cache.get(value)
    if cached is not None:
        return cached
    escaped = tag_value_uncached(value)
    if len(_tag_cache) >= _TAG_CACHE_MAX:
        _tag_cache.clear()
    _tag_cache[value] = escaped
    return escaped


def tag_value_uncached(value: str) -> str:
    """:func:`tag_value` for values that rarely repeat across topics (device ids)."""
    if not value:
        raise ValueError("a tag value cannot be empty (omit the tag instead)")
    return _escape_key(value, "tag value")


def key(name: str) -> str:
    """A tag or field key (``,`` ``=`` space escaped)."""
    if not name:
        raise ValueError("a key cannot be empty")
    return _escape_key(name, "key")


def measurement(name: str) -> str:
    """A measurement name (``,`` and space escaped; ``=`` is literal there)."""
    if not name:
        raise ValueError("a measurement cannot be empty")
    _check_key(name, "measurement")
    return name.replace(",", "\\,").replace(" ", "\\ ")


def _escape_key(value: str, what: str) -> str:
    _check_key(value, what)
    return value.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _check_key(value: str, what: str) -> None:
    if "\n" in value:
        raise ValueError(f"a {what} cannot contain a newline: {value!r}")
    if value.endswith("\\"):
        raise ValueError(f"a {what} cannot end with a backslash: {value!r}")


def string_field(value: str) -> str:
    """A quoted string field value (``\\`` and ``"`` escaped); ``ValueError`` on a newline."""
    if "\\" in value or '"' in value or "\n" in value:
        if "\n" in value:
            raise ValueError(f"a string field cannot contain a newline: {value!r}")
        value = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{value}"'


def float_field(value: float) -> str:
    """Always float syntax (``50.0``, ``1e-05``); ``ValueError`` for NaN and infinities."""
    if value - value != 0.0:
        raise ValueError(f"{value!r} cannot be written (line protocol has no NaN or infinity)")
    return repr(float(value))


def int_field(value: object) -> str:
    """``<n>i``; ``ValueError`` outside int64 or for a bool (which is an int in Python)."""
    if type(value) is not int or (
        not -_SHORT <= value <= _SHORT and not _INT64_MIN <= value <= _INT64_MAX
    ):
        raise ValueError(f"{value!r} is not an int64 integer")
    return f"{value}i"
