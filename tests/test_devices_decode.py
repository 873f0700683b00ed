"""devices.decode: every rule of the contract, one behaviour per test."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

import devices
from devices import (
    Deposit,
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
)

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
NOW_MS = 1_777_636_800_000
FILL = "taza/v1/almaty/ecobox/eb-0001/fill"
EB_STATUS = "taza/v1/almaty/ecobox/eb-0001/status"
EB_STATE = "taza/v1/almaty/ecobox/eb-0001/state"
RVM_STATUS = "taza/v1/astana/rvm/rvm-07/status"
DEPOSIT = "taza/v1/astana/rvm/rvm-07/deposit"

_MISSING = object()


def payload(base: Mapping[str, object] | None = None, **fields: object) -> bytes:
    """A JSON payload with ts/seq defaults; a field set to _MISSING is left out."""
    doc: dict[str, object] = {"ts": NOW_MS - 1000, "seq": 41}
    doc.update(base or {})
    doc.update(fields)
    return orjson.dumps({k: v for k, v in doc.items() if v is not _MISSING})


def fill(**fields: object) -> bytes:
    return payload({"fill_pct": 62.5}, **fields)


def deposit(**fields: object) -> bytes:
    base = {"txn_id": "t-1", "items": [{"material": "pet", "count": 3}]}
    return payload(base, **fields)


def rejected(topic: str, data: bytes, limits: Limits = devices.DEFAULT_LIMITS) -> Rejected:
    with pytest.raises(Rejected) as info:
        devices.decode(topic, data, NOW, limits)
    return info.value


def test_now_constant_is_consistent() -> None:
    assert int(NOW.timestamp() * 1000) == NOW_MS


# -- accepted messages ------------------------------------------------------------------------


def test_fill_message_decodes_to_its_fields() -> None:
    m = devices.decode(
        FILL,
        fill(distance_mm=412, temperature_c=-3.5, tilt_deg=2.0, device_id="eb-0001"),
        NOW,
    )
    assert m == Message(
        devices.parse_topic(FILL),
        NOW_MS - 1000,
        41,
        Fill(fill_pct=62.5, distance_mm=412.0, temperature_c=-3.5, tilt_deg=2.0),
    )
    assert type(m.body.distance_mm) is float  # type: ignore[union-attr]


def test_integer_json_numbers_are_stored_as_floats_in_float_fields() -> None:
    m = devices.decode(FILL, fill(fill_pct=50), NOW)
    assert m.body == Fill(fill_pct=50.0)
    assert type(m.body.fill_pct) is float


def test_rvm_status_keeps_sorted_faults_and_bins() -> None:
    data = payload(
        battery_v=12.6,
        battery_pct=97,
        rssi_dbm=-71,
        temperature_c=24.0,
        uptime_s=86_400,
        firmware="rvm-2.4.1",
        faults=["printer_error", "jam"],
        bins={"pet": 80, "alu": 35.5, "glass": 0},
        mode="jam",
    )
    m = devices.decode(RVM_STATUS, data, NOW)
    assert m.body == Status(
        battery_v=12.6,
        battery_pct=97.0,
        rssi_dbm=-71.0,
        temperature_c=24.0,
        uptime_s=86_400,
        firmware="rvm-2.4.1",
        faults=("jam", "printer_error"),
        bins=(("alu", 35.5), ("glass", 0.0), ("pet", 80.0)),
        mode="jam",
    )


def test_status_with_only_ts_and_seq_is_valid() -> None:
    assert devices.decode(EB_STATUS, payload(), NOW).body == Status()


def test_deposit_decodes_items_and_defaults() -> None:
    data = deposit(
        items=[
            {"material": "pet", "count": 12, "volume_ml": 500},
            {"material": "alu", "count": 4},
        ],
        rejected=1,
        refund_minor=800,
    )
    m = devices.decode(DEPOSIT, data, NOW)
    assert m.body == Deposit(
        txn_id="t-1",
        items=(Item("pet", 12, 500), Item("alu", 4)),
        rejected=1,
        refund_minor=800,
        currency="KZT",
    )


def test_null_optional_field_is_absent() -> None:
    m = devices.decode(FILL, fill(distance_mm=None, temperature_c=None), NOW)
    assert m.body == Fill(fill_pct=62.5)


def test_received_at_in_any_time_zone_anchors_the_same_instant() -> None:
    almaty = NOW.astimezone(timezone(timedelta(hours=5)))
    assert devices.decode(EB_STATE, b"online", almaty).ts_ms == NOW_MS


def test_naive_received_at_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        devices.decode(FILL, fill(), datetime(2026, 5, 1, 12, 0))


@pytest.mark.parametrize("wrap", [bytearray, memoryview])
def test_payload_as_a_buffer_decodes_the_same(wrap: type) -> None:
    data = fill(diag={"a": [1]}, device_id="eb-0001")
    assert devices.decode(FILL, wrap(data), NOW) == devices.decode(FILL, data, NOW)
    deep = fill(diag={"a": {"b": {"c": {}}}})
    assert rejected(FILL, wrap(deep)).reason is Reason.TOO_DEEP
    assert devices.decode(EB_STATE, wrap(b"online"), NOW).body == Presence(online=True)


def test_duplicate_json_keys_last_one_wins() -> None:
    data = b'{"ts":%d,"seq":1,"fill_pct":5,"fill_pct":7}' % (NOW_MS,)
    assert devices.decode(FILL, data, NOW).body == Fill(fill_pct=7.0)


# -- topics -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "topic",
    [
        "taza/v2/almaty/ecobox/eb-1/fill",
        "taza/v1/almaty/ecobox/eb-1",
        "taza/v1/almaty/ecobox/eb-1/fill/extra",
        "/taza/v1/almaty/ecobox/eb-1/fill",
        "taza/v1//ecobox/eb-1/fill",
        "taza/v1/Almaty/ecobox/eb-1/fill",
        "taza/v1/1almaty/ecobox/eb-1/fill",
        "taza/v1/almaty_2/ecobox/eb-1/fill",
        "taza/v1/" + "a" * 33 + "/ecobox/eb-1/fill",
        "taza/v1/almaty/bin/eb-1/fill",
        "taza/v1/almaty/ECOBOX/eb-1/fill",
        "taza/v1/almaty/ecobox/-eb/fill",
        "taza/v1/almaty/ecobox/eb.1/fill",
        "taza/v1/almaty/ecobox/eb 1/fill",
        "taza/v1/almaty/ecobox/" + "e" * 65 + "/fill",
        "taza/v1/almaty/ecobox//fill",
        "taza/v1/almaty/ecobox/eb-1\n/fill",
        "",
    ],
)
def test_topics_outside_the_scheme_are_bad_topic(topic: str) -> None:
    assert rejected(topic, fill()).reason is Reason.BAD_TOPIC


def test_longest_region_and_device_id_are_accepted() -> None:
    topic = f"taza/v1/{'r' * 32}/ecobox/{'D' * 64}/fill"
    m = devices.decode(topic, fill(), NOW)
    assert m.topic.region == "r" * 32
    assert m.topic.device_id == "D" * 64
    assert m.topic.kind is Kind.ECOBOX


@pytest.mark.parametrize(
    "topic",
    [
        "taza/v1/almaty/ecobox/eb-1/deposit",
        "taza/v1/almaty/rvm/rvm-1/fill",
        "taza/v1/almaty/ecobox/eb-1/alerts",
        "taza/v1/almaty/ecobox/eb-1/Fill",
    ],
)
def test_channel_not_of_the_kind_is_bad_channel(topic: str) -> None:
    e = rejected(topic, fill())
    assert e.reason is Reason.BAD_CHANNEL
    assert e.field == "channel"


@pytest.mark.parametrize(
    "data", [b"", b"\xff\xfe", b"x" * 100_000, b'{"anything": true}', b"online"]
)
def test_alerts_namespace_is_ignored_whatever_the_payload(data: bytes) -> None:
    with pytest.raises(Ignored):
        devices.decode("taza/v1/alerts/almaty/eb-0001/fill_high", data, NOW)


def test_ignored_is_not_a_rejection() -> None:
    assert not issubclass(Ignored, Rejected)
    assert issubclass(Ignored, devices.TazaDeviceError)


# -- size, encoding, JSON shape ---------------------------------------------------------------


def test_payload_at_the_size_limit_is_accepted_one_byte_more_is_too_large() -> None:
    base = fill()
    at_limit = base[:-1] + b" " * (4096 - len(base)) + b"}"
    assert len(at_limit) == 4096
    devices.decode(FILL, at_limit, NOW)
    e = rejected(FILL, at_limit[:-1] + b" }")
    assert e.reason is Reason.TOO_LARGE
    assert "4097" in e.detail


def test_size_is_checked_before_anything_is_parsed() -> None:
    assert rejected(FILL, b"\xff" * 5000).reason is Reason.TOO_LARGE
    assert rejected(EB_STATE, b"online" * 1000).reason is Reason.TOO_LARGE


def test_size_limit_is_configurable() -> None:
    small = Limits(max_payload_bytes=32)
    assert rejected(FILL, fill(), small).reason is Reason.TOO_LARGE


@pytest.mark.parametrize(
    "data",
    [
        b"\xff",
        b'{"ts": 1, "seq": 1, "fill_pct": 5, "note": "caf\xe9"}',
        b'{"fill_pct": "\xed\xa0\x80"}',  # an encoded UTF-16 surrogate is not UTF-8
        b"\xc0\xaf",  # overlong encoding
    ],
)
def test_invalid_utf8_is_not_utf8(data: bytes) -> None:
    assert rejected(FILL, data).reason is Reason.NOT_UTF8


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"{'fill_pct': 5}",
        b'{"ts": 1, "seq": 1, "fill_pct": NaN}',
        b'{"ts": 1, "seq": 1, "fill_pct": Infinity}',
        b'{"ts": 1, "seq": 1, "fill_pct": -Infinity}',
        b'{"fill_pct": 5} trailing',
        b'\xef\xbb\xbf{"fill_pct": 5}',  # a byte-order mark
        b'{"fill_pct": "\\ud800"}',  # a lone surrogate escape
        b'{"fill_pct": 05}',
    ],
)
def test_malformed_json_is_not_json(data: bytes) -> None:
    assert rejected(FILL, data).reason is Reason.NOT_JSON


@pytest.mark.parametrize("literal", [b"1e400", b"-1e400", b"1" + b"0" * 400])
def test_numbers_overflowing_a_double_are_not_finite(literal: bytes) -> None:
    data = b'{"ts": %d, "seq": 1, "fill_pct": %s}' % (NOW_MS, literal)
    assert rejected(FILL, data).reason is Reason.NOT_FINITE


@pytest.mark.parametrize("data", [b"[]", b'"online"', b"42", b"null", b"true", b"[{}]"])
def test_json_that_is_not_an_object_is_not_object(data: bytes) -> None:
    assert rejected(FILL, data).reason is Reason.NOT_OBJECT


def test_depth_limit_counts_the_whole_document() -> None:
    four = fill(diag={"a": {"b": {"c": 1}}})  # object, diag, a, b: depth 4
    assert devices.decode(FILL, four, NOW).extra_fields == ("diag",)
    assert rejected(FILL, fill(diag={"a": {"b": {"c": {}}}})).reason is Reason.TOO_DEEP
    assert rejected(FILL, fill(diag=[[[[1]]]])).reason is Reason.TOO_DEEP


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    m = devices.decode(FILL, fill(note="[[[[{{{{"), NOW)
    assert m.extra_fields == ("note",)


def test_nesting_beyond_the_parser_limit_is_too_deep_not_a_crash() -> None:
    data = b'{"x":' + b"[" * 2000 + b"]" * 2000 + b"}"
    assert rejected(FILL, data).reason is Reason.TOO_DEEP


def test_depth_limit_is_configurable_and_applies_to_known_fields() -> None:
    flat = Limits(max_depth=2)
    devices.decode(RVM_STATUS, payload(faults=["jam"], bins={"pet": 1}), NOW, flat)
    assert rejected(DEPOSIT, deposit(), flat).reason is Reason.TOO_DEEP
    devices.decode(FILL, fill(), NOW, Limits(max_depth=1))
    assert rejected(EB_STATUS, payload(faults=[]), Limits(max_depth=1)).reason is Reason.TOO_DEEP


# -- identity -------------------------------------------------------------------------------


def test_payload_device_id_must_match_the_topic() -> None:
    e = rejected(FILL, fill(device_id="eb-0002"))
    assert e.reason is Reason.DEVICE_MISMATCH
    assert e.field == "device_id"


def test_overlong_mismatching_device_id_is_still_a_mismatch() -> None:
    assert rejected(FILL, fill(device_id="x" * 100)).reason is Reason.DEVICE_MISMATCH


def test_payload_device_id_of_another_type_is_wrong_type() -> None:
    assert rejected(FILL, fill(device_id=1)).reason is Reason.WRONG_TYPE


# -- required fields and types ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "data", "name"),
    [
        (FILL, fill(ts=_MISSING), "ts"),
        (FILL, fill(seq=_MISSING), "seq"),
        (FILL, payload(), "fill_pct"),
        (FILL, fill(fill_pct=None), "fill_pct"),
        (EB_STATUS, payload(ts=None), "ts"),
        (DEPOSIT, deposit(txn_id=_MISSING), "txn_id"),
        (DEPOSIT, deposit(items=_MISSING), "items"),
        (DEPOSIT, deposit(items=[{"count": 1}]), "items[0].material"),
        (DEPOSIT, deposit(items=[{"material": "pet", "count": 1}, {"material": "alu"}]),
         "items[1].count"),
    ],
)  # fmt: skip
def test_missing_required_field(topic: str, data: bytes, name: str) -> None:
    e = rejected(topic, data)
    assert e.reason is Reason.MISSING_FIELD
    assert e.field == name


@pytest.mark.parametrize(
    ("topic", "data", "name"),
    [
        (FILL, fill(fill_pct="12"), "fill_pct"),
        (FILL, fill(fill_pct=True), "fill_pct"),
        (FILL, fill(fill_pct=[12]), "fill_pct"),
        (FILL, fill(temperature_c="-3.5"), "temperature_c"),
        (FILL, fill(seq="41"), "seq"),
        (FILL, fill(seq=41.0), "seq"),
        (FILL, fill(seq=True), "seq"),
        (EB_STATUS, payload(uptime_s=12.5), "uptime_s"),
        (EB_STATUS, payload(uptime_s=12.0), "uptime_s"),
        (EB_STATUS, payload(firmware=2), "firmware"),
        (EB_STATUS, payload(faults="jam"), "faults"),
        (EB_STATUS, payload(faults=[1]), "faults"),
        (RVM_STATUS, payload(bins=[["pet", 5]]), "bins"),
        (RVM_STATUS, payload(bins={"pet": "5"}), "bins.pet"),
        (RVM_STATUS, payload(mode=1), "mode"),
        (DEPOSIT, deposit(txn_id=123), "txn_id"),
        (DEPOSIT, deposit(items={"material": "pet", "count": 1}), "items"),
        (DEPOSIT, deposit(items=["pet"]), "items[0]"),
        (DEPOSIT, deposit(items=[{"material": "pet", "count": "3"}]), "items[0].count"),
        (DEPOSIT, deposit(items=[{"material": "pet", "count": True}]), "items[0].count"),
        (DEPOSIT, deposit(refund_minor=1.5), "refund_minor"),
        (DEPOSIT, deposit(rejected=False), "rejected"),
        (DEPOSIT, deposit(currency=398), "currency"),
    ],
)
def test_no_lax_coercion_wrong_type(topic: str, data: bytes, name: str) -> None:
    e = rejected(topic, data)
    assert e.reason is Reason.WRONG_TYPE, e
    assert e.field == name


# -- ranges -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "lo", "hi"),
    [
        ("fill_pct", 0, 100),
        ("distance_mm", 0, 10_000),
        ("temperature_c", -50, 150),
        ("tilt_deg", 0, 180),
    ],
)
def test_fill_ranges_are_inclusive(name: str, lo: float, hi: float) -> None:
    for ok in (lo, hi):
        devices.decode(FILL, fill(**{name: ok}), NOW)
    for bad in (lo - 0.001, hi + 0.001):
        e = rejected(FILL, fill(**{name: bad}))
        assert (e.reason, e.field) == (Reason.OUT_OF_RANGE, name)


@pytest.mark.parametrize(
    ("name", "lo", "hi"),
    [
        ("battery_v", 0, 15),
        ("battery_pct", 0, 100),
        ("rssi_dbm", -150, 0),
        ("temperature_c", -50, 150),
        ("uptime_s", 0, 2**32 - 1),
    ],
)
def test_status_ranges_are_inclusive(name: str, lo: int, hi: int) -> None:
    for ok in (lo, hi):
        devices.decode(EB_STATUS, payload(None, **{name: ok}), NOW)
    for bad in (lo - 1, hi + 1):
        assert rejected(EB_STATUS, payload(None, **{name: bad})).reason is Reason.OUT_OF_RANGE


def test_seq_spans_uint32() -> None:
    for ok in (0, 2**32 - 1):
        assert devices.decode(FILL, fill(seq=ok), NOW).seq == ok
    for bad in (-1, 2**32):
        e = rejected(FILL, fill(seq=bad))
        assert (e.reason, e.field) == (Reason.OUT_OF_RANGE, "seq")


def test_integers_beyond_64_bits_are_out_of_range_not_silently_floats() -> None:
    # orjson parses integer literals above 2**64 - 1 as floats; they must still be refused.
    big = b'{"ts": %d, "seq": 1, "txn_id": "t", "items": [{"material": "pet", "count": 1}],' % (
        NOW_MS
    )
    for literal in (b"9223372036854775808", b"18446744073709551616", b"1" + b"0" * 30):
        e = rejected(DEPOSIT, big + b' "refund_minor": ' + literal + b"}")
        assert (e.reason, e.field) == (Reason.OUT_OF_RANGE, "refund_minor")
    huge_seq = b'{"ts": %d, "seq": 100000000000000000000, "fill_pct": 1}' % NOW_MS
    assert rejected(FILL, huge_seq).reason is Reason.OUT_OF_RANGE


def test_refund_spans_int64() -> None:
    m = devices.decode(DEPOSIT, deposit(refund_minor=2**63 - 1), NOW)
    assert m.body.refund_minor == 2**63 - 1  # type: ignore[union-attr]
    assert rejected(DEPOSIT, deposit(refund_minor=-1)).reason is Reason.OUT_OF_RANGE


def test_huge_float_literal_in_a_float_field_is_out_of_range() -> None:
    assert rejected(FILL, fill(fill_pct=1e300)).reason is Reason.OUT_OF_RANGE


@pytest.mark.parametrize(
    ("item", "name"),
    [
        ({"material": "pet", "count": 0}, "items[0].count"),
        ({"material": "pet", "count": 1001}, "items[0].count"),
        ({"material": "pet", "count": 1, "volume_ml": 0}, "items[0].volume_ml"),
        ({"material": "pet", "count": 1, "volume_ml": 10_001}, "items[0].volume_ml"),
    ],
)
def test_item_ranges(item: dict[str, object], name: str) -> None:
    e = rejected(DEPOSIT, deposit(items=[item]))
    assert (e.reason, e.field) == (Reason.OUT_OF_RANGE, name)


def test_deposit_rejected_count_range() -> None:
    devices.decode(DEPOSIT, deposit(rejected=100_000), NOW)
    assert rejected(DEPOSIT, deposit(rejected=100_001)).reason is Reason.OUT_OF_RANGE
    assert rejected(DEPOSIT, deposit(rejected=-1)).reason is Reason.OUT_OF_RANGE


def test_bin_percent_range() -> None:
    e = rejected(RVM_STATUS, payload(bins={"pet": 100.5}))
    assert (e.reason, e.field) == (Reason.OUT_OF_RANGE, "bins.pet")


# -- enumerations, strings ------------------------------------------------------------------


def test_faults_accept_every_documented_code_once() -> None:
    codes = sorted(devices.FAULT_CODES)
    m = devices.decode(RVM_STATUS, payload(faults=list(reversed(codes))), NOW)
    assert m.body.faults == tuple(codes)  # type: ignore[union-attr]
    assert devices.decode(EB_STATUS, payload(faults=[]), NOW).body == Status()


@pytest.mark.parametrize(
    "faults", [["on_fire"], ["jam", "jam"], ["JAM"], [" jam"], ["jam", "lid_open", "jam"]]
)
def test_unknown_or_repeated_fault_codes_are_bad_value(faults: list[str]) -> None:
    e = rejected(EB_STATUS, payload(faults=faults))
    assert (e.reason, e.field) == (Reason.BAD_VALUE, "faults")


@pytest.mark.parametrize(
    ("topic", "data", "name"),
    [
        (RVM_STATUS, payload(mode="broken"), "mode"),
        (RVM_STATUS, payload(mode="OK"), "mode"),
        (RVM_STATUS, payload(bins={"paper": 5}), "bins"),
        (DEPOSIT, deposit(items=[{"material": "plutonium", "count": 1}]), "items[0].material"),
        (DEPOSIT, deposit(items=[]), "items"),
        (DEPOSIT, deposit(currency="kzt"), "currency"),
        (DEPOSIT, deposit(currency="KZTT"), "currency"),
        (DEPOSIT, deposit(currency="ҚЗТ"), "currency"),
        (DEPOSIT, deposit(txn_id=""), "txn_id"),
        (DEPOSIT, deposit(txn_id="t" * 65), "txn_id"),
        (EB_STATUS, payload(firmware="v" * 33), "firmware"),
        (EB_STATUS, payload(firmware=""), "firmware"),
    ],
)
def test_values_outside_their_set_or_length_are_bad_value(
    topic: str, data: bytes, name: str
) -> None:
    e = rejected(topic, data)
    assert (e.reason, e.field) == (Reason.BAD_VALUE, name)


def test_items_limit_is_one_hundred() -> None:
    items = [{"material": "pet", "count": 1}] * 100
    m = devices.decode(DEPOSIT, deposit(items=items), NOW)
    assert len(m.body.items) == 100  # type: ignore[union-attr]
    e = rejected(DEPOSIT, deposit(items=[*items, {"material": "alu", "count": 1}]))
    assert (e.reason, e.field) == (Reason.BAD_VALUE, "items")


def test_string_lengths_count_characters_not_bytes() -> None:
    m = devices.decode(DEPOSIT, deposit(txn_id="ж" * 64), NOW)
    assert m.body.txn_id == "ж" * 64  # type: ignore[union-attr]
    devices.decode(EB_STATUS, payload(firmware="é" * 32), NOW)


@pytest.mark.parametrize("bad", ["a\x00b", "a\nb", "tab\t", "\x1b[31m", "del\x7f", "c1\x85"])
def test_control_characters_in_strings_are_bad_value(bad: str) -> None:
    e = rejected(DEPOSIT, deposit(txn_id=bad))
    assert (e.reason, e.field) == (Reason.BAD_VALUE, "txn_id")
    assert rejected(EB_STATUS, payload(firmware=bad)).reason is Reason.BAD_VALUE


def test_line_protocol_characters_are_fine_in_strings() -> None:
    txn = "a b,c=d\"e\\f'g 😀 Ақмола"
    m = devices.decode(DEPOSIT, deposit(txn_id=txn), NOW)
    assert m.body.txn_id == txn  # type: ignore[union-attr]


def test_default_currency_is_kzt_and_others_are_kept() -> None:
    assert devices.decode(DEPOSIT, deposit(), NOW).body.currency == "KZT"  # type: ignore[union-attr]
    m = devices.decode(DEPOSIT, deposit(currency="EUR"), NOW)
    assert m.body.currency == "EUR"  # type: ignore[union-attr]


# -- unknown fields, strict mode ------------------------------------------------------------


def test_unknown_fields_are_kept_out_and_named() -> None:
    m = devices.decode(FILL, fill(zeta=1, alpha={"x": 1}, battery_v=3.1), NOW)
    assert m.body == Fill(fill_pct=62.5)
    assert m.extra_fields == ("alpha", "battery_v", "zeta")


def test_rvm_only_fields_on_an_ecobox_are_unknown_fields() -> None:
    m = devices.decode(EB_STATUS, payload(bins={"pet": 5}, mode="ok"), NOW)
    assert m.body == Status()
    assert m.extra_fields == ("bins", "mode")


def test_unknown_item_fields_are_named_once() -> None:
    items = [{"material": "pet", "count": 1, "sku": "a"}, {"material": "alu", "count": 1, "sku": 2}]
    m = devices.decode(DEPOSIT, deposit(items=items), NOW)
    assert m.extra_fields == ("items[].sku",)


def test_messages_without_unknown_fields_have_none() -> None:
    assert devices.decode(FILL, fill(device_id="eb-0001"), NOW).extra_fields == ()


def test_strict_mode_rejects_unknown_fields() -> None:
    strict = Limits(strict=True)
    devices.decode(FILL, fill(device_id="eb-0001"), NOW, strict)
    e = rejected(FILL, fill(zeta=1, alpha=2), strict)
    assert (e.reason, e.field) == (Reason.UNKNOWN_FIELD, "alpha")
    items = [{"material": "pet", "count": 1, "sku": "a"}]
    assert rejected(DEPOSIT, deposit(items=items), strict).reason is Reason.UNKNOWN_FIELD


def test_unknown_field_names_with_control_characters_are_bad_value() -> None:
    assert rejected(FILL, fill(**{"evil\nname": 1})).reason is Reason.BAD_VALUE


# -- ts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "ms"),
    [
        ("2026-05-01T12:00:00Z", NOW_MS),
        ("2026-05-01t12:00:00z", NOW_MS),
        ("2026-05-01T17:00:00+05:00", NOW_MS),
        ("2026-05-01T11:30:00-00:30", NOW_MS),
        ("2026-05-01T11:59:59.5Z", NOW_MS - 500),
        ("2026-05-01T11:59:59.123456789Z", NOW_MS - 877),
        ("2026-05-01T11:59:59.1239+00:00", NOW_MS - 877),
        (NOW_MS - 250, NOW_MS - 250),
    ],
)
def test_ts_forms(ts: object, ms: int) -> None:
    assert devices.decode(FILL, fill(ts=ts), NOW).ts_ms == ms


@pytest.mark.parametrize(
    "ts",
    [
        "2026-05-01T12:00:00",  # no offset: ambiguous
        "2026-05-01 12:00:00Z",
        "2026-05-01",
        "2026-05-01T12:00Z",
        "2026-05-01T12:00:00+0500",
        "2026-05-01T12:00:00.Z",
        "2026-02-30T12:00:00Z",
        "2026-05-01T24:00:00Z",
        "2026-05-01T23:59:60Z",  # leap second
        "2026-05-01T12:00:00+24:00",
        "2026-05-01T12:00:00.1234567890Z",
        "２０２６-05-01T12:00:00Z",  # full-width digits
        "2026-W18-5T12:00:00Z",
        "1777636800000",
        1777636800000.0,
        True,
        [NOW_MS],
        {"ms": NOW_MS},
    ],
)
def test_bad_ts(ts: object) -> None:
    e = rejected(FILL, fill(ts=ts))
    assert (e.reason, e.field) == (Reason.BAD_TS, "ts")


def test_ts_window_bounds_are_inclusive() -> None:
    five_min = 5 * 60_000
    seven_days = 7 * 86_400_000
    devices.decode(FILL, fill(ts=NOW_MS + five_min), NOW)
    devices.decode(FILL, fill(ts=NOW_MS - seven_days), NOW)
    assert rejected(FILL, fill(ts=NOW_MS + five_min + 1)).reason is Reason.TS_IN_FUTURE
    assert rejected(FILL, fill(ts=NOW_MS - seven_days - 1)).reason is Reason.TS_TOO_OLD


def test_ts_window_applies_to_rfc3339_too() -> None:
    assert rejected(FILL, fill(ts="2026-05-01T17:06:00+05:00")).reason is Reason.TS_IN_FUTURE
    assert rejected(FILL, fill(ts="2020-01-01T00:00:00Z")).reason is Reason.TS_TOO_OLD


def test_max_age_is_configurable() -> None:
    limits = Limits(max_age=timedelta(hours=1), max_future=timedelta(0))
    devices.decode(FILL, fill(ts=NOW_MS - 3_600_000), NOW, limits)
    assert rejected(FILL, fill(ts=NOW_MS - 3_600_001), limits).reason is Reason.TS_TOO_OLD
    assert rejected(FILL, fill(ts=NOW_MS + 1), limits).reason is Reason.TS_IN_FUTURE


def test_epoch_seconds_by_mistake_get_a_hint() -> None:
    e = rejected(FILL, fill(ts=NOW_MS // 1000))
    assert e.reason is Reason.TS_TOO_OLD
    assert "seconds" in e.detail


@pytest.mark.parametrize(
    ("ts", "reason", "unit"),
    [
        (NOW_MS * 1000, Reason.BAD_TS, "epoch microseconds"),
        (NOW_MS * 1000 + 999, Reason.BAD_TS, "epoch microseconds"),
        (NOW_MS * 1_000_000, Reason.BAD_TS, "epoch nanoseconds"),
        (2**64 - 1, Reason.BAD_TS, "epoch nanoseconds"),
    ],
)
def test_epoch_micro_and_nanoseconds_by_mistake_name_the_unit(
    ts: int, reason: Reason, unit: str
) -> None:
    e = rejected(FILL, fill(ts=ts))
    assert (e.reason, e.field) == (reason, "ts")
    assert f"({unit} instead of milliseconds?)" in e.detail


@pytest.mark.parametrize("ts", [99_999_999_999_999, -(10**15), "9999-12-31T23:59:59Z"])
def test_other_timestamps_beyond_the_database_range_guess_no_unit(ts: object) -> None:
    e = rejected(FILL, fill(ts=ts))
    assert e.reason is Reason.BAD_TS
    assert "instead of" not in e.detail


def test_ts_beyond_the_database_range_is_bad_ts_even_with_an_absurd_clock() -> None:
    far = datetime(9999, 1, 1, tzinfo=UTC)
    assert devices.decode(FILL, fill(ts=NOW_MS), NOW).ts_ms == NOW_MS
    with pytest.raises(Rejected) as info:
        devices.decode(FILL, fill(ts="9998-12-31T23:00:00Z"), far)
    assert info.value.reason is Reason.BAD_TS


# -- state ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "online"), [(b"online", True), (b"offline", False)])
def test_state_uses_the_receive_time_and_no_seq(data: bytes, online: bool) -> None:
    m = devices.decode("taza/v1/astana/rvm/rvm-07/state", data, NOW)
    assert m.body == Presence(online=online)
    assert m.ts_ms == NOW_MS
    assert m.seq is None


@pytest.mark.parametrize(
    "data", [b"Online", b" online", b"online\n", b'"online"', b"1", b"on", b'{"online":true}']
)
def test_state_must_be_exactly_online_or_offline(data: bytes) -> None:
    assert rejected(EB_STATE, data).reason is Reason.BAD_STATE


def test_state_not_utf8() -> None:
    assert rejected(EB_STATE, b"onl\xffine").reason is Reason.NOT_UTF8


def test_empty_state_clears_a_retained_message_and_is_ignored() -> None:
    with pytest.raises(Ignored, match="retained"):
        devices.decode(EB_STATE, b"", NOW)


def test_empty_json_payload_is_not_ignored() -> None:
    assert rejected(FILL, b"").reason is Reason.NOT_JSON


# -- precedence, details ----------------------------------------------------------------------


def test_first_broken_rule_wins() -> None:
    assert rejected("taza/v1/almaty/ecobox/eb-1/deposit", b"\xff" * 9000).reason is (
        Reason.BAD_CHANNEL
    )
    assert rejected(FILL, fill(device_id="x", ts="bad", fill_pct="1")).reason is (
        Reason.DEVICE_MISMATCH
    )
    assert rejected(FILL, fill(ts="bad", fill_pct=_MISSING)).reason is Reason.MISSING_FIELD
    assert rejected(FILL, fill(ts="bad", seq="1", fill_pct="1")).reason is Reason.BAD_TS
    assert rejected(FILL, fill(seq="1", fill_pct="1")).field == "seq"


def test_details_are_safe_to_log() -> None:
    e = rejected(EB_STATUS, payload(firmware="x\n\x1b[2J" + "y" * 500))
    assert "\n" not in e.detail
    assert "\x1b" not in e.detail
    assert len(e.detail) < 200
    assert "\n" not in str(rejected(EB_STATE, b"bad\nstate"))


def test_rejected_carries_reason_detail_and_field() -> None:
    e = rejected(FILL, fill(fill_pct=101))
    assert e.reason == "out_of_range"
    assert e.field == "fill_pct"
    assert "101" in e.detail
    assert str(e).startswith("out_of_range: ")
