"""devices.encode: the public line-protocol schema, escaping and timestamps.

``parse_line`` below reads line protocol the way influxd 1.x does (measured: a backslash only
escapes the separator right after it, other backslashes are literal); the integration test in
test_devices_influx.py checks the same round trip against the real server.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import devices
from devices import Deposit, DeviceInfo, Fill, Item, Kind, Message, Presence, Status, Topic
from devices.lineprotocol import float_field, int_field, string_field, tag_value
from devices.timestamps import ms_to_ns

NOW_MS = 1_777_636_800_000
T_FILL = Topic("almaty", Kind.ECOBOX, "eb-0001", devices.Channel.FILL)
T_EB_STATUS = Topic("almaty", Kind.ECOBOX, "eb-0001", devices.Channel.STATUS)
T_RVM_STATUS = Topic("astana", Kind.RVM, "rvm-07", devices.Channel.STATUS)
T_DEPOSIT = Topic("astana", Kind.RVM, "rvm-07", devices.Channel.DEPOSIT)
T_STATE = Topic("astana", Kind.RVM, "rvm-07", devices.Channel.STATE)
ECOBOX = DeviceInfo("eb-0001", Kind.ECOBOX, "almaty", 43.25, 76.95, 1100.0, "plastic", "park", 900)


# -- a reader with influxd 1.x semantics ----------------------------------------------------

Value = float | int | bool | str


def _unescaped(s: str, i: int, chars: str) -> int:
    """Index of the first char in ``chars`` at or after i not preceded by a backslash, or -1."""
    while i < len(s):
        if s[i] in chars and (i == 0 or s[i - 1] != "\\"):
            return i
        i += 1
    return -1


def _unescape_key(s: str) -> str:
    return s.replace("\\,", ",").replace("\\=", "=").replace("\\ ", " ")


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, Value], int]:
    """(measurement, tags, fields, timestamp) of one line, or AssertionError if malformed."""
    assert "\n" not in line
    end = _unescaped(line, 0, " ")
    assert end > 0, line
    series = []
    i = 0
    while True:
        j = _unescaped(line[:end], i, ",")
        series.append(line[i : j if j >= 0 else end])
        if j < 0:
            break
        i = j + 1
    measurement, tags = _unescape_key(series[0]), {}
    for pair in series[1:]:
        eq = _unescaped(pair, 0, "=")
        assert 0 < eq < len(pair) - 1, pair
        key = _unescape_key(pair[:eq])
        assert key not in tags
        tags[key] = _unescape_key(pair[eq + 1 :])
    fields: dict[str, Value] = {}
    i = end + 1
    while True:
        eq = _unescaped(line, i, "=")
        key = _unescape_key(line[i:eq])
        i = eq + 1
        value: Value
        if line[i] == '"':
            buf, k = [], i + 1
            while line[k] != '"':
                if line[k] == "\\" and line[k + 1] in '\\"':
                    buf.append(line[k + 1])
                    k += 2
                else:
                    buf.append(line[k])
                    k += 1
            value, i = "".join(buf), k + 1
        else:
            k = min(p for p in (line.find(",", i), line.find(" ", i), len(line)) if p >= 0)
            raw, i = line[i:k], k
            if raw in ("true", "false"):
                value = raw == "true"
            elif raw.endswith("i"):
                value = int(raw[:-1])
            else:
                value = float(raw)
        assert key not in fields
        fields[key] = value
        if line[i] == ",":
            i += 1
            continue
        assert line[i] == " "
        return measurement, tags, fields, int(line[i + 1 :])


def test_parse_line_reads_the_measured_influx_1x_examples() -> None:
    # Stored values measured with influxd 1.6.7 (docs/protocol.md, "Escaping").
    assert parse_line(r"m,site=a\\b v=1 1")[1] == {"site": "a\\\\b"}
    assert parse_line(r"m,site=a\\\,b v=1 1")[1] == {"site": "a\\\\,b"}
    assert parse_line(r"m,site=a\\ b v=1 1")[1] == {"site": "a\\ b"}
    assert parse_line('m s="ab\\\\",t="a\\"b" 1')[2] == {"s": "ab\\", "t": 'a"b'}


# -- the schema, line by line ---------------------------------------------------------------


def msg(topic: Topic, body: devices.Body, seq: int | None = 41, ts: int = NOW_MS) -> Message:
    return Message(topic, ts, seq, body)


def test_fill_line() -> None:
    m = msg(T_FILL, Fill(fill_pct=62.5, distance_mm=412.0, temperature_c=-3.5, tilt_deg=2.0))
    assert devices.encode(m) == [
        "fill,device_id=eb-0001,kind=ecobox,region=almaty "
        "fill_pct=62.5,distance_mm=412.0,temperature_c=-3.5,tilt_deg=2.0,seq=41i "
        "1777636800000004100"
    ]


def test_fill_with_registry_tags_and_absent_fields_omitted() -> None:
    m = msg(T_FILL, Fill(fill_pct=50.0))
    assert devices.encode(m, ECOBOX) == [
        "fill,device_id=eb-0001,fraction=plastic,kind=ecobox,region=almaty,site=park "
        "fill_pct=50.0,seq=41i 1777636800000004100"
    ]


@pytest.mark.parametrize(
    ("value", "text"),
    [(50.0, "50.0"), (0.0, "0.0"), (-0.0, "-0.0"), (1e-05, "1e-05"), (100, "100.0")],
)
def test_float_fields_never_look_like_integers(value: float, text: str) -> None:
    (line,) = devices.encode(msg(T_FILL, Fill(fill_pct=value)))
    assert f"fill_pct={text}," in line
    assert isinstance(parse_line(line)[2]["fill_pct"], float)


def test_ecobox_status_line() -> None:
    m = msg(
        T_EB_STATUS,
        Status(battery_v=3.61, battery_pct=88.0, rssi_dbm=-97.0, uptime_s=3600, firmware="1.2.0"),
    )
    assert devices.encode(m) == [
        "status,device_id=eb-0001,kind=ecobox,region=almaty "
        'battery_v=3.61,battery_pct=88.0,rssi_dbm=-97.0,uptime_s=3600i,firmware="1.2.0",'
        'faults="",fault_count=0i,seq=41i 1777636800000004100'
    ]


def test_rvm_status_writes_one_point_per_bin() -> None:
    m = msg(
        T_RVM_STATUS,
        Status(faults=("jam", "printer_error"), bins=(("alu", 35.5), ("pet", 80.0)), mode="jam"),
        seq=10_007,
    )
    assert devices.encode(m) == [
        "status,device_id=rvm-07,kind=rvm,region=astana "
        'faults="jam,printer_error",fault_count=2i,mode="jam",seq=10007i 1777636800000000700',
        "rvm_bin,device_id=rvm-07,kind=rvm,material=alu,region=astana fill_pct=35.5 "
        "1777636800000000700",
        "rvm_bin,device_id=rvm-07,kind=rvm,material=pet,region=astana fill_pct=80.0 "
        "1777636800000000700",
    ]


def test_deposit_writes_items_then_the_transaction() -> None:
    m = msg(
        T_DEPOSIT,
        Deposit(
            txn_id="t-1",
            items=(Item("pet", 12, 500), Item("alu", 4), Item("pet", 2, 1500)),
            rejected=1,
            refund_minor=900,
        ),
        seq=9_999,
    )
    base = NOW_MS * 1_000_000 + 9_999 * 100
    tags = "device_id=rvm-07,kind=rvm"
    assert devices.encode(m) == [
        f"deposit,{tags},material=pet,region=astana "
        f'count=12i,volume_ml=500i,txn_id="t-1",item=0i {base}',
        f'deposit,{tags},material=alu,region=astana count=4i,txn_id="t-1",item=1i {base + 1}',
        f"deposit,{tags},material=pet,region=astana "
        f'count=2i,volume_ml=1500i,txn_id="t-1",item=2i {base + 2}',
        f'deposit,{tags},region=astana txn_id="t-1",items=18i,rejected=1i,refund_minor=900i,'
        f'currency="KZT",seq=9999i {base}',
    ]


@pytest.mark.parametrize(("online", "text"), [(True, "true"), (False, "false")])
def test_state_line(online: bool, text: str) -> None:
    m = msg(T_STATE, Presence(online=online), seq=None)
    status = "online" if online else "offline"
    assert devices.encode(m) == [
        f'state,device_id=rvm-07,kind=rvm,region=astana online={text},status="{status}" '
        f"{NOW_MS * 1_000_000}"
    ]


def test_rvm_registry_entry_without_fraction_adds_only_site() -> None:
    rvm = DeviceInfo("rvm-07", Kind.RVM, "astana", 51.1, 71.4, None, None, "mall, 2nd floor", 60)
    (line,) = devices.encode(msg(T_STATE, Presence(online=True), seq=None), rvm)
    assert line.startswith(
        r"state,device_id=rvm-07,kind=rvm,region=astana,site=mall\,\ 2nd\ floor "
    )


# -- timestamps -----------------------------------------------------------------------------


def test_timestamp_rule() -> None:
    m = msg(T_FILL, Fill(fill_pct=1.0), seq=123_456, ts=NOW_MS)
    assert devices.timestamp_ns(m) == NOW_MS * 1_000_000 + 3_456 * 100
    assert devices.timestamp_ns(m, 7) == NOW_MS * 1_000_000 + 3_456 * 100 + 7


@given(
    st.integers(-(10**13), 10**13) | st.sampled_from([4 * 10**12, 4 * 10**12 + 1, -(4 * 10**12)]),
    st.integers(0, 2**32 - 1),
    st.integers(0, 99) | st.just(2**30),
)
def test_timestamp_ns_is_the_rule_or_refused_outside_the_database_range(
    ts: int, seq: int, item: int
) -> None:
    """Both forms of ``timestamp_ns`` (the inline one for ordinary times, the checked one
    beyond): the rule's value while it is a database time, ``ValueError`` after."""
    m = msg(T_FILL, Fill(fill_pct=1.0), seq=seq, ts=ts)
    ns = ts * 1_000_000 + (seq % 10_000) * 100 + item
    if -(2**63) + 2 <= ns <= 2**63 - 2:
        assert devices.timestamp_ns(m, item) == ns
    else:
        with pytest.raises(ValueError, match="time range"):
            devices.timestamp_ns(m, item)


def test_same_millisecond_different_seq_never_overwrite() -> None:
    a = devices.encode(msg(T_FILL, Fill(fill_pct=1.0), seq=4))
    b = devices.encode(msg(T_FILL, Fill(fill_pct=1.0), seq=5))
    assert parse_line(a[0])[3] != parse_line(b[0])[3]


def test_all_points_of_a_message_stay_inside_its_millisecond() -> None:
    items = tuple(Item("pet", 1) for _ in range(devices.MAX_ITEMS))
    m = msg(T_DEPOSIT, Deposit(txn_id="t", items=items), seq=2**32 - 1)
    times = [parse_line(line)[3] for line in devices.encode(m)]
    assert all(NOW_MS * 1_000_000 <= t < (NOW_MS + 1) * 1_000_000 for t in times)
    item_times = times[:-1]
    assert len(set(item_times)) == devices.MAX_ITEMS


def test_seq_wrap_keeps_timestamps_of_one_message_identical() -> None:
    m = msg(T_FILL, Fill(fill_pct=1.0), seq=2**32 - 1)
    assert devices.encode(m) == devices.encode(msg(T_FILL, Fill(fill_pct=1.0), seq=2**32 - 1))


# -- escaping and what cannot be written ----------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("park", "park"),
        ("a b", r"a\ b"),
        ("a,b", r"a\,b"),
        ("a=b", r"a\=b"),
        ("Абай ave. 12", r"Абай\ ave.\ 12"),
        ('"quoted"', '"quoted"'),
        ("C:\\bins", "C:\\bins"),
        ("a\\,b", "a\\\\,b"),
        ("tab\there", "tab\there"),
    ],
)
def test_tag_value_escaping(raw: str, escaped: str) -> None:
    assert tag_value(raw) == escaped
    assert parse_line(f"m,t={escaped} v=1 1")[1] == {"t": raw}


@pytest.mark.parametrize("bad", ["", "line\nbreak", "ends with \\", "\\"])
def test_tag_values_that_cannot_be_written(bad: str) -> None:
    with pytest.raises(ValueError, match="tag value"):
        tag_value(bad)


@pytest.mark.parametrize(
    ("raw", "quoted"),
    [
        ("plain", '"plain"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash\\", '"back\\\\slash\\\\"'),
        ("a b,c=d", '"a b,c=d"'),
        ("", '""'),
    ],
)
def test_string_field_escaping(raw: str, quoted: str) -> None:
    assert string_field(raw) == quoted
    assert parse_line(f"m s={quoted} 1")[2] == {"s": raw}


def test_string_field_with_a_newline_cannot_be_written() -> None:
    with pytest.raises(ValueError, match="newline"):
        string_field("a\nb")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_floats_cannot_be_written(bad: float) -> None:
    with pytest.raises(ValueError, match="NaN"):
        float_field(bad)
    with pytest.raises(ValueError, match="NaN"):
        devices.encode(msg(T_FILL, Fill(fill_pct=bad)))


@pytest.mark.parametrize("bad", [2**63, -(2**63) - 1, True])
def test_integers_outside_int64_cannot_be_written(bad: int) -> None:
    with pytest.raises(ValueError, match="int64"):
        int_field(bad)


def test_int_field_bounds() -> None:
    assert int_field(2**63 - 1) == "9223372036854775807i"
    assert int_field(-(2**63)) == "-9223372036854775808i"
    for n in (2**62 - 1, 2**62, -(2**62) + 1, -(2**62), 0):  # either side of the inline form
        assert int_field(n) == f"{n}i"
    for bad in (2**63, -(2**63) - 1, True):
        with pytest.raises(ValueError, match="int64"):
            int_field(bad)


def test_hand_built_messages_that_break_the_contract_raise_value_error() -> None:
    with pytest.raises(ValueError, match="newline"):
        devices.encode(msg(T_DEPOSIT, Deposit(txn_id="a\nb", items=(Item("pet", 1),))))
    with pytest.raises(ValueError, match="items"):
        devices.encode(msg(T_DEPOSIT, Deposit(txn_id="t", items=())))
    many = tuple(Item("pet", 1) for _ in range(devices.MAX_ITEMS + 1))
    with pytest.raises(ValueError, match="items"):
        devices.encode(msg(T_DEPOSIT, Deposit(txn_id="t", items=many)))
    with pytest.raises(ValueError, match="seq"):
        devices.encode(msg(T_FILL, Fill(fill_pct=1.0), seq=None))
    with pytest.raises(ValueError, match="time range"):
        devices.encode(msg(T_FILL, Fill(fill_pct=1.0), ts=10**16))
    site = DeviceInfo("eb-0001", Kind.ECOBOX, "almaty", 0, 0, 1.0, "mixed", "trailing\\", 60)
    with pytest.raises(ValueError, match="backslash"):
        devices.encode(msg(T_FILL, Fill(fill_pct=1.0)), site)


def test_empty_site_is_omitted() -> None:
    blank = DeviceInfo("eb-0001", Kind.ECOBOX, "almaty", 0, 0, 1.0, "mixed", "", 60)
    (line,) = devices.encode(msg(T_FILL, Fill(fill_pct=1.0)), blank)
    assert parse_line(line)[1] == {
        "device_id": "eb-0001",
        "fraction": "mixed",
        "kind": "ecobox",
        "region": "almaty",
    }


# -- no injection, for any text ---------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(site=st.text(max_size=64), txn=st.text(max_size=64), firmware=st.text(max_size=32))
def test_no_text_can_inject_a_tag_field_or_line(site: str, txn: str, firmware: str) -> None:
    device = DeviceInfo("rvm-07", Kind.RVM, "astana", 0, 0, None, None, site, 60)
    deposit = msg(T_DEPOSIT, Deposit(txn_id=txn, items=(Item("pet", 1),)))
    status = msg(T_RVM_STATUS, Status(firmware=firmware, bins=(("pet", 1.0),)))
    unwritable_site = site and ("\n" in site or site.endswith("\\"))
    for m, text in ((deposit, txn), (status, firmware)):
        if unwritable_site or "\n" in text:
            with pytest.raises(ValueError, match=r"newline|backslash"):
                devices.encode(m, device)
            continue
        lines = devices.encode(m, device)
        for line in lines:
            _, tags, fields, _ = parse_line(line)
            assert tags.get("site") == (site or None)
            assert set(tags) <= {"device_id", "kind", "region", "site", "material"}
            if "txn_id" in fields:
                assert fields["txn_id"] == text
            if "firmware" in fields:
                assert fields["firmware"] == text


def test_encode_from_decode_end_to_end() -> None:
    received = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    m = devices.decode(
        "taza/v1/almaty/ecobox/eb-0001/fill",
        b'{"ts":"2026-05-01T16:59:59.250+05:00","seq":7,"fill_pct":80}',
        received,
    )
    assert devices.encode(m, ECOBOX) == [
        "fill,device_id=eb-0001,fraction=plastic,kind=ecobox,region=almaty,site=park "
        "fill_pct=80.0,seq=7i 1777636799250000700"
    ]


@given(st.integers(-(2**70), 2**70) | st.integers(-(2**44), 2**44))
def test_ms_to_ns_is_the_product(ms: int) -> None:
    """The shifts-and-adds form of ``ms * 10**6`` (compiled code keeps it unboxed): exact for
    any int, epoch times and beyond the unboxed range alike."""
    assert ms_to_ns(ms) == ms * 1_000_000
