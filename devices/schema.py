"""Declarative payload schema: every channel is built from a handful of field kinds.

Each field kind validates one JSON value strictly (no coercion: ``"12"`` is not 12, ``true``
is not 1, ``12.0`` is not an integer) and returns the value in its :class:`~devices.Message`
form. Channels are tables of ``name -> field kind``, so adding a channel or a field is a line
here, and the docs and tests can walk the same tables.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Protocol

from devices.construct import fast_constructor
from devices.errors import Reason, Rejected
from devices.message import Channel, Item, Kind

MATERIALS: Final = frozenset({"pet", "alu", "glass", "hdpe", "other"})
"""RVM materials: deposit items and bin names."""

FRACTIONS: Final = frozenset({"mixed", "plastic", "paper", "glass", "metal", "organic"})
"""Eco-box waste fractions (registry)."""

MODES: Final = frozenset({"ok", "full", "jam", "out_of_service"})
"""RVM operating modes (``rvm/status`` ``mode``)."""

FAULT_CODES: Mapping[str, str] = MappingProxyType(
    {
        "lid_open": "lid or service door of the eco-box is open",
        "sensor_error": "the fill sensor reports an error or no echo",
        "tilted": "the container is tilted beyond its threshold (knocked over, lifted)",
        "overheat": "temperature above the device's alarm threshold",
        "fire": "fire detected (temperature jump or smoke sensor)",
        "jam": "RVM: a container is stuck in the intake or compactor",
        "door_open": "RVM: the storage door is open",
        "printer_error": "RVM: the voucher printer is out of paper or faulty",
        "low_battery": "battery below the device's low-battery threshold",
        "bin_full": "a bin or the eco-box is full and cannot take more",
    }
)
"""Known fault codes, for both kinds; anything else in ``faults`` is ``bad_value``."""

MAX_ITEMS: Final = 100
"""Items per deposit; also keeps item timestamps inside their 100 ns slot (see encoding)."""

SEQ_MAX: Final = 2**32 - 1
INT64_MAX: Final = 2**63 - 1
COMMON_FIELDS: Final = frozenset({"ts", "seq", "device_id"})
"""Handled by the decoder itself for every JSON channel."""

_new_item: Final = fast_constructor(Item)
CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
CURRENCY_RE: Final = re.compile(r"[A-Z]{3}")


def describe(value: object) -> str:
    """A short, log-safe description of a JSON value for a rejection detail."""
    t = type(value)
    if isinstance(value, str):
        s = value if len(value) <= 40 else value[:40] + "…"
        return f"string {s!r}"
    if t is bool:
        return f"boolean {'true' if value else 'false'}"
    if t is int or t is float:
        return f"number {value!r}"
    if value is None:
        return "null"
    if t is list:
        return "array"
    return "object"


class Field(Protocol):
    """One field kind: validates a JSON value (never ``None``) and returns its stored form."""

    @property
    def doc(self) -> str: ...

    def check(self, value: object, name: str) -> object: ...


@dataclass(frozen=True, slots=True)
class Number:
    """A finite JSON number (integer or not) in [lo, hi], stored as float."""

    lo: float
    hi: float
    unit: str = ""
    doc: str = ""

    def check(self, value: object, name: str) -> float:
        t = type(value)
        if t is float:
            if self.lo <= value <= self.hi:  # type: ignore[operator]
                return value  # type: ignore[return-value]
        elif t is int:
            if self.lo <= value <= self.hi:  # type: ignore[operator]
                return float(value)  # type: ignore[arg-type]
        else:
            raise Rejected(
                Reason.WRONG_TYPE, f"{name} must be a number, got {describe(value)}", field=name
            )
        raise Rejected(
            Reason.OUT_OF_RANGE, f"{name} {value!r} is outside {self.lo:g}..{self.hi:g}", field=name
        )


@dataclass(frozen=True, slots=True)
class Integer:
    """A JSON integer in [lo, hi]: no fraction, no exponent, not a boolean."""

    lo: int
    hi: int
    unit: str = ""
    doc: str = ""

    def check(self, value: object, name: str) -> int:
        if type(value) is int:
            if self.lo <= value <= self.hi:
                return value
            raise Rejected(
                Reason.OUT_OF_RANGE, f"{name} {value} is outside {self.lo}..{self.hi}", field=name
            )
        if type(value) is float and value.is_integer() and abs(value) >= 2.0**63:
            # The JSON parser turns integer literals beyond 64 bits into floats.
            raise Rejected(
                Reason.OUT_OF_RANGE, f"{name} {value!r} is beyond the 64-bit range", field=name
            )
        raise Rejected(
            Reason.WRONG_TYPE, f"{name} must be an integer, got {describe(value)}", field=name
        )


@dataclass(frozen=True, slots=True)
class Text:
    """A string of min_len..max_len characters (code points), no control characters."""

    max_len: int
    min_len: int = 1
    pattern: re.Pattern[str] | None = None
    pattern_doc: str = ""
    doc: str = ""

    def check(self, value: object, name: str) -> str:
        if type(value) is not str:
            raise Rejected(
                Reason.WRONG_TYPE, f"{name} must be a string, got {describe(value)}", field=name
            )
        n = len(value)
        if n < self.min_len or n > self.max_len:
            raise Rejected(
                Reason.BAD_VALUE,
                f"{name} has {n} characters, allowed {self.min_len}..{self.max_len}",
                field=name,
            )
        if CONTROL_RE.search(value) is not None:
            raise Rejected(
                Reason.BAD_VALUE,
                f"{name} {describe(value)} contains control characters",
                field=name,
            )
        if self.pattern is not None and self.pattern.fullmatch(value) is None:
            raise Rejected(
                Reason.BAD_VALUE,
                f"{name} {describe(value)} does not match "
                f"{self.pattern_doc or self.pattern.pattern}",
                field=name,
            )
        return value


@dataclass(frozen=True, slots=True)
class Choice:
    """One string out of a fixed set."""

    values: frozenset[str]
    doc: str = ""

    def check(self, value: object, name: str) -> str:
        if type(value) is not str:
            raise Rejected(
                Reason.WRONG_TYPE, f"{name} must be a string, got {describe(value)}", field=name
            )
        if value not in self.values:
            raise Rejected(
                Reason.BAD_VALUE,
                f"{name} {describe(value)} is not one of {', '.join(sorted(self.values))}",
                field=name,
            )
        return value


@dataclass(frozen=True, slots=True)
class CodeSet:
    """An array of distinct known codes, stored sorted (one canonical form per message)."""

    codes: frozenset[str]
    doc: str = ""

    def check(self, value: object, name: str) -> tuple[str, ...]:
        if type(value) is not list:
            raise Rejected(
                Reason.WRONG_TYPE, f"{name} must be an array, got {describe(value)}", field=name
            )
        for code in value:
            if type(code) is not str:
                raise Rejected(
                    Reason.WRONG_TYPE,
                    f"{name} entries must be strings, got {describe(code)}",
                    field=name,
                )
            if code not in self.codes:
                raise Rejected(
                    Reason.BAD_VALUE, f"{name}: unknown code {describe(code)}", field=name
                )
        codes = tuple(sorted(value))
        if len(set(codes)) != len(codes):
            raise Rejected(Reason.BAD_VALUE, f"{name} lists a code twice", field=name)
        return codes


@dataclass(frozen=True, slots=True)
class PercentByMaterial:
    """An object material -> percent; stored as (material, percent) pairs sorted by material."""

    materials: frozenset[str]
    percent: Number = field(default_factory=lambda: Number(0, 100, "%"))
    doc: str = ""

    def check(self, value: object, name: str) -> tuple[tuple[str, float], ...]:
        if type(value) is not dict:
            raise Rejected(
                Reason.WRONG_TYPE, f"{name} must be an object, got {describe(value)}", field=name
            )
        out = []
        for material, pct in value.items():
            if material not in self.materials:
                raise Rejected(
                    Reason.BAD_VALUE,
                    f"{name}: {describe(material)} is not one of "
                    f"{', '.join(sorted(self.materials))}",
                    field=name,
                )
            if pct is None:
                continue
            out.append((material, self.percent.check(pct, f"{name}.{material}")))
        out.sort()
        return tuple(out)


@dataclass(frozen=True, slots=True)
class Record:
    """The fields of one JSON object: kinds, and which must be present (``null`` = absent)."""

    fields: Mapping[str, Field]
    required: tuple[str, ...] = ()
    skip: frozenset[str] = frozenset()
    _checks: dict[str, Callable[[object, str], object] | None] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Bound methods looked up once (validation runs for every message); None marks the
        # names handled elsewhere.
        checks: dict[str, Callable[[object, str], object] | None] = dict.fromkeys(self.skip)
        checks.update((n, f.check) for n, f in self.fields.items())
        object.__setattr__(self, "_checks", checks)

    def require(self, doc: dict[str, object], prefix: str) -> None:
        for name in self.required:
            if doc.get(name) is None:
                raise Rejected(
                    Reason.MISSING_FIELD, f"required field {prefix}{name} is missing", field=name
                )

    def validate(
        self, doc: dict[str, object], prefix: str, extra: list[str], *, required: bool = True
    ) -> dict[str, object]:
        """Validated fields by name; unknown names are appended to ``extra`` (with ``prefix``)."""
        if required:
            self.require(doc, prefix)
        out: dict[str, object] = {}
        checks = self._checks
        for name, value in doc.items():
            check = checks.get(name, _unknown)
            if check is None:
                continue
            if check is _unknown:
                if CONTROL_RE.search(name) is not None:
                    raise Rejected(
                        Reason.BAD_VALUE, f"field name {name!r} contains control characters"
                    )
                extra.append(prefix + name)
            elif value is not None:
                out[name] = check(value, name)
        return out


def _unknown(value: object, name: str) -> object:
    """Marks a field name the record does not know (never called)."""
    raise AssertionError(name)


@dataclass(frozen=True, slots=True)
class Items:
    """The deposit's non-empty array of item objects."""

    item: Record
    max_items: int = MAX_ITEMS
    doc: str = ""

    def check_items(self, value: object, name: str, extra: list[str]) -> tuple[Item, ...]:
        if type(value) is not list:
            raise Rejected(
                Reason.WRONG_TYPE, f"{name} must be an array, got {describe(value)}", field=name
            )
        n = len(value)
        if n == 0 or n > self.max_items:
            raise Rejected(
                Reason.BAD_VALUE, f"{name} has {n} entries, allowed 1..{self.max_items}", field=name
            )
        out = []
        prefix = f"{name}[]."
        item = self.item
        for i, entry in enumerate(value):
            if type(entry) is not dict:
                raise Rejected(
                    Reason.WRONG_TYPE,
                    f"{name}[{i}] must be an object, got {describe(entry)}",
                    field=f"{name}[{i}]",
                )
            try:
                v = item.validate(entry, prefix, extra)
            except Rejected as e:
                where = f"{name}[{i}]" + (f".{e.field}" if e.field else "")
                raise Rejected(e.reason, f"{name}[{i}]: {e.detail}", field=where) from None
            out.append(_new_item(**v))
        return tuple(out)


# -- the channels ------------------------------------------------------------------------------

TEMPERATURE = Number(-50, 150, "°C", "temperature inside the device")

FILL = Record(
    {
        "fill_pct": Number(0, 100, "%", "fill level"),
        "distance_mm": Number(0, 10_000, "mm", "raw sensor-to-surface distance"),
        "temperature_c": TEMPERATURE,
        "tilt_deg": Number(0, 180, "°", "tilt from upright"),
    },
    required=("fill_pct",),
    skip=COMMON_FIELDS,
)

_STATUS_FIELDS: dict[str, Field] = {
    "battery_v": Number(0, 15, "V", "battery voltage"),
    "battery_pct": Number(0, 100, "%", "battery charge"),
    "rssi_dbm": Number(-150, 0, "dBm", "radio signal strength"),
    "temperature_c": TEMPERATURE,
    "uptime_s": Integer(0, SEQ_MAX, "s", "seconds since boot"),
    "firmware": Text(32, doc="firmware version"),
    "faults": CodeSet(frozenset(FAULT_CODES), "active fault codes, each at most once"),
}

ECOBOX_STATUS = Record(_STATUS_FIELDS, skip=COMMON_FIELDS)

RVM_STATUS = Record(
    {
        **_STATUS_FIELDS,
        "bins": PercentByMaterial(MATERIALS, doc="fill percent of each material's bin"),
        "mode": Choice(MODES, "operating mode"),
    },
    skip=COMMON_FIELDS,
)

ITEM = Record(
    {
        "material": Choice(MATERIALS, "material of the containers"),
        "count": Integer(1, 1000, "", "containers of this material (and volume)"),
        "volume_ml": Integer(1, 10_000, "ml", "nominal container volume"),
    },
    required=("material", "count"),
)

DEPOSIT_ITEMS = Items(ITEM, doc="accepted containers, grouped")

DEPOSIT = Record(
    {
        "txn_id": Text(64, doc="transaction id, unique per device"),
        "rejected": Integer(0, 100_000, "", "containers refused in this transaction"),
        "refund_minor": Integer(0, INT64_MAX, "minor units", "refund paid (e.g. tiyn, cents)"),
        "currency": Text(3, 3, CURRENCY_RE, "^[A-Z]{3}$", "ISO 4217 code, default KZT"),
    },
    required=("txn_id", "items"),
    skip=COMMON_FIELDS | {"items"},
)

SEQ = Integer(0, SEQ_MAX, "", "per-device message counter, +1 per message, wraps")

SPECS: Mapping[tuple[Kind, Channel], Record] = {
    (Kind.ECOBOX, Channel.FILL): FILL,
    (Kind.ECOBOX, Channel.STATUS): ECOBOX_STATUS,
    (Kind.RVM, Channel.STATUS): RVM_STATUS,
    (Kind.RVM, Channel.DEPOSIT): DEPOSIT,
}
"""Every JSON channel's fields (``state`` is plain text, not JSON)."""
