"""Just enough of a line-protocol reader to turn ``devices.encode`` output back into keys.

The verifier needs, per expected point, its measurement, tags, timestamp and a few fields; it
reads them from the encoder's own lines so it can never disagree with what ingest writes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Point:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, object]
    time_ns: int


def _split(text: str, sep: str, *, quotes: bool = False) -> list[str]:
    """Split on ``sep`` not escaped by a backslash (and, with ``quotes``, not inside "...")."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    in_quotes = False
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if quotes and ch == '"':
            in_quotes = not in_quotes
        elif ch == sep and not in_quotes:
            parts.append("".join(current))
            current = []
            i += 1
            continue
        current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def _unescape_key(text: str) -> str:
    return text.replace("\\,", ",").replace("\\=", "=").replace("\\ ", " ")


def _field_value(raw: str) -> object:
    if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
        return raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if raw.endswith("i") and raw[:-1].lstrip("-").isdigit():
        return int(raw[:-1])
    if raw in ("true", "t", "T", "True", "TRUE"):
        return True
    if raw in ("false", "f", "F", "False", "FALSE"):
        return False
    return float(raw)


def parse_line(line: str) -> Point:
    """Parse one line (``measurement,tags fields timestamp``); ValueError if it is not one."""
    sections = _split(line, " ", quotes=True)
    if len(sections) != 3:
        raise ValueError(f"not a line-protocol line with a timestamp: {line!r}")
    head, field_text, stamp = sections
    series = _split(head, ",")
    measurement = _unescape_key(series[0])
    tags = {}
    for pair in series[1:]:
        parts = _split(pair, "=")
        key, value = parts[0], "=".join(parts[1:])
        tags[_unescape_key(key)] = _unescape_key(value)
    fields = {}
    for pair in _split(field_text, ",", quotes=True):
        parts = _split(pair, "=", quotes=True)
        fields[_unescape_key(parts[0])] = _field_value("=".join(parts[1:]))
    return Point(measurement, tags, fields, int(stamp))
