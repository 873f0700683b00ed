"""Fleet generation and `taza-sim fleet`: the file must be the registry taza-ingest reads."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import devices
from devices import ExitCode
from devstack.servers import free_port
from simulator.cli import main
from simulator.fleet import REGIONS, generate, parse_interval, parse_mix


def test_ids_counts_and_regions() -> None:
    specs = generate(ecoboxes=301, rvms=31, regions=["almaty", "astana", "shymkent"], seed=7)
    ids = [s.device_id for s in specs]
    assert len(set(ids)) == len(ids) == 332
    assert "eb-almaty-0001" in ids
    assert "rvm-astana-001" in ids
    assert all(re.fullmatch(r"(eb-[a-z]+-\d{4}|rvm-[a-z]+-\d{3})", i) for i in ids)
    per_region = {
        r: sum(1 for s in specs if s.region == r and s.kind == "ecobox")
        for r in ("almaty", "astana", "shymkent")
    }
    assert per_region == {"almaty": 101, "astana": 100, "shymkent": 100}
    assert sum(1 for s in specs if s.kind == "rvm") == 31


def test_devices_are_scattered_around_their_city_centre() -> None:
    specs = generate(ecoboxes=2000, rvms=0, regions=["almaty", "astana"], seed=1)
    for name in ("almaty", "astana"):
        region = REGIONS[name]
        pts = [(s.lat, s.lon) for s in specs if s.region == name]
        km = [
            math.hypot(
                (lat - region.lat) * 111.32,
                (lon - region.lon) * 111.32 * math.cos(math.radians(region.lat)),
            )
            for lat, lon in pts
        ]
        assert sum(lat for lat, _ in pts) / len(pts) == pytest.approx(region.lat, abs=0.02)
        assert sum(lon for _, lon in pts) / len(pts) == pytest.approx(region.lon, abs=0.03)
        assert max(km) < 6 * region.radius_km  # nobody ends up in another city
        assert sorted(km)[len(km) // 2] == pytest.approx(1.18 * region.radius_km, rel=0.15)


def test_sites_fractions_capacities_and_intervals() -> None:
    specs = generate(
        ecoboxes=2000,
        rvms=50,
        regions=["almaty"],
        seed=2,
        ecobox_interval="4h-12h",
        rvm_interval="15m",
    )
    boxes = [s for s in specs if s.kind == "ecobox"]
    sites = {s.site for s in boxes}
    assert sites == {"residential", "commercial", "park", "transit"}
    share = sum(1 for s in boxes if s.site == "residential") / len(boxes)
    assert share == pytest.approx(0.45, abs=0.04)
    assert {s.fraction for s in boxes} <= devices.FRACTIONS
    assert {s.capacity_l for s in boxes} == {120.0, 240.0, 660.0, 1100.0}
    intervals = [s.report_interval_s for s in boxes]
    assert min(intervals) >= 4 * 3600
    assert max(intervals) <= 12 * 3600
    assert all(i % 300 == 0 for i in intervals)
    assert len(set(intervals)) > 50
    assert {s.report_interval_s for s in specs if s.kind == "rvm"} == {900}


def test_the_same_seed_gives_the_same_fleet() -> None:
    a = generate(ecoboxes=50, rvms=5, regions=["almaty", "astana"], seed=42)
    b = generate(ecoboxes=50, rvms=5, regions=["almaty", "astana"], seed=42)
    c = generate(ecoboxes=50, rvms=5, regions=["almaty", "astana"], seed=43)
    assert a == b
    assert a != c
    # Growing the fleet does not move the devices that already existed.
    bigger = {
        s.device_id: s for s in generate(ecoboxes=80, rvms=5, regions=["almaty", "astana"], seed=42)
    }
    assert all(bigger[s.device_id] == s for s in a if s.kind == "rvm")


def test_bad_arguments_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="unknown region"):
        generate(ecoboxes=1, rvms=0, regions=["atlantis"])
    with pytest.raises(ValueError, match="bad report interval"):
        parse_interval("12h-4h")
    with pytest.raises(ValueError, match="unknown name"):
        parse_mix("residential=1,beach=2", ("residential", "park"))


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_written_fleet_loads_with_the_registry(tmp_path: Path, suffix: str) -> None:
    specs = generate(ecoboxes=30, rvms=4, regions=["almaty", "karaganda"], seed=5)
    path = tmp_path / f"fleet{suffix}"
    devices.Registry(specs).save(path)
    registry = devices.Registry.load(path)
    assert len(registry) == 34
    for s in specs:
        info = registry.get(s.device_id)
        assert info == s, "the file holds exactly the generated rows"


def test_cli_fleet_writes_csv_and_json_and_stdout(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "fleet.csv"
    result = runner.invoke(
        main,
        [
            "fleet",
            "--ecoboxes",
            "20",
            "--rvms",
            "2",
            "--regions",
            "almaty,astana",
            "--seed",
            "7",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines()[0] == (
        "device_id,kind,region,lat,lon,capacity_l,fraction,site,report_interval_s"
    )
    assert len(devices.Registry.load(out)) == 22
    again = tmp_path / "again.csv"
    runner.invoke(
        main,
        [
            "fleet",
            "--ecoboxes",
            "20",
            "--rvms",
            "2",
            "--regions",
            "almaty,astana",
            "--seed",
            "7",
            "--out",
            str(again),
        ],
    )
    assert again.read_bytes() == out.read_bytes()

    as_json = tmp_path / "fleet.json"
    result = runner.invoke(main, ["fleet", "--ecoboxes", "3", "--rvms", "1", "--out", str(as_json)])
    assert result.exit_code == 0, result.output
    assert len(json.loads(as_json.read_text())) == 4

    result = runner.invoke(main, ["fleet", "--ecoboxes", "3", "--rvms", "0"])
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 4

    result = runner.invoke(main, ["fleet", "--regions", "atlantis"])
    assert result.exit_code == 2
    assert "unknown region" in result.output


def test_every_subcommand_has_thorough_help() -> None:
    runner = CliRunner()
    top = runner.invoke(main, ["--help"])
    assert top.exit_code == 0
    for command, must_mention in {
        "run": [
            "--speed",
            "--duration",
            "--start",
            "--log",
            "--malformed-rate",
            "--offline-rate",
            "--store-forward",
            "--clock-skew",
            "--fleet",
        ],
        "fleet": ["--out", "--seed", "--report-interval"],
        "load": ["--rate", "--devices", "--connections", "--json"],
        "verify": ["--log", "--influx-url", "--deadletter", "wrongly accepted"],
    }.items():
        assert command in top.output
        result = runner.invoke(main, [command, "--help"])
        assert result.exit_code == 0
        for text in must_mention:
            assert text in result.output, (command, text)


def test_run_fails_fast_and_clearly_without_a_broker() -> None:
    port = free_port()  # nothing listens there
    result = CliRunner().invoke(
        main, ["run", "--broker", f"mqtt://127.0.0.1:{port}", "--ecoboxes", "2", "--rvms", "0"]
    )
    assert result.exit_code == ExitCode.BROKER_UNREACHABLE
    assert "cannot connect to the broker" in result.output
    assert "Connection refused" in result.output
    result = CliRunner().invoke(main, ["run", "--speed", "60"])
    assert result.exit_code == 2
    assert "--duration" in result.output
