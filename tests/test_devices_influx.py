"""Encoded points written to the real influxd 1.x and read back with InfluxQL equal the input.

The expected points are derived from the decoded messages here, independently of the encoder,
so this pins the public schema operators query (measurements, tags, fields, field types, times)
as well as the escaping of every special character influxd's parser cares about.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

import devices
from devices import Deposit, DeviceInfo, Fill, Kind, Message, Presence, Registry, Status
from devices.timestamps import received_ms
from devstack.servers import InfluxDB1

pytestmark = pytest.mark.integration

SPECIAL = "a b,c=d \"q\" 's' back\\slash \\, \\= \\  Ақмола 😀 #"
SITES = {
    "eb_0001-X": 'Абай ave. 12, "Mega" = park #2',
    "eb-0002": "residential",
    "RVM-7_b": "mall, 2nd floor=food court",
}


def registry() -> Registry:
    return Registry(
        [
            DeviceInfo("eb_0001-X", Kind.ECOBOX, "almaty", 43.2, 76.9, 1100, "plastic",
                       SITES["eb_0001-X"], 900),
            DeviceInfo("eb-0002", Kind.ECOBOX, "almaty", 43.3, 76.8, 240, "organic",
                       SITES["eb-0002"], 900),
            DeviceInfo("RVM-7_b", Kind.RVM, "astana-2", 51.1, 71.4, None, None,
                       SITES["RVM-7_b"], 60),
        ]
    )  # fmt: skip


ITEMS = [
    {"material": "pet", "count": 12, "volume_ml": 500},
    {"material": "alu", "count": 4},
    {"material": "pet", "count": 1, "volume_ml": 1500},
]


def published(now_ms: int) -> list[tuple[str, bytes]]:
    """What a fleet published: every channel, special characters wherever text is allowed."""
    rvm = "taza/v1/astana-2/rvm/RVM-7_b"
    eb = "taza/v1/almaty/ecobox/eb_0001-X"
    return [
        # fill_pct 50 (a JSON integer) first: written as 50i it would make every later
        # float fill_pct of the measurement a field-type conflict.
        (f"{eb}/fill", orjson.dumps({"ts": now_ms - 9000, "seq": 1, "fill_pct": 50})),
        (f"{eb}/fill", orjson.dumps({"ts": now_ms - 9000, "seq": 2, "fill_pct": 62.5,
                                     "distance_mm": 412, "temperature_c": -3.5, "tilt_deg": 0})),
        ("taza/v1/almaty/ecobox/eb-0002/fill",
         orjson.dumps({"ts": "2000-01-01T00:00:00Z", "seq": 0, "fill_pct": 0})),
        (f"{eb}/status", orjson.dumps({"ts": now_ms - 8000, "seq": 3, "battery_v": 3.61,
                                       "battery_pct": 88, "rssi_dbm": -97, "temperature_c": 21,
                                       "uptime_s": 4_294_967_295, "firmware": SPECIAL[:32],
                                       "faults": ["tilted", "lid_open"]})),
        (f"{eb}/state", b"online"),
        (f"{rvm}/status", orjson.dumps({"ts": now_ms - 7000, "seq": 4_294_967_295,
                                        "firmware": "rvm\\2.4\\", "faults": [],
                                        "bins": {"pet": 80, "alu": 35.5, "glass": 0},
                                        "mode": "out_of_service"})),
        (f"{rvm}/deposit", orjson.dumps({"ts": now_ms - 6000, "seq": 10_000,
                                         "txn_id": SPECIAL[:64], "items": ITEMS,
                                         "rejected": 2, "refund_minor": 9_223_372_036_854_775_807,
                                         "currency": "KZT"})),
        (f"{rvm}/state", b"offline"),
    ]  # fmt: skip


def expected_points(m: Message, device: DeviceInfo | None) -> list[dict[str, object]]:
    """The schema in docs/protocol.md, as the rows InfluxQL returns (tags as columns)."""
    t = m.topic
    tags: dict[str, object] = {"region": t.region, "kind": str(t.kind), "device_id": t.device_id}
    if device is not None:
        tags |= {"site": device.site} | ({"fraction": device.fraction} if device.fraction else {})
    seq_ns = 0 if m.seq is None else (m.seq % 10_000) * 100
    time = m.ts_ms * 1_000_000 + seq_ns
    b = m.body
    fields: dict[str, object]
    if isinstance(b, Fill):
        fields = {"fill_pct": b.fill_pct, "distance_mm": b.distance_mm, "seq": m.seq,
                  "temperature_c": b.temperature_c, "tilt_deg": b.tilt_deg}  # fmt: skip
        return [{"name": "fill", "time": time, **tags, **fields}]
    if isinstance(b, Status):
        fields = {"battery_v": b.battery_v, "battery_pct": b.battery_pct, "rssi_dbm": b.rssi_dbm,
                  "temperature_c": b.temperature_c, "uptime_s": b.uptime_s,
                  "firmware": b.firmware, "faults": ",".join(b.faults),
                  "fault_count": len(b.faults), "mode": b.mode, "seq": m.seq}  # fmt: skip
        bins = [
            {"name": "rvm_bin", "time": time, **tags, "material": mat, "fill_pct": pct}
            for mat, pct in b.bins
        ]
        return [{"name": "status", "time": time, **tags, **fields}, *bins]
    if isinstance(b, Deposit):
        items = [
            {"name": "deposit", "time": time + i, **tags, "material": it.material,
             "count": it.count, "volume_ml": it.volume_ml, "txn_id": b.txn_id, "item": i}
            for i, it in enumerate(b.items)
        ]  # fmt: skip
        txn = {"name": "deposit", "time": time, **tags, "txn_id": b.txn_id,
               "items": sum(it.count for it in b.items), "rejected": b.rejected,
               "refund_minor": b.refund_minor, "currency": b.currency, "seq": m.seq}  # fmt: skip
        return [*items, txn]
    assert isinstance(b, Presence)
    status = "online" if b.online else "offline"
    return [{"name": "state", "time": time, **tags, "online": b.online, "status": status}]


def stored(influxd: InfluxDB1, db: str) -> list[dict[str, object]]:
    rows = []
    for name in ("fill", "status", "rvm_bin", "deposit", "state"):
        for row in influxd.query(f'SELECT * FROM "{name}"', db):
            rows.append({"name": name, **{k: v for k, v in row.items() if v is not None}})
    return rows


def _key(row: dict[str, object]) -> tuple[str, ...]:
    return tuple(str(row.get(k)) for k in ("name", "device_id", "time", "material"))


def test_points_read_back_equal_the_messages(influxd: InfluxDB1, influx_db: str) -> None:
    received_at = datetime.now(UTC)
    now_ms = int(received_at.timestamp() * 1000)
    reg = registry()
    limits = devices.Limits(max_age=(received_at - datetime(1999, 12, 31, tzinfo=UTC)))
    expected: list[dict[str, object]] = []
    lines: list[str] = []
    for topic, payload in published(now_ms):
        m = devices.decode(topic, payload, received_at, limits)
        device = reg.get(m.topic.device_id)
        lines += devices.encode(m, device)
        for point in expected_points(m, device):
            expected.append({k: v for k, v in point.items() if v is not None})
    influxd.write(lines, influx_db)

    got = sorted(stored(influxd, influx_db), key=_key)
    want = sorted(expected, key=_key)
    assert len(got) == len(lines) == len(want) == 14
    for g, w in zip(got, want, strict=True):
        assert g == w  # 50 == 50.0: JSON drops the float/int distinction, field types below

    assert {r["site"] for r in got} == set(SITES.values())
    assert {r["txn_id"] for r in got if "txn_id" in r} == {SPECIAL[:64]}


def test_field_types_are_stable(influxd: InfluxDB1, influx_db: str) -> None:
    received_at = datetime.now(UTC)
    now_ms = int(received_at.timestamp() * 1000)
    limits = devices.Limits(max_age=(received_at - datetime(1999, 12, 31, tzinfo=UTC)))
    for topic, payload in published(now_ms):
        influxd.write(
            devices.encode(devices.decode(topic, payload, received_at, limits)), influx_db
        )
    types = {
        (row["name"], row["fieldKey"]): row["fieldType"]
        for name in ("fill", "status", "rvm_bin", "deposit", "state")
        for row in [
            {"name": name, **r} for r in influxd.query(f'SHOW FIELD KEYS FROM "{name}"', influx_db)
        ]
    }
    assert types == {
        ("fill", "fill_pct"): "float",
        ("fill", "distance_mm"): "float",
        ("fill", "temperature_c"): "float",
        ("fill", "tilt_deg"): "float",
        ("fill", "seq"): "integer",
        ("status", "battery_v"): "float",
        ("status", "battery_pct"): "float",
        ("status", "rssi_dbm"): "float",
        ("status", "temperature_c"): "float",
        ("status", "uptime_s"): "integer",
        ("status", "firmware"): "string",
        ("status", "faults"): "string",
        ("status", "fault_count"): "integer",
        ("status", "mode"): "string",
        ("status", "seq"): "integer",
        ("rvm_bin", "fill_pct"): "float",
        ("deposit", "count"): "integer",
        ("deposit", "volume_ml"): "integer",
        ("deposit", "txn_id"): "string",
        ("deposit", "item"): "integer",
        ("deposit", "items"): "integer",
        ("deposit", "rejected"): "integer",
        ("deposit", "refund_minor"): "integer",
        ("deposit", "currency"): "string",
        ("deposit", "seq"): "integer",
        ("state", "online"): "boolean",
        ("state", "status"): "string",
    }


def test_same_millisecond_is_kept_and_redelivery_is_idempotent(
    influxd: InfluxDB1, influx_db: str
) -> None:
    received_at = datetime.now(UTC)
    ts = int(received_at.timestamp() * 1000) - 1000
    topic = "taza/v1/almaty/ecobox/eb-0002/fill"
    messages = [orjson.dumps({"ts": ts, "seq": s, "fill_pct": float(s)}) for s in (7, 8, 9)]
    lines = [
        line for p in messages for line in devices.encode(devices.decode(topic, p, received_at))
    ]
    influxd.write(lines, influx_db)
    influxd.write(lines[1:], influx_db)  # the broker redelivers two of them
    influxd.write(lines, influx_db)
    rows = influxd.query('SELECT fill_pct, seq FROM "fill"', influx_db)
    assert [(r["fill_pct"], r["seq"]) for r in rows] == [(7, 7), (8, 8), (9, 9)]


@pytest.mark.parametrize(
    "site",
    [
        "C:\\bins",  # a backslash before an ordinary character is literal
        "a\\,b",  # ... and before a separator it needs the separator escaped after it
        "a\\ b=c",
        "x\\\\y",  # two backslashes stay two in influxd 1.x (VictoriaMetrics reads one)
        "\t tab and spaces ",
        'quote"s \'and\' \\"both\\"',
    ],
)
def test_tag_values_with_backslashes_survive_influx_1x(
    influxd: InfluxDB1, influx_db: str, site: str
) -> None:
    # The registry refuses backslashes in site (not portable to 2.x / VictoriaMetrics), but the
    # encoder must still write exactly what it is given, for influxd 1.x.
    device = DeviceInfo("eb-0002", Kind.ECOBOX, "almaty", 0, 0, 1.0, "paper", site, 60)
    received_at = datetime.now(UTC)
    m = devices.decode("taza/v1/almaty/ecobox/eb-0002/state", b"online", received_at)
    influxd.write(devices.encode(m, device), influx_db)
    assert [r["value"] for r in influxd.query('SHOW TAG VALUES FROM "state" WITH KEY = "site"',
                                              influx_db)] == [site]  # fmt: skip


def test_documented_queries_run_on_the_documented_points(
    influxd: InfluxDB1, influx_db: str
) -> None:
    from tests.test_devices_docs import EXAMPLES, RECEIVED_AT, fleet, influxql_examples

    reg = fleet()
    for example in EXAMPLES:
        m = devices.decode(example["topic"], example["payload"].encode(), RECEIVED_AT)
        influxd.write(devices.encode(m, reg.get(m.topic.device_id)), influx_db)
    for query in influxql_examples():
        influxd.query(query, influx_db)  # raises QueryError on anything influxd refuses
    refunds = influxd.query(
        'SELECT sum("refund_minor") FROM "deposit" WHERE "material" = \'\' GROUP BY "device_id"',
        influx_db,
    )
    assert [(r["device_id"], r["sum"]) for r in refunds] == [("rvm-0007", 360)]
    per_material = influxd.query(
        'SELECT sum("count") FROM "deposit" WHERE "material" <> \'\' GROUP BY "material"',
        influx_db,
    )
    assert {r["material"]: r["sum"] for r in per_material} == {"alu": 4, "pet": 14}


def scenario(now_ms: int) -> list[tuple[str, dict[str, object]]]:
    """A small fleet with the traps the documented queries guard against: a device not heard
    from for two hours, a fault that has cleared, a deposit older than a week, and item points
    beside every transaction point."""
    minute = 60_000
    # The two recent deposits within today (UTC), whatever the hour: the per-material query
    # groups by day, and at 00:30 "an hour ago" is yesterday's bucket.
    today = now_ms - now_ms % (1440 * minute)
    deposit_a, deposit_b = today + (now_ms - today) // 3, today + 2 * (now_ms - today) // 3
    rvm = "taza/v1/astana/rvm/rvm-1/deposit"
    eb1, eb2 = "taza/v1/almaty/ecobox/eb-1/fill", "taza/v1/almaty/ecobox/eb-2/fill"
    return [
        (eb1, {"ts": now_ms - 10 * minute, "seq": 1, "fill_pct": 62.5}),
        (eb1, {"ts": now_ms - 5 * minute, "seq": 2, "fill_pct": 70}),
        (eb2, {"ts": now_ms - 120 * minute, "seq": 1, "fill_pct": 90}),
        ("taza/v1/astana/ecobox/eb-3/fill", {"ts": now_ms - 20 * minute, "seq": 1, "fill_pct": 40}),
        ("taza/v1/almaty/ecobox/eb-1/status", {"ts": now_ms - 30 * minute, "seq": 3,
                                               "faults": ["lid_open"]}),
        ("taza/v1/almaty/ecobox/eb-1/status", {"ts": now_ms - 10 * minute, "seq": 4, "faults": []}),
        ("taza/v1/astana/ecobox/eb-3/status", {"ts": now_ms - 20 * minute, "seq": 2,
                                               "faults": ["tilted", "lid_open"]}),
        (rvm, {"ts": deposit_a, "seq": 1, "txn_id": "a", "refund_minor": 320,
               "items": [{"material": "pet", "count": 12}, {"material": "alu", "count": 4}]}),
        (rvm, {"ts": deposit_b, "seq": 2, "txn_id": "b", "refund_minor": 40,
               "items": [{"material": "pet", "count": 2}]}),
        (rvm, {"ts": now_ms - 8 * 1440 * minute, "seq": 0, "txn_id": "old", "refund_minor": 100,
               "items": [{"material": "pet", "count": 5}]}),
    ]  # fmt: skip


def _answer(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """The rows without their time, and without the empty buckets GROUP BY time() fills in."""
    out = []
    for row in rows:
        values = {k: v for k, v in row.items() if k != "time"}
        if any(
            v is not None for k, v in values.items() if k not in ("device_id", "region", "material")
        ):
            out.append(values)
    return sorted(out, key=lambda r: sorted(map(str, r.items())))


def test_every_documented_query_gives_the_documented_answer_where_the_naive_one_does_not(
    influxd: InfluxDB1, influx_db: str
) -> None:
    from tests.test_devices_docs import influxql_examples

    fullest, per_material, refunds, faults = queries = influxql_examples()
    answers: dict[str, list[dict[str, object]]] = {
        fullest: [
            {"device_id": "eb-1", "region": "almaty", "last": 70},
            {"device_id": "eb-3", "region": "astana", "last": 40},
        ],
        per_material: [{"material": "alu", "sum": 4}, {"material": "pet", "sum": 14}],
        refunds: [{"device_id": "rvm-1", "transactions": 3, "refund_minor": 460}],
        faults: [{"device_id": "eb-3", "faults": "lid_open,tilted"}],
    }
    # What each query would answer without the clause that makes it right.
    naive = {
        fullest: fullest.replace(" WHERE time > now() - 1h", ""),
        per_material: per_material.replace(" AND time > now() - 7d", ""),
        refunds: refunds.replace(" WHERE \"material\" = ''", ""),
        faults: 'SELECT last("faults") FROM "status" WHERE "fault_count" > 0 '
        'AND time > now() - 1h GROUP BY "device_id"',
    }
    assert all(naive[q] != q for q in queries)
    received_at = datetime.now(UTC)
    now_ms = received_ms(received_at)
    limits = devices.Limits(max_age=timedelta(days=30))
    lines = [
        line
        for topic, doc in scenario(now_ms)
        for line in devices.encode(devices.decode(topic, orjson.dumps(doc), received_at, limits))
    ]
    influxd.write(lines, influx_db)
    for query in queries:
        assert _answer(influxd.query(query, influx_db)) == _answer(answers[query]), query
        assert _answer(influxd.query(naive[query], influx_db)) != _answer(answers[query]), query
