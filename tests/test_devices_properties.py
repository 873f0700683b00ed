"""Property tests of the contract: decode never crashes, and what it accepts encodes as promised."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import devices
from devices import (
    Channel,
    Deposit,
    DeviceInfo,
    Fill,
    Ignored,
    Item,
    Kind,
    Limits,
    Message,
    Presence,
    Reason,
    Rejected,
    Status,
    Topic,
)
from devices.construct import fast_constructor, python_constructor

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
NOW_MS = 1_777_636_800_000
ROOMY = Limits(max_payload_bytes=1 << 20)
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- valid messages -------------------------------------------------------------------------

regions = st.from_regex(r"[a-z][a-z0-9-]{0,31}", fullmatch=True).filter(lambda r: r != "alerts")
device_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", fullmatch=True)
ts_ms = st.integers(NOW_MS - 7 * 86_400_000, NOW_MS + 5 * 60_000)
seqs = st.integers(0, 2**32 - 1)
no_control = st.characters(blacklist_categories=("Cs", "Cc"))
texts = st.text(no_control, min_size=1, max_size=64)


def num(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def opt(s: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.none() | s


fills = st.builds(
    Fill,
    fill_pct=num(0, 100),
    distance_mm=opt(num(0, 10_000)),
    temperature_c=opt(num(-50, 150)),
    tilt_deg=opt(num(0, 180)),
)


@st.composite
def statuses(draw: st.DrawFn, kind: Kind) -> Status:
    rvm = kind is Kind.RVM
    bins = draw(st.dictionaries(st.sampled_from(sorted(devices.MATERIALS)), num(0, 100)))
    return Status(
        battery_v=draw(opt(num(0, 15))),  # type: ignore[arg-type]
        battery_pct=draw(opt(num(0, 100))),  # type: ignore[arg-type]
        rssi_dbm=draw(opt(num(-150, 0))),  # type: ignore[arg-type]
        temperature_c=draw(opt(num(-50, 150))),  # type: ignore[arg-type]
        uptime_s=draw(opt(st.integers(0, 2**32 - 1))),  # type: ignore[arg-type]
        firmware=draw(opt(st.text(no_control, min_size=1, max_size=32))),  # type: ignore[arg-type]
        faults=tuple(sorted(draw(st.sets(st.sampled_from(sorted(devices.FAULT_CODES)))))),
        bins=tuple(sorted(bins.items())) if rvm else (),
        mode=draw(opt(st.sampled_from(sorted(devices.MODES)))) if rvm else None,  # type: ignore[arg-type]
    )


items = st.builds(
    Item,
    material=st.sampled_from(sorted(devices.MATERIALS)),
    count=st.integers(1, 1000),
    volume_ml=opt(st.integers(1, 10_000)),
)
deposits = st.builds(
    Deposit,
    txn_id=texts,
    items=st.lists(items, min_size=1, max_size=devices.MAX_ITEMS).map(tuple),
    rejected=st.integers(0, 100_000),
    refund_minor=st.integers(0, 2**63 - 1),
    currency=st.from_regex(r"[A-Z]{3}", fullmatch=True),
)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    kind = draw(st.sampled_from(Kind))
    channel = draw(st.sampled_from(sorted(devices.CHANNELS[kind])))
    topic = Topic(draw(regions), kind, draw(device_ids), channel)
    if channel is Channel.STATE:
        return Message(topic, NOW_MS, None, Presence(draw(st.booleans())))
    body: devices.Body
    if channel is Channel.FILL:
        body = draw(fills)
    elif channel is Channel.STATUS:
        body = draw(statuses(kind))
    else:
        body = draw(deposits)
    return Message(topic, draw(ts_ms), draw(seqs), body)


def expected_lines(m: Message) -> int:
    if isinstance(m.body, Status):
        return 1 + len(m.body.bins)
    if isinstance(m.body, Deposit):
        return len(m.body.items) + 1
    return 1


sites = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=64).filter(
    lambda s: "\\" not in s and s.isprintable()
)


def device_for(m: Message, site: str, fraction: str | None) -> DeviceInfo:
    t = m.topic
    return DeviceInfo(t.device_id, t.kind, t.region, 0.0, 0.0, 1.0, fraction, site, 60)


@FAST
@given(messages())
def test_valid_messages_round_trip_through_their_payload(m: Message) -> None:
    assert devices.decode(str(m.topic), devices.to_payload(m), NOW, ROOMY) == m


@FAST
@given(m=messages(), site=sites, fraction=st.none() | st.sampled_from(sorted(devices.FRACTIONS)))
def test_accepted_messages_encode_to_the_intended_number_of_lines(
    m: Message, site: str, fraction: str | None
) -> None:
    decoded = devices.decode(str(m.topic), devices.to_payload(m), NOW, ROOMY)
    lines = devices.encode(decoded, device_for(m, site, fraction))
    assert len(lines) == expected_lines(m)
    assert all("\n" not in line for line in lines)
    assert len(devices.encode(decoded)) == expected_lines(m)


@FAST
@given(messages())
def test_redelivery_writes_identical_lines(m: Message) -> None:
    payload = devices.to_payload(m)
    first = devices.encode(devices.decode(str(m.topic), payload, NOW, ROOMY))
    again = devices.encode(devices.decode(str(m.topic), bytes(payload), NOW, ROOMY))
    assert first == again


@FAST
@given(m=messages(), other=seqs)
def test_messages_differing_only_in_seq_never_share_a_timestamp(m: Message, other: int) -> None:
    assume(m.seq is not None and other % 10_000 != m.seq % 10_000)
    twin = dataclasses.replace(m, seq=other)
    times = {int(line.rsplit(" ", 1)[1]) for line in devices.encode(m)}
    twin_times = {int(line.rsplit(" ", 1)[1]) for line in devices.encode(twin)}
    assert not times & twin_times


# -- anything at all ------------------------------------------------------------------------


def attempt(topic: str, payload: bytes, limits: Limits) -> Message | Rejected | Ignored:
    """decode's outcome as a value; any other exception propagates and fails the test."""
    try:
        return devices.decode(topic, payload, NOW, limits)
    except (Rejected, Ignored) as e:
        return e


FIELD_NAMES = sorted(
    {name for spec in devices.schema.SPECS.values() for name in spec.fields}
    | {"ts", "seq", "device_id", "items", "material", "count", "volume_ml"}
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["2026-05-01T12:00:00Z", "pet", "jam", "ok", "online"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "ts": st.one_of(ts_ms, json_values),
        "seq": st.one_of(seqs, json_values),
        **{name: json_values for name in FIELD_NAMES if name not in ("ts", "seq")},
    },
).flatmap(
    lambda d: st.dictionaries(st.text(max_size=8), json_values, max_size=3).map(
        lambda extra: {**extra, **d}
    )
)
topics = st.one_of(
    st.builds(
        "taza/v1/{}/{}/{}/{}".format,
        st.sampled_from(["almaty", "alerts", "Almaty", "x" * 33]),
        st.sampled_from(["ecobox", "rvm", "bin"]),
        st.sampled_from(["eb-1", "rvm_7", "-bad", "a/b"]),
        st.sampled_from(["fill", "status", "deposit", "state", "alerts", ""]),
    ),
    st.text(max_size=40),
)
payloads = st.one_of(
    st.binary(max_size=300),
    documents.map(lambda d: json.dumps(d).encode()),
    messages().map(devices.to_payload),
    st.sampled_from([b"online", b"offline", b"", b"\xff", b"[" * 3000, b"1e999"]),
)


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(topic=topics, payload=payloads, strict=st.booleans())
def test_any_bytes_on_any_topic_give_a_message_or_a_named_refusal(
    topic: str, payload: bytes, strict: bool
) -> None:
    outcome = attempt(topic, payload, Limits(strict=strict))
    if isinstance(outcome, Rejected):
        assert isinstance(outcome.reason, devices.Reason)
        assert outcome.detail
    elif isinstance(outcome, Message):
        assert len(devices.encode(outcome)) == expected_lines(outcome)


_DELETE = object()


near_ranges = st.one_of(
    st.floats(-300, 20_000),
    st.integers(-5, 2**64),
    st.booleans(),
    st.sampled_from([0, 100, 100.0001, -0.0, 2**32, 2**63, "12", "", "x" * 65, "KZT", "kzt"]),
    st.sampled_from(["1.2\n", "\x00", "\x1b[2J", "del\x7f", "c1\x85", "jam", "pet"]),
)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid message's payload with one to three fields replaced, added or deleted."""
    m = draw(messages().filter(lambda m: m.topic.channel is not Channel.STATE))
    doc = json.loads(devices.to_payload(m))
    for _ in range(draw(st.integers(1, 3))):
        name = draw(
            st.sampled_from(sorted(doc)) | st.sampled_from(FIELD_NAMES) | st.text(max_size=6)
        )
        value = draw(near_ranges | json_values | st.just(_DELETE))
        items = doc.get("items")
        if name == "items" and isinstance(items, list) and items and draw(st.booleans()):
            entry = dict(draw(st.sampled_from(items)))
            key = draw(st.sampled_from(["material", "count", "volume_ml", "x"]))
            if value is _DELETE:
                entry.pop(key, None)
            else:
                entry[key] = value
            doc["items"] = [*items, entry]
        elif value is _DELETE:
            doc.pop(name, None)
        else:
            doc[name] = value
    return str(m.topic), json.dumps(doc).encode()


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=mutated(), strict=st.booleans())
def test_mutated_valid_payloads_never_crash(case: tuple[str, bytes], strict: bool) -> None:
    topic, payload = case
    outcome = attempt(topic, payload, Limits(max_payload_bytes=1 << 20, strict=strict))
    assert not isinstance(outcome, Ignored)
    if isinstance(outcome, Message):
        assert len(devices.encode(outcome)) == expected_lines(outcome)
    else:
        assert outcome.detail


TRICKY: list[object] = [
    None, True, False, 0, 1, -1, 0.5, -0.0, 100, 100.0001, -150, -150.5, 1000, 1001, 10_000,
    10_001, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64, 1e300, "", "1", "12", "x" * 32, "x" * 33,
    "t" * 64, "t" * 65, "ok\n", "\x00", "\x1b[2J", "c1\x85", "del\x7f", "KZT", "kzt", "EURO",
    "pet", "paper", "jam", "ok", "broken", [], ["jam"], ["jam", "jam"], ["on_fire"], [1], {},
    {"pet": 5}, {"pet": 101}, {"paper": 5}, {"pet": None}, {"pet": "5"}, [{"material": "pet"}],
    [{"material": "pet", "count": 1}], [[]], {"a": {"b": {"c": {}}}},
]  # fmt: skip


def test_a_tricky_value_in_any_field_is_accepted_or_refused_naming_that_field() -> None:
    base = {
        "taza/v1/almaty/ecobox/eb-1/fill": {"fill_pct": 5},
        "taza/v1/almaty/ecobox/eb-1/status": {"faults": ["jam"]},
        "taza/v1/almaty/rvm/r-1/status": {"bins": {"pet": 5}, "mode": "ok"},
        "taza/v1/almaty/rvm/r-1/deposit": {
            "txn_id": "t",
            "items": [{"material": "pet", "count": 2, "volume_ml": 500}],
        },
    }
    checked = refused = 0
    for topic, fields in base.items():
        t = devices.parse_topic(topic)
        names = [*devices.schema.SPECS[t.kind, t.channel].fields, "ts", "seq", "device_id", "x"]
        cases: list[tuple[str, dict[str, object]]] = []
        for value in TRICKY:
            cases += [(name, {**fields, name: value}) for name in names]
            if t.channel is Channel.DEPOSIT:
                cases += [
                    ("items", {**fields, "items": value}),
                    *(
                        (f"items[0].{key}", {**fields, "items": [{"material": "alu", "count": 1,
                                                                  key: value}]})
                        for key in ("material", "count", "volume_ml", "sku")
                    ),
                ]  # fmt: skip
        for name, doc in cases:
            for limits in (ROOMY, Limits(max_payload_bytes=1 << 20, strict=True)):
                outcome = attempt(
                    topic, json.dumps({"ts": NOW_MS, "seq": 1, **doc}).encode(), limits
                )
                checked += 1
                if isinstance(outcome, Message):
                    continue
                assert isinstance(outcome, Rejected), (topic, doc)
                refused += 1
                if outcome.reason is Reason.TOO_DEEP:  # a whole-document rule: no field
                    assert outcome.field is None
                elif outcome.reason is Reason.UNKNOWN_FIELD:
                    assert limits.strict
                    assert name.endswith(("x", "sku", "bins", "mode"))
                else:
                    assert outcome.field is not None
                    assert outcome.field.startswith(name), (
                        topic, doc, outcome.field, outcome.detail
                    )  # fmt: skip
    assert checked > 2000
    assert 0.3 < refused / checked < 0.9


# -- the fast constructors the decoder uses -------------------------------------------------


SAMPLES: dict[type, object] = {
    Fill: Fill(1.0, 2.0),
    Status: Status(faults=("jam",)),
    Item: Item("pet", 1),
    Deposit: Deposit("t", (Item("pet", 1),)),
    Presence: Presence(True),
    Message: Message(Topic("a", Kind.RVM, "d", Channel.STATE), 1, None, Presence(True)),
    Topic: Topic("a", Kind.RVM, "d", Channel.STATE),
}
CONSTRUCTORS = [fast_constructor, python_constructor]


@pytest.mark.parametrize("constructor", CONSTRUCTORS)
@pytest.mark.parametrize("cls", list(SAMPLES))
def test_fast_constructors_build_equal_objects(cls: type, constructor: Callable[..., Any]) -> None:
    make: object = constructor(cls)
    assert make is not cls
    fields = dataclasses.fields(cls)
    original = SAMPLES[cls]
    kwargs = {f.name: getattr(original, f.name) for f in fields}
    assert callable(make)
    for built in (make(**kwargs), make(*kwargs.values())):
        assert built == original
        assert hash(built) == hash(original)
        assert type(built) is cls
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(built, fields[0].name, None)
    required = [f.name for f in fields if f.default is dataclasses.MISSING]
    assert make(*(kwargs[n] for n in required)) == cls(*(kwargs[n] for n in required))


@pytest.mark.parametrize("constructor", CONSTRUCTORS)
@pytest.mark.parametrize("cls", list(SAMPLES))
def test_fast_constructors_refuse_what_the_class_refuses(
    cls: type, constructor: Callable[..., Any]
) -> None:
    make = constructor(cls)
    fields = dataclasses.fields(cls)
    values = [getattr(SAMPLES[cls], f.name) for f in fields]
    first = fields[0].name
    wrong: list[tuple[tuple[object, ...], dict[str, object]]] = [
        ((*values, None), {}),
        ((values[0],), {first: values[0]}),
        ((), {**dict.fromkeys([f.name for f in fields]), "nope": 1}),
    ]
    if fields[0].default is dataclasses.MISSING:
        wrong.append(((), {}))
    for args, kwargs in wrong:
        with pytest.raises(TypeError):
            cls(*args, **kwargs)
        with pytest.raises(TypeError):
            make(*args, **kwargs)


def test_a_class_the_c_constructor_cannot_hold_gets_the_python_one() -> None:
    wide = dataclasses.make_dataclass(
        "Wide", [(f"f{i}", int) for i in range(20)], frozen=True, slots=True
    )
    make = fast_constructor(wide)
    assert make is not wide
    assert make(*range(20)) == wide(*range(20))


def test_the_c_constructor_keeps_no_reference_it_should_not() -> None:
    """It stores each value in a slot: one reference per object built, none once it is gone."""
    make = fast_constructor(Fill)
    value = 12.5
    before = sys.getrefcount(value)
    built = [make(value, tilt_deg=value) for _ in range(1000)]
    assert sys.getrefcount(value) == before + 2000
    del built
    assert sys.getrefcount(value) == before


def test_fast_constructor_falls_back_for_classes_with_post_init() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        x: int

        def __post_init__(self) -> None:
            if self.x < 0:
                raise ValueError

    assert fast_constructor(Checked) is Checked


def _two(n: int) -> str:
    return f"{n:02d}"


def _field(lo: int, hi: int) -> st.SearchStrategy[str]:
    """Mostly in range, sometimes any two digits (what the fast path must hand over)."""
    return st.one_of(st.integers(lo, hi), st.integers(lo, hi), st.integers(0, 99)).map(_two)


COMMON_RFC3339 = st.builds(
    lambda y, mo, d, h, mi, s, frac, zone: f"{y:04d}-{mo}-{d}T{h}:{mi}:{s}{frac}{zone}",
    st.one_of(st.integers(1900, 2100), st.integers(0, 9999)),
    _field(1, 12), _field(1, 31), _field(0, 23), _field(0, 59), _field(0, 59),
    st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=9).map("." .__add__)),
    st.one_of(
        st.just("Z"),
        st.builds(
            lambda sign, h, m: f"{sign}{h:02d}:{m:02d}",
            st.sampled_from("+-"), st.integers(0, 30), st.integers(0, 59),
        ),
    ),
)  # fmt: skip


@settings(max_examples=3000, deadline=None)
@given(COMMON_RFC3339)
def test_the_common_rfc3339_shape_parses_exactly_as_the_full_parser(text: str) -> None:
    """The fast path of ``ts`` parsing (fixed positions, integer calendar arithmetic) gives the
    exact parser's milliseconds, or hands over what that parser refuses (day 31 of April, a
    leap second, hour 24, offset +24:00, year 0), and agrees with ``datetime`` when valid."""
    from devices.timestamps import _COMMON_SHAPE, _parse_common, _parse_exact

    assert _COMMON_SHAPE.fullmatch(text), text
    try:
        exact: int | None = _parse_exact(text)
    except Rejected:
        exact = None
    assert _parse_common(text) == exact, text
    if exact is not None and len(text) <= 32:  # datetime reads at most 6 fraction digits
        iso = datetime.fromisoformat(text)
        assert exact == (iso - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
