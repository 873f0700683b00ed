"""No string from outside can add a line, a tag or a field to what taza writes.

Every writer of line protocol (``devices.encode`` for device points, ``ingest.fleet.output`` for
collection / anomaly / alert history) escapes through ``devices.escaping``. Hypothesis feeds it
any unicode, with the characters that matter (``\\n`` ``\\r`` ``,`` ``=`` space ``"`` ``\\``, a
trailing backslash) made frequent; each line it produces must read back — with the strict
reader below, which knows influxd 1.6.7's rules and refuses anything else — to exactly the
intended measurement, tags and fields, or the escaper must refuse with ValueError. The last
test checks the reader's model against the real influxd.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import devices
from devices import DeviceInfo, Kind
from devices.escaping import float_field, int_field, key, measurement, string_field, tag_value
from devstack.servers import InfluxDB1
from ingest.fleet import output
from ingest.fleet.events import (
    AlertState,
    AlertTransition,
    Anomaly,
    AnomalyKind,
    Cause,
    Collection,
    Event,
    Severity,
    Source,
)

NASTY = [",", "=", " ", '"', "\\", "\n", "\r", "\t", "\x00", "\x7f", "\u2028", "é", "🗑"]
# Strings from outside arrive as UTF-8 (JSON payloads, the fleet file, MQTT topics), which
# cannot carry a lone surrogate: those are not strings taza can meet.
TEXT = st.text(st.one_of(st.sampled_from(NASTY), st.characters(codec="utf-8")), max_size=24)
CASES = settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)


@dataclass(frozen=True)
class Line:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, object]
    time_ns: int


class Malformed(AssertionError):
    pass


def _special(text: str, i: int, chars: str) -> bool:
    """influxd 1.x: a special character is literal when a backslash is right before it."""
    return text[i] in chars and (i == 0 or text[i - 1] != "\\")


def _unescape(text: str, chars: str) -> str:
    for ch in chars:
        text = text.replace("\\" + ch, ch)
    return text


_NUMBER = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def read_line(line: str) -> Line:
    """One line of line protocol, strictly: anything influxd would read differently (or refuse)
    raises Malformed. Tag values are read as influxd 1.6.7 does, string fields with ``\\\\`` and
    ``\\"`` escapes, numbers as float / ``<n>i`` / bool; a timestamp is required."""
    if "\n" in line:
        raise Malformed(f"more than one line: {line!r}")
    n, i = len(line), 0
    while i < n and not _special(line, i, ", "):
        i += 1
    if i == 0 or i == n:
        raise Malformed("no measurement")
    name = _unescape(line[:i], ", ")
    tags: dict[str, str] = {}
    while line[i] == ",":
        start = i = i + 1
        while i < n and not _special(line, i, ",= "):
            i += 1
        if i in (n, start) or line[i] != "=":
            raise Malformed(f"tag without key or '=' at {start}: {line!r}")
        tag_key = _unescape(line[start:i], ",= ")
        start = i = i + 1
        while i < n and not _special(line, i, ",= "):
            i += 1
        if i in (n, start) or line[i] == "=":
            raise Malformed(f"bad tag value at {start}: {line!r}")
        if tag_key in tags:
            raise Malformed(f"tag {tag_key!r} twice")
        tags[tag_key] = _unescape(line[start:i], ",= ")
    if line[i] != " ":
        raise Malformed(f"no field set at {i}: {line!r}")
    fields: dict[str, object] = {}
    while True:
        start = i = i + 1
        while i < n and not _special(line, i, ",= "):
            i += 1
        if i in (n, start) or line[i] != "=":
            raise Malformed(f"field without key or '=' at {start}: {line!r}")
        field_key = _unescape(line[start:i], ",= ")
        i += 1
        value: object
        if i < n and line[i] == '"':
            out: list[str] = []
            i += 1
            while i < n and line[i] != '"':
                if line[i] == "\\" and i + 1 < n and line[i + 1] in '\\"':
                    i += 1
                out.append(line[i])
                i += 1
            if i == n:
                raise Malformed("unterminated string")
            value, i = "".join(out), i + 1
        else:
            start = i
            while i < n and line[i] not in ", ":
                i += 1
            raw = line[start:i]
            if raw in ("true", "false"):
                value = raw == "true"
            elif re.fullmatch(r"-?\d+i", raw):
                value = int(raw[:-1])
            elif _NUMBER.fullmatch(raw):
                value = float(raw)
            else:
                raise Malformed(f"bad field value {raw!r}")
        if field_key in fields:
            raise Malformed(f"field {field_key!r} twice")
        fields[field_key] = value
        if i == n:
            raise Malformed("no timestamp")
        if line[i] == " ":
            break
        if line[i] != ",":
            raise Malformed(f"junk after a field at {i}: {line!r}")
    stamp = line[i + 1 :]
    if not re.fullmatch(r"-?\d+", stamp):
        raise Malformed(f"bad timestamp {stamp!r}")
    return Line(name, tags, fields, int(stamp))


def test_the_reader_refuses_what_influxd_reads_differently() -> None:
    assert read_line(r'm,t=a\,b,u=x f=1i,s="\"q\"" 1') == Line(
        "m", {"t": "a,b", "u": "x"}, {"f": 1, "s": '"q"'}, 1
    )
    for bad in [r"m,t=a\ f=1i 1", "m,t=a,b f=1i 1", "m,t=a f=1i", "m,t=a f=1i 1\nm f=1i 2"]:
        with pytest.raises(Malformed):
            read_line(bad)


@CASES
@given(TEXT)
def test_a_tag_value_is_one_tag_value(value: str) -> None:
    try:
        escaped = tag_value(value)
    except ValueError:
        assert value == "" or "\n" in value or value.endswith("\\")
        return
    assert read_line(f"m,a=1,t={escaped},z=2 f=1i 7") == Line(
        "m", {"a": "1", "t": value, "z": "2"}, {"f": 1}, 7
    )


@CASES
@given(TEXT)
def test_a_string_field_is_one_string_field(value: str) -> None:
    try:
        quoted = string_field(value)
    except ValueError:
        assert "\n" in value
        return
    assert read_line(f"m,t=x a=1i,s={quoted},z=2i 7") == Line(
        "m", {"t": "x"}, {"a": 1, "s": value, "z": 2}, 7
    )


@CASES
@given(TEXT, TEXT)
def test_keys_and_measurements_stay_what_they_are(name: str, k: str) -> None:
    try:
        line = f"{measurement(name)},{key(k)}=v {key(k)}=1i 7"
    except ValueError:
        assert not name or not k or any("\n" in s or s.endswith("\\") for s in (name, k))
        return
    assert read_line(line) == Line(name, {k: "v"}, {k: 1}, 7)


@CASES
@given(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**63), 2**63 - 1))
def test_numbers_are_one_field_each(x: float, n: int) -> None:
    assert read_line(f"m f={float_field(x)},i={int_field(n)} 7").fields == {"f": x, "i": n}


def _device(site: str) -> DeviceInfo:
    return DeviceInfo("rvm-7", Kind.RVM, "astana", 43.2, 76.9, None, "paper", site, 60)


RECEIVED = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
STATUS_TOPIC = "taza/v1/astana/rvm/rvm-7/status"
STATUS_FIELDS = {"rssi_dbm", "firmware", "faults", "fault_count", "mode", "seq"}


@CASES
@given(site=TEXT, firmware=TEXT)
def test_a_device_point_has_exactly_its_tags_and_fields(site: str, firmware: str) -> None:
    """The strings a message and the fleet file carry (firmware, site) end up as one field and
    one tag; the decoder refuses control characters first, the encoder refuses the rest."""
    payload = orjson.dumps(
        {"ts": "2026-05-01T11:59:00Z", "seq": 5, "rssi_dbm": -60, "firmware": firmware or "x"}
    )
    try:
        message = devices.decode(STATUS_TOPIC, payload, RECEIVED)
    except devices.Rejected:
        return
    try:
        (line,) = devices.encode(message, _device(site) if site else None)
    except ValueError:
        assert "\n" in site or site.endswith("\\")
        return
    got = read_line(line)
    tags = {"device_id": "rvm-7", "kind": "rvm", "region": "astana"}
    if site:
        tags |= {"site": site, "fraction": "paper"}
    assert (got.measurement, got.tags) == ("status", tags)
    assert set(got.fields) == STATUS_FIELDS - {"mode"}
    assert got.fields["firmware"] == (firmware or "x")


@CASES
@given(site=TEXT, episode=TEXT)
def test_fleet_history_lines_have_exactly_their_tags_and_fields(site: str, episode: str) -> None:
    source = Source("rvm-7", "astana", "rvm", _device(site) if site else None)
    events: list[Event] = [
        Collection(source, 90.0, 3.0, 1, 1_000),
        Anomaly(source, AnomalyKind.SPIKE, 50.0, 1, 1_000),
        AlertTransition(
            source,
            "full",
            AlertState.FIRING,
            Severity.MAJOR,
            91.0,
            90.0,
            1,
            1,
            1_000,
            episode,
            Cause.THRESHOLD,
        ),
    ]
    for event in events:
        try:
            line = output.line(event)
        except ValueError:
            assert "\n" in site or site.endswith("\\") or "\n" in episode
            continue
        got = read_line(line)
        registry = {"site": site, "fraction": "paper"} if site else {}
        base = {"device_id": "rvm-7", "region": "astana"}
        if isinstance(event, Collection):
            assert got.tags == base | registry
            assert set(got.fields) == {"fill_before_pct", "fill_after_pct"}
        elif isinstance(event, Anomaly):
            assert got.tags == base | {"anomaly": "spike"}
            assert set(got.fields) == {"value"}
        else:
            assert got.tags == base | registry | {"alert": "full", "kind": "rvm"}
            assert set(got.fields) == {"state", "severity", "value", "episode", "cause"}
            assert got.fields["episode"] == episode


SITES = [
    "a\\,b",
    "a\\\\,b",
    "a\\ b",
    "a\\=b",
    "x\\ f\\=1i",
    "carriage\rreturn",
    'tab\t, quote" =',
    "\\\\start",
    " lead and trail ",
    "nul\x00byte",
    "Абай 12, этаж=2",
]


@pytest.mark.integration
def test_influxd_stores_exactly_one_point_with_the_intended_tag(
    influxd: InfluxDB1, influx_db: str
) -> None:
    """The reader's model of influxd, checked on the real one: each nasty site becomes one
    series with that exact tag value, and no other tag key, field key or measurement appears."""
    lines = []
    for i, site in enumerate(SITES):
        device = DeviceInfo(f"eb-{i}", Kind.ECOBOX, "almaty", 0, 0, 1.0, "paper", site, 60)
        m = devices.decode(f"taza/v1/almaty/ecobox/eb-{i}/state", b"online", RECEIVED)
        (line,) = devices.encode(m, device)
        assert read_line(line).tags["site"] == site
        lines.append(line)
    influxd.write(lines, influx_db)
    rows = influxd.query('SHOW TAG VALUES FROM "state" WITH KEY = "site"', influx_db)
    assert sorted(str(r["value"]) for r in rows) == sorted(SITES)
    keys = influxd.query('SHOW TAG KEYS FROM "state"', influx_db)
    assert {r["tagKey"] for r in keys} == {"device_id", "fraction", "kind", "region", "site"}
    fields = influxd.query("SHOW FIELD KEYS", influx_db)
    assert {r["fieldKey"] for r in fields} == {"online", "status"}
    assert len(influxd.query("SHOW SERIES", influx_db)) == len(SITES)
