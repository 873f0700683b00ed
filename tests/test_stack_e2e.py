"""The whole stack: ``taza-sim run`` (one MQTT connection per device, deliberate faults) →
real mosquitto → ``taza-ingest`` → real influxd, proven by ``taza-sim verify``: nothing lost,
nothing wrongly accepted, every fault in the dead-letter store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devstack.ingest_process import wait_until
from tests.conftest import REPO, MakeIngest

pytestmark = pytest.mark.integration

SIM = [sys.executable, "-m", "simulator.cli"]


def sim(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SIM, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, check=check
    )


def test_simulated_fleet_through_ingest_verified(
    tmp_path: Path, mosquitto: Any, influxd: Any, influx_db: str, make_ingest: MakeIngest
) -> None:
    fleet = tmp_path / "fleet.csv"
    sim(
        "fleet",
        "--ecoboxes",
        "40",
        "--rvms",
        "6",
        "--regions",
        "almaty,astana",
        "--seed",
        "3",
        "--out",
        str(fleet),
    )
    ingest = make_ingest(
        mosquitto.url, influxd.url, TAZA_INFLUX_DB=influx_db, TAZA_REGISTRY=str(fleet)
    ).start()
    log = tmp_path / "run.jsonl"
    run = sim(
        "run",
        "--broker",
        mosquitto.url,
        "--fleet",
        str(fleet),
        "--seed",
        "3",
        "--speed",
        "1440",
        "--duration",
        "8s",
        "--malformed-rate",
        "0.03",
        "--duplicate-rate",
        "0.02",
        "--out-of-order-rate",
        "0.02",
        "--client-prefix",
        f"sim-{influx_db}",
        "--log",
        str(log),
        "--json",
        "--quiet",
    )
    published = [json.loads(x) for x in log.read_text().splitlines()]
    faults = [e for e in published if e["fault"]]
    assert len(published) > 500, run.stderr[-2000:]
    assert any(e["fault"] not in ("duplicate", "out_of_order") for e in faults)
    wait_until(lambda: ingest.metrics()["taza_queue_depth"] == 0, 30, "everything acknowledged")
    wait_until(
        lambda: ingest.metrics()["taza_messages_received_total"] >= len(published),
        30,
        "all received",
    )

    out = sim(
        "verify",
        "--log",
        str(log),
        "--influx-url",
        influxd.url,
        "--db",
        influx_db,
        "--deadletter",
        str(ingest.data_dir / "deadletter"),
        "--json",
        check=False,
    )
    report = json.loads(out.stdout)
    totals = report["totals"]
    assert out.returncode == 0, json.dumps(report["examples"], indent=1)[:3000]
    assert report["ok"]
    assert totals["lost"] == 0
    assert totals["wrongly_accepted"] == 0
    assert totals["not_in_deadletter"] == 0
    assert totals["delivered"] == totals["messages"] > 500
    assert totals["correctly_rejected"] == totals["faulty"] > 0
    m = ingest.metrics()
    assert m.get("taza_messages_unregistered_total", 0) == 0, "every simulated device is registered"
