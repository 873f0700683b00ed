"""`taza-sim verify` against a real influxd: it names exactly what is lost or wrongly accepted."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

import devices
from devices import ExitCode, format_topic
from devstack.servers import InfluxDB1
from simulator.cli import main
from simulator.fleet import generate
from simulator.groundtruth import LogWriter, read_log
from simulator.stream import PUBLISH, FaultConfig, Outgoing, fleet_stream
from simulator.verify import Influx, verify

pytestmark = pytest.mark.integration


def _write_log(path: Path) -> list[Outgoing]:
    """A log as `taza-sim run` writes it, without a broker: 4 h of 12 devices, with faults.

    The span ends at the last 14:00 Almaty time (09:00 UTC), so the RVMs are open.
    """
    specs = generate(ecoboxes=10, rvms=2, regions=["almaty"], seed=11, rvm_interval="5m")
    end = (time.time() - 9 * 3600) // 86400 * 86400 + 9 * 3600
    start = end - 4 * 3600
    faults = FaultConfig(malformed_rate=0.08, duplicate_rate=0.05, out_of_order_rate=0.03)
    outs = [
        o
        for o in fleet_stream(specs, seed=11, start=start, end=end, faults=faults)
        if o.action == PUBLISH
    ]
    log = LogWriter(path)
    for out in outs:
        log.write(out, out.sim_t + 1.0)  # "acknowledged" a second after its simulated time
    device_id = specs[0].device_id
    topic = format_topic("almaty", "ecobox", device_id, "state")
    state = Outgoing(end, device_id, PUBLISH, topic, b"online", True, "state")
    log.write(state, end)
    log.close()
    return outs


def _expected_lines(path: Path) -> dict[int, list[str]]:
    """Encoded points of every accepted log line, by line number (as ingest would write them)."""
    lines: dict[int, list[str]] = {}
    for e in read_log(path):
        if e.channel == "state":
            continue
        try:
            lines[e.line] = devices.encode(devices.decode(e.topic, e.payload, e.t))
        except devices.Rejected:
            continue
    return lines


def test_verify_names_exactly_the_lost_the_wrongly_accepted_and_the_extra(
    tmp_path: Path, influxd: InfluxDB1, influx_db: str
) -> None:
    log_path = tmp_path / "run.jsonl"
    outs = _write_log(log_path)
    assert sum(1 for o in outs if o.expect == "reject") >= 5
    assert any(o.fault == "duplicate" for o in outs)
    expected = _expected_lines(log_path)
    entries = {e.line: e for e in read_log(log_path)}

    # Leave three distinct messages out (one of them an RVM deposit: several points each).
    deposit_line = next(n for n in expected if entries[n].channel == "deposit")
    fill_lines = [n for n in expected if entries[n].channel == "fill"][5:7]
    removed = {deposit_line, *fill_lines}
    removed_payloads = {entries[n].payload for n in removed}
    written = [
        line
        for n, ls in expected.items()
        if entries[n].payload not in removed_payloads
        for line in ls
    ]
    # One faulty message slips through, as a lax ingest would have written it.
    faulty = next(e for e in entries.values() if e.expect == "reject" and e.channel == "fill")
    assert faulty.ts_ms is not None
    assert faulty.seq is not None
    slot = faulty.ts_ms * 1_000_000 + (faulty.seq % 10_000) * 100
    written.append(
        f"fill,device_id={faulty.device_id},kind=ecobox,region=almaty "
        f"fill_pct=180.0,seq={faulty.seq}i {slot}"
    )
    # And one point that no message explains (e.g. another writer's data).
    stray = next(e for e in entries.values() if e.channel == "fill" and e.expect is None)
    assert stray.ts_ms is not None
    written.append(
        f"fill,device_id={stray.device_id},kind=ecobox,region=almaty "
        f"fill_pct=1.0,seq=999999i {stray.ts_ms * 1_000_000 + 55}"
    )
    influxd.write(written, influx_db)

    report = verify(log_path, Influx(influxd.url, influx_db))
    totals = report.totals()

    lost_lines = {item["line"] for item in report.lost}
    removed_first = {min(n for n in expected if entries[n].payload == p) for p in removed_payloads}
    assert lost_lines == removed_first
    assert totals["lost"] == 3
    assert totals["partial"] == 0
    assert [w["line"] for w in report.wrongly_accepted] == [faulty.line]
    assert totals["wrongly_accepted"] == 1
    assert totals["duplicated"] == 1
    assert report.duplicated[0]["device_id"] == stray.device_id
    n_faulty = len({(e.topic, e.payload) for e in entries.values() if e.expect == "reject"})
    assert totals["correctly_rejected"] == n_faulty - 1
    distinct_valid = len({entries[n].payload for n in expected})
    assert totals["messages"] == distinct_valid
    assert totals["delivered"] == distinct_valid - 3
    copies = sum(1 for e in entries.values() if e.fault == "duplicate")
    assert totals["copies_sent"] == copies  # sent twice, delivered once, not "duplicated"
    assert totals["state"] == 1
    assert not report.ok

    # The CLI says the same and fails.
    result = CliRunner().invoke(
        main,
        [
            "verify",
            "--log",
            str(log_path),
            "--influx-url",
            influxd.url,
            "--db",
            influx_db,
            "--json",
        ],
    )
    assert result.exit_code == ExitCode.VERIFY_MISMATCH, result.output
    doc = json.loads(result.output)
    assert doc["totals"]["lost"] == 3
    assert doc["totals"]["wrongly_accepted"] == 1


def test_verify_passes_a_complete_database_and_checks_the_deadletter_store(
    tmp_path: Path, influxd: InfluxDB1, influx_db: str
) -> None:
    log_path = tmp_path / "run.jsonl"
    _write_log(log_path)
    expected = _expected_lines(log_path)
    influxd.write([line for ls in expected.values() for line in ls], influx_db)
    rejected = [e for e in read_log(log_path) if e.expect == "reject"]

    dead = tmp_path / "deadletter"
    dead.mkdir()
    now = datetime.now(UTC).isoformat()
    with (dead / "deadletter.jsonl").open("wb") as fh:
        for e in rejected[1:]:  # the first one never made it to the store
            record = {
                "topic": e.topic,
                "payload": base64.b64encode(e.payload).decode(),
                "reason": e.reason,
                "detail": "",
                "received_at": now,
            }
            fh.write(orjson.dumps(record) + b"\n")

    influx = Influx(influxd.url, influx_db)
    report = verify(log_path, influx)
    assert report.ok, report.as_dict()
    totals = report.totals()
    assert totals["lost"] == totals["wrongly_accepted"] == totals["duplicated"] == 0
    assert totals["delivered"] == totals["messages"] > 100

    with_dead = verify(log_path, influx, deadletter=dead)
    assert with_dead.totals()["not_in_deadletter"] == 1
    assert with_dead.not_in_deadletter[0]["line"] == rejected[0].line
    assert not with_dead.ok

    result = CliRunner().invoke(
        main, ["verify", "--log", str(log_path), "--influx-url", influxd.url, "--db", influx_db]
    )
    assert result.exit_code == 0, result.output
    assert "OK: nothing lost" in result.output


def test_verify_reports_an_unreachable_database_with_exit_2(tmp_path: Path) -> None:
    log_path = tmp_path / "run.jsonl"
    _write_log(log_path)
    result = CliRunner().invoke(
        main, ["verify", "--log", str(log_path), "--influx-url", "http://127.0.0.1:9", "--db", "x"]
    )
    assert result.exit_code == ExitCode.VERIFY_IMPOSSIBLE
    assert "cannot reach InfluxDB" in result.output
