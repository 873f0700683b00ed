"""The fleet file: which devices exist, where they are and what they hold.

Hand-validated rather than with pydantic so that every error names the file, the line and
the field an operator has to fix; the file is read once at start, so speed does not matter
here, clarity does. CSV and JSON carry the same columns; both are strict about types and
unknown columns (a typo such as ``stie`` must not silently drop a column).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import NoReturn

from devices.errors import RegistryError
from devices.message import Kind
from devices.schema import FRACTIONS
from devices.topics import DEVICE_ID_RE, REGION_RE, RESERVED_REGIONS

COLUMNS = (
    "device_id",
    "kind",
    "region",
    "lat",
    "lon",
    "capacity_l",
    "fraction",
    "site",
    "report_interval_s",
    "full_threshold_pct",
)
"""Fleet-file columns, in this order when taza writes a file."""

OPTIONAL_COLUMNS = frozenset({"full_threshold_pct"})
"""Columns a file may leave out altogether (written only when some device has a value)."""

SITE_MAX = 64
_MAX_INTERVAL_S = 31 * 86_400


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One device of the fleet, as the encoder and the alert rules need it.

    ``fraction`` and ``site`` become tags of the device's points; ``capacity_l`` is the
    eco-box volume (optional for RVMs); ``report_interval_s`` lets the service tell a silent
    device from a quiet one.
    """

    device_id: str
    kind: Kind
    region: str
    lat: float
    lon: float
    capacity_l: float | None
    fraction: str | None
    site: str | None
    report_interval_s: int
    full_threshold_pct: float | None = None


class Registry(Mapping[str, DeviceInfo]):
    """The fleet by ``device_id`` (a read-only mapping)."""

    def __init__(self, devices: Iterable[DeviceInfo] = ()) -> None:
        by_id: dict[str, DeviceInfo] = {}
        for d in devices:
            if d.device_id in by_id:
                raise ValueError(f"duplicate device_id {d.device_id!r}")
            by_id[d.device_id] = d
        self._by_id = by_id

    @classmethod
    def load(cls, path: str | Path) -> Registry:
        """Read a ``.csv`` or ``.json`` fleet file; raise :class:`RegistryError` on any problem."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise RegistryError(str(p), None, None, f"cannot read: {e}") from None
        return cls.parse(text, str(p), fmt=_format_of(p, text))

    @classmethod
    def parse(cls, text: str, name: str = "<fleet>", *, fmt: str = "csv") -> Registry:
        """Parse fleet-file text (``fmt`` ``csv`` or ``json``); ``name`` appears in errors."""
        rows = _csv_rows(text, name) if fmt == "csv" else _json_rows(text, name)
        seen: dict[str, int] = {}
        devices = []
        for line, row in rows:
            d = _device(row, name, line)
            if d.device_id in seen:
                raise RegistryError(
                    name,
                    line,
                    "device_id",
                    f"duplicate device_id {d.device_id!r} (first on line {seen[d.device_id]})",
                )
            seen[d.device_id] = line
            devices.append(d)
        return cls(devices)

    def get(self, device_id: str, default: None = None) -> DeviceInfo | None:  # type: ignore[override]
        """The device, or ``None`` when unregistered (a plain dict lookup: per message)."""
        return self._by_id.get(device_id)

    def __getitem__(self, device_id: str) -> DeviceInfo:
        return self._by_id[device_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def __repr__(self) -> str:
        return f"Registry({len(self)} devices)"

    def dumps(self, fmt: str = "csv") -> str:
        """The fleet as a file ``load`` reads back unchanged (for ``taza-sim fleet --out``)."""
        devices = self._by_id.values()
        used = [c for c in OPTIONAL_COLUMNS if any(getattr(d, c) is not None for d in devices)]
        columns = [c for c in COLUMNS if c not in OPTIONAL_COLUMNS or c in used]
        if fmt == "json":
            rows = [
                {c: v for c, v in zip(COLUMNS, astuple(d), strict=True) if c in columns}
                for d in self._by_id.values()
            ]
            return json.dumps(rows, indent=1, ensure_ascii=False) + "\n"
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(columns)
        for d in self._by_id.values():
            row = dict(zip(COLUMNS, astuple(d), strict=True))
            w.writerow(
                [
                    "" if v is None else repr(v) if type(v) is float else v
                    for v in (row[c] for c in columns)
                ]
            )
        return buf.getvalue()

    def save(self, path: str | Path) -> None:
        """Write a ``.csv`` or ``.json`` fleet file (by extension)."""
        p = Path(path)
        p.write_text(self.dumps("json" if p.suffix.lower() == ".json" else "csv"), encoding="utf-8")


def _format_of(path: Path, text: str) -> str:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".json"):
        return suffix[1:]
    return "json" if text.lstrip()[:1] in ("[", "{") else "csv"


def _csv_rows(text: str, name: str) -> Iterator[tuple[int, dict[str, object]]]:
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise RegistryError(name, 1, None, "empty file: expected a header line")
        header = [h.strip() for h in header]
        _check_columns(header, name, 1)
        start = reader.line_num + 1
        for row in reader:
            line, start = start, reader.line_num + 1
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise RegistryError(
                    name, line, None, f"{len(row)} columns, the header has {len(header)}"
                )
            yield line, {h: c.strip() for h, c in zip(header, row, strict=True)}
    except csv.Error as e:
        raise RegistryError(name, reader.line_num, None, f"CSV syntax: {e}") from None


def _json_rows(text: str, name: str) -> Iterator[tuple[int, dict[str, object]]]:
    """Rows of a JSON array of objects, each with the line its object starts on."""
    decoder = json.JSONDecoder(parse_constant=_no_constant)
    text = text.removeprefix("\ufeff")
    pos = 0

    def skip(at: int) -> int:
        return _WS.match(text, at).end()  # type: ignore[union-attr]

    def where(at: int) -> int:
        return text.count("\n", 0, at) + 1

    try:
        pos = skip(0)
        if text[pos : pos + 1] != "[":
            raise RegistryError(name, where(pos), None, "expected a JSON array of devices")
        pos = skip(pos + 1)
        index = 0
        if text[pos : pos + 1] == "]":
            pos += 1
        else:
            while True:
                line = where(pos)
                obj, pos = decoder.raw_decode(text, pos)
                if type(obj) is not dict:
                    raise RegistryError(name, line, None, f"device #{index} is not a JSON object")
                for key in obj:
                    if key not in COLUMNS:
                        raise RegistryError(
                            name,
                            line,
                            key,
                            f"device #{index}: unknown field {key!r}; "
                            f"the fields are {', '.join(COLUMNS)}",
                        )
                yield line, {k: _Json(v) for k, v in obj.items()}
                index += 1
                pos = skip(pos)
                if text[pos : pos + 1] == ",":
                    pos = skip(pos + 1)
                    continue
                if text[pos : pos + 1] == "]":
                    pos += 1
                    break
                raise RegistryError(name, where(pos), None, "expected ',' or ']' in the array")
        if text[pos:].strip():
            raise RegistryError(name, where(pos), None, "unexpected text after the array")
    except json.JSONDecodeError as e:
        raise RegistryError(name, e.lineno, None, f"JSON syntax: {e.msg}") from None
    except _NotJson as e:
        raise RegistryError(name, where(pos), None, str(e)) from None


class _NotJson(ValueError):
    pass


def _no_constant(token: str) -> object:
    raise _NotJson(f"{token} is not a JSON number")


@dataclass(frozen=True, slots=True)
class _Json:
    """A JSON value: typed already, unlike CSV text, so it is checked without parsing."""

    value: object


def _check_columns(names: list[str], name: str, line: int) -> None:
    for n in names:
        if n not in COLUMNS:
            raise RegistryError(
                name, line, n, f"unknown column {n!r}; the columns are {', '.join(COLUMNS)}"
            )
    for n in names:
        if names.count(n) > 1:
            raise RegistryError(name, line, n, "column given twice")
    for c in COLUMNS:
        if c not in names and c not in OPTIONAL_COLUMNS:
            raise RegistryError(name, line, c, f"missing column {c!r}")


def _device(row: dict[str, object], name: str, line: int) -> DeviceInfo:
    r = _Row(row, name, line)
    device_id = r.text("device_id")
    if DEVICE_ID_RE.fullmatch(device_id) is None:
        r.fail("device_id", f"{device_id!r} does not match ^[A-Za-z0-9][A-Za-z0-9_-]{{0,63}}$")
    kind_s = r.text("kind")
    if kind_s not in ("ecobox", "rvm"):
        r.fail("kind", f"{kind_s!r} is not ecobox or rvm")
    kind = Kind(kind_s)
    region = r.text("region")
    if REGION_RE.fullmatch(region) is None:
        r.fail("region", f"{region!r} does not match ^[a-z][a-z0-9-]{{0,31}}$")
    if region in RESERVED_REGIONS:
        r.fail("region", f"{region!r} is reserved (taza/v1/{region}/ is not a region)")
    lat = r.number("lat", -90, 90)
    lon = r.number("lon", -180, 180)
    is_rvm = kind is Kind.RVM
    capacity = r.optional_number("capacity_l", 0, 1_000_000) if is_rvm else None
    if not is_rvm:
        capacity = r.number("capacity_l", 0, 1_000_000)
    if capacity is not None and capacity <= 0:
        r.fail("capacity_l", f"{capacity:g} must be greater than 0")
    fraction = r.optional_text("fraction") if is_rvm else r.text("fraction")
    if fraction is not None and fraction not in FRACTIONS:
        r.fail("fraction", f"{fraction!r} is not one of {', '.join(sorted(FRACTIONS))}")
    site = r.optional_text("site")
    if site is not None:
        if len(site) > SITE_MAX or not site.isprintable():
            r.fail("site", f"{site!r} must be at most {SITE_MAX} printable characters")
        if "\\" in site:
            # InfluxDB 1.x keeps backslashes in tags literally, 2.x and VictoriaMetrics read
            # a doubled one as one: the same site would become different tags on different stores.
            r.fail("site", f"{site!r} contains a backslash, which tags cannot carry portably")
    interval = r.integer("report_interval_s", 1, _MAX_INTERVAL_S)
    full = r.optional_number("full_threshold_pct", 0, 100)
    return DeviceInfo(device_id, kind, region, lat, lon, capacity, fraction, site, interval, full)


_WS = re.compile(r"\s*")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?", re.ASCII)
_INTEGER = re.compile(r"[0-9]+", re.ASCII)


class _Row:
    """Typed access to one row (CSV text or JSON values); errors name the line and the field."""

    def __init__(self, row: dict[str, object], name: str, line: int) -> None:
        self.row, self.name, self.line = row, name, line

    def fail(self, field: str, detail: str) -> NoReturn:
        raise RegistryError(self.name, self.line, field, detail)

    def _raw(self, field: str) -> tuple[bool, object]:
        """(is_json, value); the value is ``None`` when empty, absent or JSON null."""
        raw = self.row.get(field)
        if isinstance(raw, _Json):
            return True, raw.value
        return False, raw or None

    def optional_text(self, field: str) -> str | None:
        _, v = self._raw(field)
        if v is None:
            return None
        if type(v) is not str:
            self.fail(field, f"must be a string, got {json.dumps(v)}")
        return v or None

    def text(self, field: str) -> str:
        v = self.optional_text(field)
        if v is None:
            self.fail(field, "required")
        return v

    def optional_number(self, field: str, lo: float, hi: float) -> float | None:
        is_json, v = self._raw(field)
        if v is None:
            return None
        if is_json:
            if type(v) is not int and type(v) is not float:
                self.fail(field, f"must be a number, got {json.dumps(v)}")
            x = float(v)
        else:
            if type(v) is not str or _NUMBER.fullmatch(v) is None:
                self.fail(field, f"{v!r} is not a number")
            x = float(v)
        if not math.isfinite(x) or not lo <= x <= hi:
            self.fail(field, f"{v} is outside {lo:g}..{hi:g}")
        return x

    def number(self, field: str, lo: float, hi: float) -> float:
        x = self.optional_number(field, lo, hi)
        if x is None:
            self.fail(field, "required")
        return x

    def integer(self, field: str, lo: int, hi: int) -> int:
        is_json, v = self._raw(field)
        if v is None:
            self.fail(field, "required")
        if is_json:
            if type(v) is not int:
                self.fail(field, f"must be an integer, got {json.dumps(v)}")
            n = v
        else:
            if type(v) is not str or _INTEGER.fullmatch(v) is None:
                self.fail(field, f"{v!r} is not a whole number")
            n = int(v)
        if not lo <= n <= hi:
            self.fail(field, f"{n} is outside {lo}..{hi}")
        return n
