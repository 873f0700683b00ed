"""End to end: real mosquitto → real ``taza-ingest`` (fleet stage on) → real influxd, and the
crew's side: a real MQTT subscriber on ``taza/v1/alerts/#``.

Every test publishes device messages with device times close to now, watches what a crew
app receives (with MQTT 5 retain-as-published, so the retain flag is the one taza set) and
reads the ``alert`` / ``collection`` / ``anomaly`` history back from InfluxDB.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

from devices import to_payload
from devices.broker import BrokerURL
from devices.message import Fill, Message
from devstack.ingest_process import IngestProcess, wait_until
from devstack.publisher import Publisher
from ingest.batch import Accepted, Source
from ingest.fleet import Fleet
from ingest.fleet.persist import Journal
from ingest.fleet.retained import read_retained
from tests.conftest import MakeIngest
from tests.faultproxy import Fault, FaultProxy
from tests.test_fleet_support import Bin, simulated, spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MIN = 60_000
FLEET = """device_id,kind,region,lat,lon,capacity_l,fraction,site,report_interval_s
eb-1,ecobox,almaty,43.25,76.9,240,plastic,residential,900
eb-2,ecobox,almaty,43.26,76.91,240,glass,park,900
eb-quiet,ecobox,almaty,43.27,76.92,240,mixed,transit,2
rvm-1,rvm,astana,51.09,71.41,150,,mall,300
"""


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    retain: bool

    @property
    def doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.payload)
        return doc


class Crew:
    """A crew app: subscribed to every alert, retain flags as published."""

    def __init__(self, broker: Any, name: str, region: str) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=paho.MQTTv5)
        self.client.on_connect = lambda c, *a: c.subscribe(
            f"taza/v1/alerts/{region}/#", options=SubscribeOptions(qos=1, retainAsPublished=True)
        )
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "crew subscriber got no SUBACK"

    def _on_message(self, c: Any, u: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def on(self, suffix: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def states(self, suffix: str) -> list[str]:
        """'firing' / 'resolved' / '' (an empty retained payload) per message on a topic."""
        return [m.doc["state"] if m.payload else "" for m in self.on(suffix)]

    def wait(self, suffix: str, states: list[str], timeout: float = 20) -> None:
        wait_until(
            lambda: self.states(suffix) == states,
            timeout,
            f"{suffix}: {states} (got {self.states(suffix)})",
            0.1,
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


_regions = itertools.count()


@pytest.fixture(autouse=True)
def _own_region(mosquitto: Any) -> Iterator[str]:
    """A region of the test's own: the session broker keeps retained alerts across tests.
    Autouse, so it is set up first and torn down last — after the test's taza-ingest has
    stopped — and then clears the region's retained alerts, so that no later test's
    taza-ingest finds (and clears) them."""
    name = f"t{next(_regions)}-{time.time_ns() % 10**6}"
    yield name
    left = retained_now(mosquitto, name)
    if left:
        cleaner = Publisher(mosquitto.host, mosquitto.port, f"clean-{name}")
        for topic in left:
            cleaner.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)
        cleaner.close()
        assert retained_now(mosquitto, name) == {}, "retained alerts left behind"


@pytest.fixture
def region(_own_region: str) -> str:
    return _own_region


@pytest.fixture
def crew(mosquitto: Any, region: str, request: pytest.FixtureRequest) -> Iterator[Crew]:
    c = Crew(mosquitto, f"crew-{request.node.name[:40]}", region)
    yield c
    c.close()


def retained_now(broker: Any, region: str) -> dict[str, dict[str, Any]]:
    """What a crew app that connects now is shown for the region: {topic: firing document}."""
    url = BrokerURL(broker.host, broker.port)
    found = asyncio.run(read_retained(url, f"late-{time.monotonic_ns()}"))
    mine = f"taza/v1/alerts/{region}/"
    return {t: json.loads(p) for t, p in found.items() if t.startswith(mine)}


def start_ingest(
    make_ingest: MakeIngest,
    mosquitto: Any,
    influxd: Any,
    db: str,
    tmp_path: Path,
    region: str,
    **env: str,
) -> IngestProcess:
    fleet = tmp_path / "fleet.csv"
    fleet.write_text(FLEET.replace("almaty", region).replace("astana", region))
    return make_ingest(
        mosquitto.url,
        influxd.url,
        TAZA_INFLUX_DB=db,
        TAZA_REGISTRY=str(fleet),
        TAZA_ALERT_TICK_INTERVAL_S="1",
        **env,
    ).start()


class Device:
    """Publishes one device's messages with consecutive seqs."""

    def __init__(self, pub: Publisher, topic: str) -> None:
        self.pub = pub
        self.topic = topic
        self.seq = 0
        self.sent: list[tuple[str, bytes]] = []

    def send(self, ts_ms: int, **fields: Any) -> None:
        self.seq += 1
        msg = (self.topic, json.dumps({"ts": ts_ms, "seq": self.seq, **fields}).encode())
        self.sent.append(msg)
        self.pub.publish([msg])

    def fills(self, start_ms: int, step_ms: int, levels: list[float]) -> int:
        """Readings ``step_ms`` apart from ``start_ms``; returns the next reading's time."""
        for i, pct in enumerate(levels):
            self.send(start_ms + i * step_ms, fill_pct=pct)
        return start_ms + len(levels) * step_ms


@pytest.fixture
def pub(mosquitto: Any, request: pytest.FixtureRequest) -> Iterator[Publisher]:
    p = Publisher(mosquitto.host, mosquitto.port, f"pub-{request.node.name[:40]}")
    yield p
    p.close()


def now_ms() -> int:
    return int(time.time() * 1000)


def history(influxd: Any, db: str, measurement: str, where: str = "") -> list[dict[str, Any]]:
    clause = f" WHERE {where}" if where else ""
    rows: list[dict[str, Any]] = influxd.query(f"SELECT * FROM {measurement}{clause}", db=db)
    return rows


def wait_history(
    influxd: Any, db: str, measurement: str, n: int, where: str = "", timeout: float = 20
) -> list[dict[str, Any]]:
    wait_until(
        lambda: len(history(influxd, db, measurement, where)) >= n,
        timeout,
        f"{n} {measurement} points ({where or 'all'})",
        0.2,
    )
    return history(influxd, db, measurement, where)


def events(ingest: IngestProcess, name: str) -> list[dict[str, Any]]:
    return [e for e in ingest.log_events() if e.get("event") == name]


def fill_ramp(start: float, stop: float, step: float) -> list[float]:
    n = round((stop - start) / step) + 1
    return [round(start + i * step, 1) for i in range(n)]


# ---------------------------------------------------------------------------------------------


def test_a_filling_bin_warns_full_soon_then_fires_full_once_and_late_subscribers_see_it(
    mosquitto: Any,
    influxd: Any,
    influx_db: str,
    make_ingest: MakeIngest,
    tmp_path: Path,
    crew: Crew,
    pub: Publisher,
    region: str,
) -> None:
    start_ingest(make_ingest, mosquitto, influxd, influx_db, tmp_path, region)
    eb = Device(pub, f"taza/v1/{region}/ecobox/eb-1/fill")
    # 2 points every 4 minutes (30 %/h), 40 → 88 %, the last reading 4 minutes ago.
    levels = fill_ramp(40, 88, 2)
    t0 = now_ms() - (len(levels) + 1) * 4 * MIN
    eb.fills(t0, 4 * MIN, levels)

    crew.wait("/eb-1/full", ["firing"])
    soon = crew.on("/eb-1/full_soon")
    assert [m.doc["state"] for m in soon if m.payload][:1] == ["firing"]
    # (retained only if full came in a later batch: else the clear below is the retained state)
    assert soon[0].doc["forecast"]["full_at"] is not None
    full = crew.on("/eb-1/full")[0]
    assert full.retain
    assert soon[0].doc["since"] < full.doc["since"], "full_soon must come before full"
    assert full.doc["value"] >= 80
    assert full.doc["threshold"] == 80.0
    assert full.doc["region"] == region
    assert full.doc["fraction"] == "plastic"
    assert full.doc["lat"] == 43.25
    assert full.doc["severity"] == "major"
    # full_soon gives way when full fires: resolved (cause full), then the retained topic cleared.
    crew.wait("/eb-1/full_soon", ["firing", "resolved", ""])
    assert crew.on("/eb-1/full_soon")[1].doc["cause"] == "full"

    # Noise around the threshold afterwards: still one episode, nothing resolved.
    eb.fills(now_ms() - 3 * MIN, 10_000, [79.0, 81.5, 78.5, 82.0, 79.5, 80.5, 78.0, 81.0])
    firing = wait_history(influxd, influx_db, "alert", 1, "\"alert\" = 'full'")
    time.sleep(2)
    assert crew.states("/eb-1/full") == ["firing"], "one firing message, not one per reading"
    rows = history(influxd, influx_db, "alert", "\"alert\" = 'full'")
    assert [(r["state"], r["cause"]) for r in rows] == [("firing", "threshold")]
    assert rows[0]["episode"] == full.doc["episode"] == firing[0]["episode"]

    late = retained_now(mosquitto, region)
    topic = f"taza/v1/alerts/{region}/eb-1/full"
    assert set(late) == {topic}, "a crew app connecting now sees exactly what fires"
    assert late[topic]["since"] == full.doc["since"]
    assert late[topic]["episode"] == full.doc["episode"]


def test_an_emptying_is_a_collection_and_resolves_full(
    mosquitto: Any,
    influxd: Any,
    influx_db: str,
    make_ingest: MakeIngest,
    tmp_path: Path,
    crew: Crew,
    pub: Publisher,
    region: str,
) -> None:
    start_ingest(make_ingest, mosquitto, influxd, influx_db, tmp_path, region)
    eb = Device(pub, f"taza/v1/{region}/ecobox/eb-2/fill")
    t = now_ms() - 30 * MIN
    t = eb.fills(t, MIN, [78.0, 79.0, 81.0, 83.0, 84.0])
    crew.wait("/eb-2/full", ["firing"])
    eb.fills(t, MIN, [4.0, 4.5])
    crew.wait("/eb-2/full", ["firing", "resolved", ""])
    resolved, cleared = crew.on("/eb-2/full")[1:]
    assert not resolved.retain
    assert resolved.doc["cause"] == "collected"
    assert resolved.doc["resolved_at"] > resolved.doc["since"]
    assert cleared.retain
    assert cleared.payload == b""
    rows = wait_history(influxd, influx_db, "collection", 1)
    assert len(rows) == 1
    c = rows[0]
    assert (c["device_id"], c["region"], c["fraction"], c["site"]) == (
        "eb-2",
        region,
        "glass",
        "park",
    )
    assert c["fill_before_pct"] == 84.0
    assert c["fill_after_pct"] == 4.0
    assert c["time"] // 1_000_000 == t, "the collection is placed on the reading that showed it"
    alerts = wait_history(influxd, influx_db, "alert", 2, "\"alert\" = 'full'")
    assert [(r["state"], r["cause"]) for r in alerts] == [
        ("firing", "threshold"),
        ("resolved", "collected"),
    ]
    assert f"taza/v1/alerts/{region}/eb-2/full" not in retained_now(mosquitto, region)


def test_a_glitch_spike_fires_nothing_and_is_flagged(
    mosquitto: Any,
    influxd: Any,
    influx_db: str,
    make_ingest: MakeIngest,
    tmp_path: Path,
    crew: Crew,
    pub: Publisher,
    region: str,
) -> None:
    ingest = start_ingest(make_ingest, mosquitto, influxd, influx_db, tmp_path, region)
    eb = Device(pub, f"taza/v1/{region}/ecobox/eb-1/fill")
    t = now_ms() - 20 * MIN
    spike_at = t + 3 * MIN
    eb.fills(t, MIN, [30.0, 30.5, 31.0, 98.0, 31.5, 32.0, 32.0, 32.5])
    rows = wait_history(influxd, influx_db, "anomaly", 1)
    assert [(r["anomaly"], r["value"], r["time"] // 1_000_000) for r in rows] == [
        ("spike", 98.0, spike_at)
    ]
    wait_until(
        lambda: ingest.metrics().get("taza_fleet_messages_applied_total", 0) >= 8, 10, "applied"
    )
    time.sleep(1)
    assert crew.messages == [], "a one-reading glitch must not alert anyone"
    assert history(influxd, influx_db, "alert") == []
    assert history(influxd, influx_db, "collection") == [], "the fall back is no emptying"


def test_a_silent_device_goes_offline_and_comes_back(
    mosquitto: Any,
    influxd: Any,
    influx_db: str,
    make_ingest: MakeIngest,
    tmp_path: Path,
    crew: Crew,
    pub: Publisher,
    region: str,
) -> None:
    start_ingest(make_ingest, mosquitto, influxd, influx_db, tmp_path, region)
    quiet = Device(pub, f"taza/v1/{region}/ecobox/eb-quiet/fill")
    quiet.send(now_ms(), fill_pct=20.0)
    began = time.monotonic()
    # report_interval_s = 2: offline after 6 s of silence, judged on the wall clock.
    crew.wait("/eb-quiet/offline", ["firing"], timeout=20)
    assert time.monotonic() - began >= 5.0, "offline before 3 × report_interval_s of silence"
    doc = crew.on("/eb-quiet/offline")[0].doc
    assert doc["cause"] == "silent"
    assert doc["threshold"] == 6.0
    quiet.send(now_ms(), fill_pct=20.5)
    crew.wait("/eb-quiet/offline", ["firing", "resolved", ""], timeout=10)
    assert crew.on("/eb-quiet/offline")[1].doc["cause"] == "back_online"
    rows = wait_history(influxd, influx_db, "alert", 2, "\"alert\" = 'offline'")
    assert [r["state"] for r in rows] == ["firing", "resolved"]


def test_rvm_bin_and_mode_alerts(
    mosquitto: Any,
    influxd: Any,
    influx_db: str,
    make_ingest: MakeIngest,
    tmp_path: Path,
    crew: Crew,
    pub: Publisher,
    region: str,
) -> None:
    start_ingest(make_ingest, mosquitto, influxd, influx_db, tmp_path, region)
    rvm = Device(pub, f"taza/v1/{region}/rvm/rvm-1/status")
    t = now_ms() - 10 * MIN
    rvm.send(t, bins={"pet": 60.0, "alu": 30.0}, mode="ok", faults=[])
    rvm.send(t + MIN, bins={"pet": 86.0, "alu": 31.0}, mode="jam", faults=["door_open"])
    crew.wait("/rvm-1/bin_full_pet", ["firing"])
    crew.wait("/rvm-1/jam", ["firing"])
    crew.wait("/rvm-1/door_open", ["firing"])
    assert crew.on("/rvm-1/bin_full_pet")[0].doc["value"] == 86.0
    assert crew.on("/rvm-1/jam")[0].doc["kind"] == "rvm"
    assert crew.on("/rvm-1/bin_full_alu") == []
    rvm.send(t + 2 * MIN, bins={"pet": 3.0, "alu": 31.0}, mode="ok", faults=[])
    for alert, cause in (("bin_full_pet", "collected"), ("jam", None), ("door_open", None)):
        crew.wait(f"/rvm-1/{alert}", ["firing", "resolved", ""])
        if cause is not None:
            assert crew.on(f"/rvm-1/{alert}")[1].doc["cause"] == cause
    assert retained_now(mosquitto, region) == {}


def test_a_redelivered_batch_changes_nothing(
    mosquitto: Any,
    influxd: Any,
    influx_db: str,
    make_ingest: MakeIngest,
    tmp_path: Path,
    crew: Crew,
    pub: Publisher,
    region: str,
) -> None:
    ingest = start_ingest(make_ingest, mosquitto, influxd, influx_db, tmp_path, region)
    eb = Device(pub, f"taza/v1/{region}/ecobox/eb-1/fill")
    t = now_ms() - 30 * MIN
    t = eb.fills(t, MIN, [70.0, 75.0, 81.0, 83.0, 84.0])
    eb.fills(t, MIN, [5.0, 5.5, 30.0, 6.0])  # a collection and a spike, too
    crew.wait("/eb-1/full", ["firing", "resolved", ""])
    wait_history(influxd, influx_db, "anomaly", 1)
    wait_until(lambda: ingest.metrics().get("taza_fleet_messages_applied_total") == 9, 10, "9")
    before = ingest.metrics()
    events = {k: v for k, v in before.items() if k.startswith("taza_fleet_events_total")}
    seen = len(crew.messages)

    pub.publish(eb.sent)  # the same messages again: what a lost PUBACK makes the broker do
    pub.wait_all_acked()
    wait_until(lambda: ingest.metrics().get("taza_fleet_messages_applied_total") == 18, 10, "18")
    time.sleep(1)
    after = ingest.metrics()
    assert {k: v for k, v in after.items() if k.startswith("taza_fleet_events_total")} == events
    assert len(crew.messages) == seen, "redelivered copies published alerts again"
    assert len(history(influxd, influx_db, "collection")) == 1


def test_a_restart_keeps_alert_state_even_after_kill_9(
    mosquitto: Any,
    influxd: Any,
    influx_db: str,
    make_ingest: MakeIngest,
    tmp_path: Path,
    crew: Crew,
    pub: Publisher,
    region: str,
) -> None:
    """Clean stop (snapshot) and kill -9 (journal since the snapshot): after either restart
    nothing fires again, and a clear that follows is not lost."""
    ingest = start_ingest(make_ingest, mosquitto, influxd, influx_db, tmp_path, region)
    eb1 = Device(pub, f"taza/v1/{region}/ecobox/eb-1/fill")
    eb2 = Device(pub, f"taza/v1/{region}/ecobox/eb-2/fill")
    t = now_ms() - 30 * MIN
    eb1.fills(t, MIN, [78.0, 81.0, 83.0])
    crew.wait("/eb-1/full", ["firing"])
    first = crew.on("/eb-1/full")[0].doc

    assert ingest.stop() == 0
    assert (ingest.data_dir / "fleet" / "snapshot.json").exists()
    ingest.start()
    eb2.fills(t, MIN, [80.0, 82.0, 85.0])  # acknowledged after the last snapshot …
    crew.wait("/eb-2/full", ["firing"])
    ingest.kill()  # … then a crash: only the journal knows eb-2 is full
    synced = len(events(ingest, "fleet_alerts_synced"))
    ingest.start()
    wait_until(
        lambda: len(events(ingest, "fleet_alerts_synced")) > synced,
        15,
        "the retained alerts checked after the restart",
    )
    assert events(ingest, "fleet_alerts_synced")[-1]["republished"] == 0
    restored = events(ingest, "fleet_restored")[-1]
    assert restored["from_snapshot"]
    assert restored["journal_messages"] == 3
    assert restored["firing"] == 2

    eb1.fills(t + 10 * MIN, MIN, [3.0])
    eb2.fills(t + 10 * MIN, MIN, [2.0])
    crew.wait("/eb-1/full", ["firing", "resolved", ""])
    crew.wait("/eb-2/full", ["firing", "resolved", ""])
    assert crew.on("/eb-1/full")[1].doc["since"] == first["since"], "one episode"
    full = history(influxd, influx_db, "alert", "\"alert\" = 'full'")
    assert sorted((r["device_id"], r["state"]) for r in full) == [
        ("eb-1", "firing"),
        ("eb-1", "resolved"),
        ("eb-2", "firing"),
        ("eb-2", "resolved"),
    ], "one episode each: nothing fired again, no clear lost"
    assert retained_now(mosquitto, region) == {}


def test_a_drained_6_hour_backlog_notifies_only_what_is_current(
    mosquitto: Any,
    influxd: Any,
    influx_db: str,
    make_ingest: MakeIngest,
    tmp_path: Path,
    crew: Crew,
    pub: Publisher,
    region: str,
) -> None:
    """Store-and-forward after an outage: six hours of readings arrive at once. The episode
    that began and ended inside them goes to history only; the bin is full now: that is live."""
    ingest = start_ingest(make_ingest, mosquitto, influxd, influx_db, tmp_path, region)
    eb = Device(pub, f"taza/v1/{region}/ecobox/eb-1/fill")
    t = now_ms() - 6 * 60 * MIN
    t = eb.fills(t, 10 * MIN, fill_ramp(60, 90, 3))  # full ~5 h ago
    t = eb.fills(t, 10 * MIN, [4.0, 4.5])  # emptied ~4 h ago
    left = int((now_ms() - 2 * MIN - t) // (10 * MIN)) + 1  # up to ~2 minutes ago
    step = (86 - 8) / (left - 1)
    eb.fills(t, 10 * MIN, [round(8 + i * step, 1) for i in range(left)])  # full again: now
    wait_until(
        lambda: ingest.metrics().get("taza_fleet_messages_applied_total") == eb.seq,
        20,
        "the backlog applied",
    )
    rows = wait_history(influxd, influx_db, "alert", 3, "\"alert\" = 'full'")
    assert [r["state"] for r in rows] == ["firing", "resolved", "firing"]
    crew.wait("/eb-1/full", ["firing"])
    time.sleep(1)
    live = crew.on("/eb-1/full")
    assert len(live) == 1
    assert live[0].doc["episode"] == rows[2]["episode"]
    assert len(history(influxd, influx_db, "collection")) == 1
    assert set(retained_now(mosquitto, region)) == {f"taza/v1/alerts/{region}/eb-1/full"}


def test_alerts_go_out_while_the_database_is_down_and_their_history_follows(
    mosquitto: Any,
    influxd: Any,
    influx_db: str,
    make_ingest: MakeIngest,
    tmp_path: Path,
    crew: Crew,
    pub: Publisher,
    region: str,
) -> None:
    """History lines wait in data_dir/fleet-spool (durable) and reach the database when it
    is back; crews are not kept waiting for the database. The outage: every write reset by
    a proxy in front of the real influxd."""
    proxy = FaultProxy(influxd.url).start()
    try:
        fleet = tmp_path / "fleet.csv"
        fleet.write_text(FLEET.replace("almaty", region).replace("astana", region))
        ingest = make_ingest(
            mosquitto.url, proxy.url, TAZA_INFLUX_DB=influx_db, TAZA_REGISTRY=str(fleet)
        ).start()
        proxy.inject(Fault(reset=True))
        eb = Device(pub, f"taza/v1/{region}/ecobox/eb-1/fill")
        t = eb.fills(now_ms() - 20 * MIN, MIN, [70.0, 78.0, 81.0, 84.0])
        eb.fills(t, MIN, [2.0])
        crew.wait("/eb-1/full", ["firing", "resolved", ""], timeout=30)
        wait_until(
            lambda: ingest.metrics().get("taza_fleet_history_lines_spooled_total", 0) >= 3,
            20,
            "history spooled",
        )
        assert list((ingest.data_dir / "fleet-spool").glob("*.spool"))
        assert history(influxd, influx_db, "alert") == []
        proxy.inject(None)
        rows = wait_history(influxd, influx_db, "alert", 2, timeout=40)
        assert [r["state"] for r in rows] == ["firing", "resolved"]
        assert len(wait_history(influxd, influx_db, "collection", 1)) == 1
        wait_until(
            lambda: not list((ingest.data_dir / "fleet-spool").glob("*.spool")),
            20,
            "fleet spool empty",
        )
    finally:
        proxy.stop()


def _quiet_bin() -> tuple[dict[str, Any], list[Message]]:
    """One eco-box's snapshot entry after two days of simulated history, and its next message."""
    device = spec("eb-sim")
    fleet = Fleet()
    msgs = list(simulated(device, days=2))
    for m in msgs[:-1]:
        fleet.apply(m, device)
    return orjson.loads(fleet.snapshot())["d"]["eb-sim"], msgs[-1:]


def _full_bin() -> tuple[dict[str, Any], list[Message]]:
    """A bin filled to 88 % (``full`` firing), and its next reading."""
    b = Bin(Fleet(), spec("eb-sim"))
    b.fills([40.0 + 3 * i for i in range(17)])
    following = Message(b.fill_topic(), b.t + b.step_ms, b.seq, Fill(89.0))
    return orjson.loads(b.fleet.snapshot())["d"]["eb-sim"], [following]


def test_start_up_with_10k_devices_history(
    mosquitto: Any,
    influxd: Any,
    influx_db: str,
    make_ingest: MakeIngest,
    tmp_path: Path,
    region: str,
) -> None:
    """10k devices in the snapshot (a tenth with ``full`` firing) and a journal of 10k
    messages since it: taza-ingest is ready within seconds, and a crew app that connects
    then sees exactly the 1,000 firing alerts (published again: this broker never had them)."""
    n = 10_000
    quiet, quiet_next = _quiet_bin()
    full, full_next = _full_bin()
    assert "full" in full["a"]
    assert "full" not in quiet["a"]
    heard = now_ms()
    ids = [f"eb-{i:05d}" for i in range(n)]
    states = {}
    for i, device_id in enumerate(ids):
        entry = dict(full if i % 10 == 0 else quiet)
        entry["h"] = heard  # heard just now on the wall clock: not offline
        entry["r"] = region
        states[device_id] = entry
    ingest_dir = tmp_path / "ingest0"
    (ingest_dir / "fleet").mkdir(parents=True)
    (ingest_dir / "fleet" / "snapshot.json").write_bytes(orjson.dumps({"v": 1, "d": states}))
    journal = Journal(ingest_dir / "fleet" / "journal")
    for start in range(0, n, 1000):
        batch = []
        for i, device_id in enumerate(ids[start : start + 1000], start):
            m = (full_next if i % 10 == 0 else quiet_next)[0]
            topic = dataclasses.replace(m.topic, device_id=device_id, region=region)
            message = dataclasses.replace(m, topic=topic)
            received = datetime.fromtimestamp(message.ts_ms / 1000, UTC)
            source = Source(str(topic), to_payload(message), received)
            batch.append(Accepted(message, None, source))
        journal.append(heard, batch)
    journal.close()
    rows = "".join(f"{d},ecobox,{region},43.25,76.9,240,plastic,residential,900\n" for d in ids)
    fleet_file = tmp_path / "fleet.csv"
    fleet_file.write_text(FLEET.splitlines()[0] + "\n" + rows)

    ingest = make_ingest(
        mosquitto.url, influxd.url, TAZA_INFLUX_DB=influx_db, TAZA_REGISTRY=str(fleet_file)
    )
    assert ingest.data_dir == ingest_dir
    began = time.monotonic()
    ingest.start(timeout=60)
    ready_s = time.monotonic() - began
    restored = events(ingest, "fleet_restored")[0]
    print(
        f"\nstart-up with {n} devices' state + {n} journal messages: restore "
        f"{restored['seconds']} s (snapshot {restored['snapshot_seconds']} s), "
        f"process start → /readyz {ready_s:.2f} s"
    )
    assert restored["devices"] == n
    assert restored["journal_messages"] == n
    assert restored["firing"] == n // 10
    assert restored["seconds"] < 10
    wait_until(lambda: bool(events(ingest, "fleet_alerts_synced")), 30, "retained alerts synced")
    synced = events(ingest, "fleet_alerts_synced")[0]
    assert synced["republished"] == n // 10
    wait_until(lambda: len(retained_now(mosquitto, region)) >= n // 10, 30, "1000 retained alerts")
    late = retained_now(mosquitto, region)
    assert {t.split("/")[4] for t in late} == set(ids[::10])
