"""Both command lines behave alike: help, version, options after the subcommand, exit codes.

Each convention is checked in-process (CliRunner) and through the installed console scripts,
because a user types the latter (entry points, terminal width, real exit statuses).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from devices import ExitCode
from ingest.cli import main as ingest_main
from simulator.cli import main as sim_main

BIN = Path(sys.executable).parent
COMMANDS = {"taza-ingest": ingest_main, "taza-sim": sim_main}
SUBCOMMANDS = {
    "taza-ingest": ["run", "deadletter", "config"],
    "taza-sim": ["fleet", "run", "load", "verify"],
}


def _script(name: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = BIN / name
    assert exe.exists(), f"{exe} is not installed: run make venv"
    env = {**os.environ, "COLUMNS": "80"}
    env.pop("TAZA_CONFIG", None)
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=60, env=env, cwd=cwd
    )


@pytest.mark.parametrize("name", COMMANDS)
def test_h_is_help_everywhere(name: str) -> None:
    runner = CliRunner()
    for sub in [[], *([s] for s in SUBCOMMANDS[name])]:
        short = runner.invoke(COMMANDS[name], [*sub, "-h"])
        long = runner.invoke(COMMANDS[name], [*sub, "--help"])
        assert short.exit_code == long.exit_code == 0, (sub, short.output)
        assert short.output == long.output
        assert "Usage:" in short.output
    done = _script(name, *SUBCOMMANDS[name][:1], "-h")
    assert done.returncode == 0, done.stderr
    assert f"Usage: {name} {SUBCOMMANDS[name][0]}" in done.stdout


@pytest.mark.parametrize("name", COMMANDS)
def test_version(name: str) -> None:
    expected = f"{name}, version {version('taza-telemetry')}"
    assert CliRunner().invoke(COMMANDS[name], ["--version"]).output.strip() == expected
    done = _script(name, "--version")
    assert (done.returncode, done.stdout.strip()) == (0, expected)


def _commands(name: str) -> list[tuple[str, click.Command]]:
    group = COMMANDS[name]
    assert isinstance(group, click.Group)
    return [(name, group)] + [(f"{name} {n}", group.commands[n]) for n in SUBCOMMANDS[name]]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_has_help_text(name: str) -> None:
    missing = [
        f"{where} {param.opts[0]}"
        for where, command in _commands(name)
        for param in command.params
        if isinstance(param, click.Option) and not (param.help or "").strip()
    ]
    assert missing == []
    for where, command in _commands(name)[1:]:
        shown = " ".join(_script(*where.split(), "--help").stdout.split())
        for param in command.params:
            if isinstance(param, click.Option):
                first_words = " ".join((param.help or "").split()[:4])
                assert first_words in shown, (where, param.opts[0])


@pytest.mark.parametrize("name", COMMANDS)
def test_subcommand_summaries_are_not_cut_off(name: str) -> None:
    in_process = CliRunner().invoke(COMMANDS[name], ["--help"], terminal_width=80).output
    done = _script(name, "--help")
    assert done.returncode == 0
    for output in (in_process, done.stdout):
        listing = " ".join(output.split("Commands:", 1)[1].split())
        for _, command in _commands(name)[1:]:
            summary = command.get_short_help_str(limit=1000)
            assert not summary.endswith("..."), summary
            assert summary in listing, (summary, listing)


def test_ingest_takes_config_after_the_subcommand(tmp_path: Path) -> None:
    toml = tmp_path / "taza.toml"
    toml.write_text('mqtt_client_id = "from-the-file"\n', encoding="utf-8")
    for args in (["--config", str(toml), "config"], ["config", "--config", str(toml)]):
        result = CliRunner().invoke(ingest_main, args, env={"TAZA_CONFIG": None})
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["mqtt_client_id"] == "from-the-file"
    done = _script("taza-ingest", "config", "--config", str(toml))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["mqtt_client_id"] == "from-the-file"
    # `run --config` used to be "No such option"; now the file is read (here: it is missing).
    done = _script("taza-ingest", "run", "--config", str(tmp_path / "missing.toml"))
    assert done.returncode == ExitCode.USAGE
    assert "missing.toml does not exist" in done.stderr
    assert "No such option" not in done.stderr


def test_fleet_prints_a_readable_summary_and_json(tmp_path: Path) -> None:
    args = ["fleet", "--ecoboxes", "6", "--rvms", "2", "--regions", "almaty,astana"]
    out = tmp_path / "fleet.csv"
    done = _script("taza-sim", *args, "--out", str(out))
    assert done.returncode == 0, done.stderr
    text = done.stderr
    assert "{" not in text, "a summary for people, not a Python dict"
    assert f"wrote {out}: 8 devices" in text
    assert "ecobox        6   almaty 3, astana 3" in text
    assert "rvm           2   almaty 1, astana 1" in text
    done = _script("taza-sim", *args, "--out", str(tmp_path / "fleet.json"), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["devices"] == 8
    assert summary["by_kind"] == {"ecobox": 6, "rvm": 2}
    assert summary["by_kind_and_region"]["rvm"] == {"almaty": 1, "astana": 1}
    assert sum(summary["by_fraction"].values()) == 6, "RVMs carry no fraction"
    result = CliRunner().invoke(sim_main, [*args, "--json"])
    assert result.exit_code == ExitCode.USAGE
    assert "--json" in result.output


def test_exit_codes_are_distinct_and_stable() -> None:
    assert {c.name: int(c) for c in ExitCode} == {
        "OK": 0,
        "FAILURE": 1,
        "USAGE": 2,
        "VERIFY_MISMATCH": 3,
        "VERIFY_IMPOSSIBLE": 4,
        "BROKER_UNREACHABLE": 5,
        "INTERRUPTED": 130,
    }


@pytest.mark.parametrize("name", COMMANDS)
def test_unknown_option_is_a_usage_error(name: str) -> None:
    sub = SUBCOMMANDS[name][0]
    result = CliRunner().invoke(COMMANDS[name], [sub, "--no-such-option"])
    assert result.exit_code == ExitCode.USAGE
    done = _script(name, sub, "--no-such-option")
    assert done.returncode == ExitCode.USAGE
    assert "No such option '--no-such-option'" in done.stderr
