"""Fleet events → line protocol, MQTT topics and payloads, and what a batch publishes."""

from __future__ import annotations

import orjson
import pytest

from devstack.servers import InfluxDB1
from ingest.fleet import (
    AlertState,
    AlertTransition,
    Cause,
    Collection,
    Fleet,
    alert_payload,
    alert_topic,
    line,
    lines,
    plan_mqtt,
)
from ingest.fleet.output import MqttMessage
from tests.test_fleet_support import (
    MIN,
    T0,
    Bin,
    info,
    registry_entry,
    replace,
    simulated,
    spec,
    transitions,
)

HOUR = 60 * MIN


def full_bin(device_site: str | None = "Mega Silk Way, level 1") -> Bin:
    b = Bin(Fleet(), replace(info(), site=device_site))
    b.fills([50.0, 60.0, 70.0, 72.0, 74.0, 76.0, 78.0, 80.5, 81.5])
    b.fill(2.5)
    return b


def test_collection_and_alert_lines_carry_the_issue_s_tags_and_fields() -> None:
    b = full_bin()
    c = next(e for e in b.events if type(e) is Collection)
    site = "site=Mega\\ Silk\\ Way\\,\\ level\\ 1"
    assert line(c) == (
        f"collection,device_id=eb-1,fraction=plastic,region=almaty,{site} "
        f"fill_before_pct=81.5,fill_after_pct=2.5 {c.time_ns}"
    )
    assert c.time_ns == b.t * 1_000_000 + (b.seq - 1) * 100, "the reading's own point time"
    fired, resolved = transitions(b.events, "full")
    assert line(fired) == (
        f"alert,alert=full,device_id=eb-1,fraction=plastic,kind=ecobox,region=almaty,{site} "
        f'state="firing",severity="major",value=81.5,episode="{fired.episode}",'
        f'cause="threshold" {fired.time_ns}'
    )
    assert line(resolved).endswith(
        f'state="resolved",severity="major",value=81.5,episode="{fired.episode}",'
        f'cause="collected" {c.time_ns}'
    )


def test_anomaly_line() -> None:
    b = Bin(Fleet())
    b.fills([30.0, 30.5, 98.0, 30.7])
    [a] = [e for e in b.events if type(e) is not AlertTransition]
    assert line(a) == f"anomaly,anomaly=spike,device_id=eb-1,region=almaty value=98.0 {a.time_ns}"
    assert a.time_ns // 1_000_000 == T0 + 3 * 15 * MIN


def test_alert_payloads_firing_and_resolved() -> None:
    b = full_bin()
    fired, resolved = transitions(b.events, "full")
    assert alert_topic(fired) == "taza/v1/alerts/almaty/eb-1/full"
    doc = orjson.loads(alert_payload(fired))
    assert doc == {
        "state": "firing",
        "alert": "full",
        "device_id": "eb-1",
        "region": "almaty",
        "kind": "ecobox",
        "severity": "major",
        "value": 81.5,
        "threshold": 80.0,
        "since": "2026-05-28T22:41:40.000Z",
        "episode": fired.episode,
        "cause": "threshold",
        "lat": 43.25,
        "lon": 76.9,
        "site": "Mega Silk Way, level 1",
        "fraction": "plastic",
        "capacity_l": 240.0,
        "report_interval_s": 900,
    }
    gone = orjson.loads(alert_payload(resolved))
    assert gone["state"] == "resolved"
    assert gone["cause"] == "collected"
    assert gone["since"] == doc["since"], "one episode keeps one since"
    assert gone["resolved_at"] == "2026-05-28T22:56:40.000Z"


def test_full_soon_payload_has_the_forecast() -> None:
    b = Bin(Fleet())
    b.fills([20.0 + i for i in range(60)])
    soon = transitions(b.events, "full_soon", AlertState.FIRING)[0]
    f = orjson.loads(alert_payload(soon))["forecast"]
    assert f["rate_pct_per_h"] == pytest.approx(4.0, abs=0.05)
    assert f["threshold_pct"] == 80.0
    assert f["full_at"].endswith("Z")


def _published(out: list[MqttMessage], topic: str) -> list[tuple[bool, bool, str]]:
    """(retain, live, state or "" for an empty payload) of what goes to ``topic``."""
    return [(m.retain, m.live, orjson.loads(m.payload)["state"] if m.payload else "")
            for m in out if m.topic == topic]  # fmt: skip


def test_a_live_fleet_retains_firing_then_sends_resolved_and_an_empty_retained() -> None:
    """Reports minutes apart reach taza in batches of their own: the firing message is the
    retained state until the clear empties it."""
    b = full_bin()
    fired, resolved = transitions(b.events, "full")
    topic = "taza/v1/alerts/almaty/eb-1/full"
    assert _published(plan_mqtt([fired], fired.ts_ms + 500, 3600), topic) == [
        (True, True, "firing")
    ]
    later = plan_mqtt([resolved], resolved.ts_ms + 500, 3600)
    assert _published(later, topic) == [(False, True, "resolved"), (True, False, "")]
    assert all(m.qos == 1 for m in later)


def test_one_batch_sets_each_topic_s_retained_state_once_and_notifies_every_transition() -> None:
    """Fired and resolved inside one batch: the firing message would be replaced in the same
    write, so it goes out unretained; the empty clear is the retained state. A bin that fills
    and is emptied three times in a batch, full at its end: every firing and resolved message
    live, one retained message (the last firing), no empty payload."""
    b = full_bin()
    topic = "taza/v1/alerts/almaty/eb-1/full"
    assert _published(plan_mqtt(b.events, b.t + MIN, 3600), topic) == [
        (False, True, "firing"),
        (False, True, "resolved"),
        (True, False, ""),
    ]
    ramp = [50.0, 60.0, 70.0, 72.0, 74.0, 76.0, 78.0, 80.5, 81.5]
    for _ in range(2):
        b.fills(ramp)
        b.fill(2.5)
    b.fills(ramp)
    out = plan_mqtt(b.events, b.t + MIN, 86400)  # every transition young
    assert _published(out, topic) == [
        *[(False, True, "firing"), (False, True, "resolved")] * 3,
        (True, True, "firing"),
    ]
    st = b.fleet.get("eb-1")
    assert st is not None
    last = [m for m in out if m.topic == topic][-1]
    now_firing = next(t.episode for t in st.firing() if t.alert == "full")
    assert orjson.loads(last.payload)["episode"] == now_firing, "the episode firing now"


def test_a_drained_backlog_notifies_only_what_is_current() -> None:
    """Six hours of store-and-forward arrive at once: the bin filled, was emptied, filled
    again and is full now; its lid was opened and closed. Only `full` (the present) goes out."""
    b = Bin(Fleet())
    b.fills([40.0 + 2 * i for i in range(6)])
    b.status(faults=("lid_open",))
    b.fills([55.0, 65.0, 75.0, 81.0, 82.0])
    b.status(faults=())
    b.status(faults=())
    b.fill(3.0)  # collection
    b.fills([30.0, 50.0, 70.0, 75.0, 78.0, 80.5, 82.0])
    assert b.t - T0 <= 6 * HOUR
    now = T0 + 9 * HOUR
    out = plan_mqtt(b.events, now, 3600)
    firing = [m for m in out if m.payload and orjson.loads(m.payload)["state"] == "firing"]
    assert [orjson.loads(m.payload)["alert"] for m in firing] == ["full"]
    assert [m.retain for m in firing] == [True]
    assert not any(m.live for m in out), "every transition is older than an hour"
    assert not [m for m in out if m.payload and orjson.loads(m.payload)["state"] == "resolved"]
    st = b.fleet.get("eb-1")
    assert st is not None
    assert [t.episode for t in st.firing()] == [orjson.loads(firing[0].payload)["episode"]]


def test_an_old_clear_of_an_episode_announced_earlier_still_empties_the_retained_topic() -> None:
    b = full_bin()
    _fired, resolved = transitions(b.events, "full")
    out = plan_mqtt([resolved], resolved.ts_ms + 2 * HOUR, 3600)
    assert [(m.retain, m.payload) for m in out] == [(True, b"")]
    assert resolved.cause is Cause.COLLECTED


@pytest.mark.integration
def test_events_of_simulated_bins_are_accepted_by_influxdb(
    influxd: InfluxDB1, influx_db: str
) -> None:
    specs = [spec(f"eb-{i}", site="park") for i in range(5)]
    f = Fleet()
    out = []
    for s in specs:
        for m in simulated(s, days=4):
            out += f.apply(m, registry_entry(s))
    written = lines(out)
    influxd.write(written, influx_db)
    types = {
        (name, r["fieldKey"]): r["fieldType"]
        for name in ("collection", "anomaly", "alert")
        for r in influxd.query(f'SHOW FIELD KEYS FROM "{name}"', influx_db)
    }
    assert types == {
        ("collection", "fill_before_pct"): "float",
        ("collection", "fill_after_pct"): "float",
        ("anomaly", "value"): "float",
        ("alert", "state"): "string",
        ("alert", "severity"): "string",
        ("alert", "value"): "float",
        ("alert", "episode"): "string",
        ("alert", "cause"): "string",
    }
    rows = influxd.query('SELECT count("fill_after_pct") FROM "collection"', influx_db)
    assert rows[0]["count"] == sum(1 for e in out if type(e) is Collection)
    tags = {r["tagKey"] for r in influxd.query('SHOW TAG KEYS FROM "alert"', influx_db)}
    assert tags == {"alert", "device_id", "fraction", "kind", "region", "site"}


def test_rfc3339_is_the_utc_millisecond_iso_form_from_1970_and_before_to_year_9999() -> None:
    """Alert payloads and the API print times with it: the date from a per-day cache, the time
    of day from tables, checked against ``datetime``'s own ISO form on ms boundaries, negative
    times back to 1900, and the last ms of 9999."""
    from datetime import UTC, datetime, timedelta

    from ingest.fleet.output import rfc3339

    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    samples = [0, 1, 999, 1000, -1, -1000, -1001, 1_780_000_000_123, 253_402_300_799_999]
    samples += [-2_208_988_800_000, 86_399_999, 86_400_000]  # 1900, either side of a midnight
    samples += range(-(10**12), 10**14, 7_777_777_777)
    for ms in samples:
        iso = (epoch + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")
        assert rfc3339(ms) == iso.removesuffix("+00:00") + "Z", ms
