"""The API and the ``taza`` CLI against the real stack: mosquitto → taza-ingest → influxd.

A simulated fleet (``taza-sim run``, with its ground-truth log) plus one hand-made bin that
fills, goes full and is emptied. Every answer is checked against what was published: the
current state against an independent ``Fleet`` fed the same messages, history against the
messages themselves. Then schemathesis fuzzes the running service from its OpenAPI document.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from devices import Ignored, Rejected, decode
from devices.registry import Registry
from devstack.ingest_process import INGEST, IngestProcess, wait_until
from devstack.publisher import Publisher
from devstack.servers import InfluxDB1, Mosquitto, free_port
from ingest.api.params import duration_s
from ingest.fleet import AlertTransition, Collection, Fleet
from ingest.fleet.output import rfc3339
from operators.cli import main as taza
from tests.conftest import REPO
from tests.plan_env import shift_around_now

pytestmark = pytest.mark.integration

SIM = [sys.executable, "-m", "simulator.cli"]
CRAFTED = "eb-crafted"
CRAFTED_LEVELS = [40.0 + 5 * i for i in range(12)] + [96.0, 97.0, 4.0, 6.0, 8.0]
# rises to 95 (full after consecutive readings ≥ 80), then emptied to 4 %: one collection
FULL = "eb-full"
FULL_LEVELS = [84.0, 86.0, 88.0, 90.0]  # due now in any collection plan


@dataclass
class Stack:
    ingest: IngestProcess
    influxd: InfluxDB1
    db: str
    registry: Registry
    replay: Fleet  # an independent fleet state fed exactly what was published
    events: list[Any]
    published: list[dict[str, Any]]
    start: datetime
    end: datetime

    @property
    def api(self) -> str:
        return self.ingest.url + "/api/v1"

    def get(self, path: str, **params: Any) -> Any:
        r = httpx.get(self.api + path, params=params, timeout=30, trust_env=False)
        assert r.status_code == 200, r.text
        return r.json()


def _sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SIM, *args], capture_output=True, text=True, timeout=120, cwd=REPO, check=True
    )


def _crafted(now: datetime) -> list[tuple[str, bytes, datetime]]:
    t0 = now - timedelta(hours=5)
    out = []
    for device_id, levels in ((CRAFTED, CRAFTED_LEVELS), (FULL, FULL_LEVELS)):
        for seq, pct in enumerate(levels):
            ts = t0 + timedelta(minutes=15 * seq)
            body = {"ts": int(ts.timestamp() * 1000), "seq": seq, "fill_pct": pct}
            topic = f"taza/v1/almaty/ecobox/{device_id}/fill"
            out.append((topic, json.dumps(body).encode(), ts))
    return out


SIM_SPAN = timedelta(hours=4)  # --speed 2400 for 6 s
LOCAL = timedelta(hours=5)  # the regions' UTC offset (simulator/fleet.py)


def _sim_start(now: datetime) -> datetime:
    """The simulated span ends now — unless that is before 09:00 local time: RVMs are open
    07:00–22:00 (simulator/profiles.py), and a span with less than two open hours took
    nothing (the RVM tests failed from 02:00 to 07:00 local). Then it ends at 22:00 the
    evening before."""
    local = now + LOCAL
    if local.hour >= 9:
        return now - SIM_SPAN
    evening = (local - timedelta(days=1)).replace(hour=22, minute=0, second=0, microsecond=0)
    return evening - LOCAL - SIM_SPAN


@pytest.fixture(scope="module")
def stack(
    module_broker: Mosquitto, influxd: InfluxDB1, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    mosquitto = module_broker
    tmp = tmp_path_factory.mktemp("api")
    fleet_file = tmp / "fleet.csv"
    _sim("fleet", "--ecoboxes", "24", "--rvms", "6", "--regions", "almaty,astana",
         "--seed", "11", "--out", str(fleet_file))  # fmt: skip
    registry_file = tmp / "registry.csv"  # the simulated fleet and the hand-made bin
    registry_file.write_text(
        fleet_file.read_text()
        + f"{CRAFTED},ecobox,almaty,43.25,76.91,1100,plastic,park,900\n"
        + f"{FULL},ecobox,almaty,43.26,76.92,240,mixed,park,900\n"
    )
    registry = Registry.load(registry_file)
    db = "api_e2e"
    influxd.create_database(db)
    ingest = IngestProcess(
        tmp / "ingest",
        {
            "TAZA_MQTT_URL": mosquitto.url,
            "TAZA_MQTT_CLIENT_ID": "taza-test-api-e2e",
            "TAZA_INFLUX_URL": influxd.url,
            "TAZA_INFLUX_DB": db,
            "TAZA_REGISTRY": str(registry_file),
            "TAZA_PLAN_TIME_LIMIT_S": "1",  # bounded: schemathesis asks for many plans
            **shift_around_now(),
        },
        free_port(),
    ).start()
    try:
        now = datetime.now(UTC)
        sim_start = _sim_start(now)
        start = min(now - timedelta(hours=6), sim_start - timedelta(minutes=10))
        crafted = _crafted(now)
        pub = Publisher(mosquitto.host, mosquitto.port, "api-e2e-crafted")
        pub.publish((t, p) for t, p, _ in crafted)
        pub.wait_all_acked()
        pub.close()
        log = tmp / "run.jsonl"
        _sim("run", "--broker", mosquitto.url, "--fleet", str(fleet_file), "--seed", "11",
             "--speed", "2400", "--duration", "6s", "--client-prefix", "sim-api-e2e",
             "--start", sim_start.isoformat(),
             "--log", str(log), "--json", "--quiet")  # fmt: skip
        published = [json.loads(x) for x in log.read_text().splitlines()]
        total = len(published) + len(crafted)
        wait_until(
            lambda: ingest.metrics().get("taza_messages_received_total", 0) >= total,
            30,
            "every message received",
        )
        wait_until(lambda: ingest.metrics()["taza_queue_depth"] == 0, 30, "all acknowledged")

        def history_written() -> bool:
            m = ingest.metrics()
            events = sum(v for k, v in m.items() if k.startswith("taza_fleet_events_total{"))
            return events > 0 and m.get("taza_fleet_history_lines_written_total") == events

        wait_until(history_written, 30, "fleet history lines in InfluxDB")
        replay = Fleet()
        events: list[Any] = []
        for topic, payload, ts in crafted:
            msg = decode(topic, payload, ts + timedelta(seconds=1))
            events += replay.apply(msg, registry.get(msg.topic.device_id))
        for e in published:
            if e["fault"] or not e["acked"]:
                continue
            received = datetime.fromisoformat(e["t"].replace("Z", "+00:00"))
            try:
                msg = decode(e["topic"], e["payload"].encode(), received)
            except (Rejected, Ignored):
                continue
            events += replay.apply(msg, registry.get(msg.topic.device_id))
        end = datetime.now(UTC) + timedelta(minutes=1)
        yield Stack(ingest, influxd, db, registry, replay, events, published, start, end)
    finally:
        if ingest.proc is not None and ingest.proc.poll() is None:
            ingest.stop()


def test_devices_are_the_fleet_file_with_their_state(stack: Stack) -> None:
    items = stack.get("/devices")["items"]
    assert [d["device_id"] for d in items] == sorted(stack.registry)
    for d in items:
        st = stack.replay.get(d["device_id"])
        assert st is not None, f"{d['device_id']} published nothing?"
        assert d["last_seen"] == rfc3339(st.last_seen_ms)
        assert d["online"] is st.online
        assert d["alerts"] == sorted(st.alerts)
        if d["kind"] == "ecobox":
            assert d["fill_pct"] == st.level
        assert d["region"] == stack.registry[d["device_id"]].region


def test_fill_levels_match_what_was_published(stack: Stack) -> None:
    items = stack.get("/fill-levels")["items"]
    expected = {
        s.source.device_id: s
        for s in stack.replay.devices.values()
        if s.source.kind == "ecobox" and s.level is not None
    }
    assert {i["device_id"] for i in items} == set(expected)
    assert [i["fill_pct"] for i in items] == sorted((i["fill_pct"] for i in items), reverse=True)
    for i in items:
        st = expected[i["device_id"]]
        info = stack.registry[i["device_id"]]
        assert i["fill_pct"] == st.level
        assert (i["lat"], i["lon"], i["capacity_l"]) == (info.lat, info.lon, info.capacity_l)
        f = st.forecast_now()
        assert i["fill_rate_pct_per_h"] == (None if f is None else f.rate_pct_per_h)
        full_at = None if f is None or f.full_at_ms is None else rfc3339(f.full_at_ms)
        assert i["forecast_full_at"] == full_at
    crafted = next(i for i in items if i["device_id"] == CRAFTED)
    assert crafted["fill_pct"] == CRAFTED_LEVELS[-1]
    almaty = stack.get("/fill-levels", region="almaty", min_pct=5)["items"]
    assert {i["device_id"] for i in almaty} == {
        d for d, s in expected.items() if s.source.region == "almaty" and (s.level or 0) >= 5
    }


def test_current_alerts_match_an_independent_fleet_state(stack: Stack) -> None:
    """Same alerts; same episodes except ``offline``, which is timed by the service's own
    clock when the Last Will arrives (the replay cannot know that instant)."""
    got = stack.get("/alerts")["items"]
    firing = list(stack.replay.firing())
    assert {(a["device_id"], a["alert"]) for a in got} == {
        (t.source.device_id, t.alert) for t in firing
    }
    assert {a["episode"] for a in got if a["alert"] != "offline"} == {
        t.episode for t in firing if t.alert != "offline"
    }
    assert any(a["alert"] != "offline" for a in got), "nothing but offline fired?"


def test_collections_are_the_emptyings_published(stack: Stack) -> None:
    span = {"from": rfc3339(int(stack.start.timestamp() * 1000)),
            "to": rfc3339(int(stack.end.timestamp() * 1000))}  # fmt: skip
    items = stack.get("/collections", **span)["items"]
    want = sorted(
        ((e.source.device_id, rfc3339(e.ts_ms), e.fill_before_pct, e.fill_after_pct)
         for e in stack.events if type(e) is Collection),
        key=lambda x: x[1], reverse=True,
    )  # fmt: skip
    assert (CRAFTED, CRAFTED_LEVELS[13], CRAFTED_LEVELS[14]) in {(w[0], w[2], w[3]) for w in want}
    assert [(c["device_id"], c["time"], c["fill_before_pct"], c["fill_after_pct"])
            for c in items] == want  # fmt: skip
    crafted = next(c for c in items if c["device_id"] == CRAFTED)
    assert crafted["litres"] == pytest.approx(1100 * (97.0 - 4.0) / 100)
    only = stack.get("/collections", device_id=CRAFTED, **span)["items"]
    assert [c["device_id"] for c in only] == [CRAFTED]


def test_alert_history_is_every_transition(stack: Stack) -> None:
    span = {"from": rfc3339(int(stack.start.timestamp() * 1000)),
            "to": rfc3339(int(stack.end.timestamp() * 1000))}  # fmt: skip
    items = stack.get("/alerts/history", **span)["items"]
    want = Counter(
        (e.episode, e.state.value)
        for e in stack.events
        if type(e) is AlertTransition and e.alert != "offline"  # see above: the service's clock
    )
    assert Counter((a["episode"], a["state"]) for a in items if a["alert"] != "offline") == want
    full = [a for a in items if a["device_id"] == CRAFTED and a["alert"] == "full"]
    assert sorted(a["state"] for a in full) == ["firing", "resolved"]
    assert [a["time"] for a in items] == sorted((a["time"] for a in items), reverse=True)
    resolved = stack.get("/alerts/history", state="resolved", **span)["items"]
    assert resolved
    assert resolved == [a for a in items if a["state"] == "resolved"]


def test_rvm_summary_adds_up_the_deposits_published(stack: Stack) -> None:
    by_material: Counter[str] = Counter()
    txns: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    seen: set[tuple[str, str]] = set()
    for e in stack.published:
        if e["fault"] or not e["topic"].endswith("/deposit"):
            continue
        body = json.loads(e["payload"])
        if (e["device_id"], body["txn_id"]) in seen:
            continue  # a redelivered copy is stored once
        seen.add((e["device_id"], body["txn_id"]))
        for item in body["items"]:
            by_material[item["material"]] += item["count"]
        t = txns[e["device_id"]]
        t[0] += 1
        t[1] += body.get("rejected", 0)
        t[2] += body.get("refund_minor", 0)
    assert sum(by_material.values()) > 0, "the simulated RVMs took nothing?"
    span = {"from": rfc3339(int(stack.start.timestamp() * 1000)),
            "to": rfc3339(int(stack.end.timestamp() * 1000))}  # fmt: skip
    doc = stack.get("/rvm/summary", **span)
    assert doc["containers_by_material"] == dict(sorted(by_material.items()))
    assert doc["containers"] == sum(by_material.values())
    assert doc["transactions"] == sum(t[0] for t in txns.values())
    assert doc["rejected"] == sum(t[1] for t in txns.values())
    assert doc["refund_minor"] == sum(t[2] for t in txns.values())
    assert {d["device_id"]: [d["transactions"], d["rejected"], d["refund_minor"]]
            for d in doc["devices"]} == dict(txns)  # fmt: skip
    astana = stack.get("/rvm/summary", region="astana", **span)
    assert {d["region"] for d in astana["devices"]} <= {"astana"}


def test_history_is_the_readings_downsampled(stack: Stack) -> None:
    span = {"from": rfc3339(int(stack.start.timestamp() * 1000)),
            "to": rfc3339(int(stack.end.timestamp() * 1000))}  # fmt: skip
    doc = stack.get(f"/devices/{CRAFTED}/history", every="1h", **span)
    assert doc["measurement"] == "fill"
    assert sum(p["readings"] for p in doc["points"]) == len(CRAFTED_LEVELS)
    assert max(p["max_pct"] for p in doc["points"]) == max(CRAFTED_LEVELS)
    assert min(p["min_pct"] for p in doc["points"]) == min(CRAFTED_LEVELS)
    hours = [datetime.fromisoformat(p["time"]) for p in doc["points"]]
    assert all(h.minute == 0 and h.second == 0 for h in hours)
    fine = stack.get(f"/devices/{CRAFTED}/history", every="1s", **span)  # > 5000 intervals
    assert duration_s(fine["every"]) * 5000 >= (stack.end - stack.start).total_seconds()
    assert sum(p["readings"] for p in fine["points"]) == len(CRAFTED_LEVELS)
    coarse = stack.get(f"/devices/{CRAFTED}/history", every="99999d", **span)
    assert coarse["every"] == "366d"
    assert sum(p["readings"] for p in coarse["points"]) == len(CRAFTED_LEVELS)
    anomalies = [e for e in stack.events if type(e).__name__ == "Anomaly"]
    api_anomalies = []
    for device_id in {a.source.device_id for a in anomalies}:
        api_anomalies += stack.get(f"/devices/{device_id}/history", **span)["anomalies"]
    assert len(api_anomalies) == len(anomalies)


def test_cli_gives_the_api_answers(stack: Stack) -> None:
    span = ["--from", rfc3339(int(stack.start.timestamp() * 1000)),
            "--to", rfc3339(int(stack.end.timestamp() * 1000))]  # fmt: skip
    q = {"from": span[1], "to": span[3]}
    cases: list[tuple[list[str], str, dict[str, Any]]] = [
        (["fill-levels"], "/fill-levels", {}),
        (["fill-levels", "--region", "astana", "--min-pct", "10"], "/fill-levels",
         {"region": "astana", "min_pct": 10}),
        (["devices"], "/devices", {}),
        (["devices", "--region", "almaty"], "/devices", {"region": "almaty"}),
        (["alerts"], "/alerts", {}),
        (["alerts", "--history", *span], "/alerts/history", q),
        (["collections", *span], "/collections", q),
        (["rvm", "--region", "almaty", *span], "/rvm/summary", {"region": "almaty", **q}),
        (["devices", "history", CRAFTED, "--every", "30m", *span],
         f"/devices/{CRAFTED}/history", {"every": "30m", **q}),
    ]  # fmt: skip
    runner = CliRunner()
    for args, path, params in cases:
        result = runner.invoke(taza, [*args, "--json", "--url", stack.ingest.url])
        assert result.exit_code == 0, (args, result.output)
        assert json.loads(result.output) == stack.get(path, **params), args
        table = runner.invoke(taza, [*args, "--url", stack.ingest.url])
        assert table.exit_code == 0, (args, table.output)
    listed = runner.invoke(taza, ["fill-levels", "--url", stack.ingest.url], env={"COLUMNS": "160"})
    row = next(line for line in listed.output.splitlines() if CRAFTED in line)
    assert f"{CRAFTED_LEVELS[-1]:.1f}" in row


def test_collection_plan_routes_the_due_bins(stack: Stack) -> None:
    levels = {i["device_id"]: i for i in stack.get("/fill-levels", region="almaty")["items"]}
    plan = stack.get("/collection-plan", region="almaty", horizon="2h")
    stops = [s["device_id"] for r in plan["routes"] for s in r["stops"]]
    left = [u["device_id"] for u in plan["unassigned"]]
    assert FULL in stops
    assert CRAFTED not in stops + left, "an emptied bin is not due"
    limit = datetime.now(UTC) + timedelta(hours=2, minutes=1)
    for device_id in stops + left:
        lv = levels[device_id]
        due_at = lv["forecast_full_at"]
        assert lv["fill_pct"] >= 80 or (due_at and datetime.fromisoformat(due_at) <= limit)
    due_now = {d for d, lv in levels.items() if lv["fill_pct"] >= 80}
    assert due_now <= set(stops + left)
    assert plan["bins_due"] == len(stops) + len(left)
    geo = stack.get("/collection-plan", region="almaty", horizon="2h", format="geojson")
    lines = [f for f in geo["features"] if f["geometry"]["type"] == "LineString"]
    assert len(lines) == len(plan["routes"])
    r = httpx.get(stack.api + "/collection-plan", params={"region": "nowhere"}, trust_env=False)
    assert (r.status_code, r.json()["reason"]) == (404, "unknown_region")
    cli = CliRunner().invoke(
        taza, ["plan", "--region", "almaty", "--horizon", "2h", "--json", "--url", stack.ingest.url]
    )
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.output) == stack.get("/collection-plan", region="almaty", horizon="2h")
    text = CliRunner().invoke(taza, ["plan", "--region", "almaty", "--url", stack.ingest.url])
    assert FULL in text.output


def test_cli_errors_have_exit_codes(stack: Stack) -> None:
    runner = CliRunner()
    bad = runner.invoke(taza, ["fill-levels", "--region", "Nope!", "--url", stack.ingest.url])
    assert bad.exit_code == 2
    assert "region" in bad.output
    missing = runner.invoke(taza, ["devices", "history", "eb-none", "--url", stack.ingest.url])
    assert missing.exit_code == 1
    assert "unknown_device" in missing.output
    down = runner.invoke(taza, ["alerts", "--url", f"http://127.0.0.1:{free_port()}"])
    assert down.exit_code == 1
    assert "no answer" in down.output
    env = runner.invoke(taza, ["alerts", "--json"], env={"TAZA_API_URL": stack.ingest.url})
    assert env.exit_code == 0
    assert "items" in json.loads(env.output)


def test_schemathesis_finds_nothing(stack: Stack) -> None:
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert exe, "schemathesis is a dev dependency: pip install -e '.[dev]'"
    out = subprocess.run(
        [exe, "run", f"{stack.api}/openapi.json", "--checks", "all", "--workers", "1",
         "--max-examples", "25", "--max-time", "40", "--no-color",
         "--request-timeout", "10", "--seed", "1"],
        capture_output=True, text=True, timeout=180, cwd=REPO,
        env={**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    with httpx.Client(trust_env=False) as c:
        operations = len(c.get(f"{stack.api}/openapi.json").json()["paths"])
    assert f"{operations} selected / {operations} total" in out.stdout, out.stdout[-3000:]


def test_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        out = subprocess.run(
            [*INGEST, "run"],
            env={**os.environ, "TAZA_DATA_DIR": str(tmp_path / "d"),
                 "TAZA_HTTP_ADDR": f"127.0.0.1:{port}",
                 "TAZA_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}"},
            capture_output=True, text=True, timeout=30, cwd=REPO,
        )  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"TAZA_HTTP_ADDR 127.0.0.1:{port}" in out.stderr
    assert "in use" in out.stderr
    assert "Traceback" not in out.stderr


def test_sigterm_while_serving_the_api_exits_0(stack: Stack) -> None:
    """Last in the module: stops the shared service."""
    with httpx.Client(base_url=stack.ingest.url, trust_env=False) as c:
        assert c.get("/api/v1/fill-levels").status_code == 200
    assert stack.ingest.stop(signal.SIGTERM) == 0
    events = [e.get("event") for e in stack.ingest.log_events()]
    assert "taza_ingest_stopped" in events
