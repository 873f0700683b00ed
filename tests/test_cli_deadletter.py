"""``taza-ingest deadletter``: wrong input is an error, --since filters, --tail lists only.

The store is written by the service's own DeadLetterStore; the command is run in-process and
as the installed console script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from devices import ExitCode, Reason, format_topic
from ingest.batch import DeadLetter
from ingest.cli import main
from ingest.deadletter import DeadLetterStore

NOW = datetime.now(UTC)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Five records: three old not_json (two days ago), then two recent bad_ts."""
    store = DeadLetterStore(tmp_path / "deadletter")
    letters = [
        DeadLetter(
            format_topic("almaty", "ecobox", f"eb-{i}", "fill"),
            b"nope %d" % i,
            Reason.NOT_JSON,
            "not JSON",
            NOW - timedelta(days=2, minutes=5 - i),
        )
        for i in range(3)
    ] + [
        DeadLetter(
            format_topic("astana", "rvm", f"rvm-{i}", "deposit"),
            b'{"ts": "yesterday"}',
            Reason.BAD_TS,
            "ts is not a time",
            NOW - timedelta(minutes=30 - i),
        )
        for i in range(2)
    ]
    store.append(letters)
    store.close()
    return tmp_path


def _run(*args: str) -> Result:
    return CliRunner().invoke(main, ["deadletter", *args], env={"TAZA_DATA_DIR": None})


def test_a_missing_data_dir_is_an_error_not_zero_records(tmp_path: Path) -> None:
    missing = tmp_path / "not-here"
    result = _run("--data-dir", str(missing))
    assert result.exit_code == ExitCode.USAGE
    assert f"no dead-letter store at {missing / 'deadletter'}" in result.output
    assert "0 records" not in result.output
    exe = Path(sys.executable).parent / "taza-ingest"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAZA_")}
    done = subprocess.run(
        [str(exe), "deadletter", "--data-dir", str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == ExitCode.USAGE
    assert "no dead-letter store" in done.stderr


def test_an_unknown_reason_is_an_error_naming_the_known_ones(data_dir: Path) -> None:
    result = _run("--data-dir", str(data_dir), "--reason", "not-json")
    assert result.exit_code == ExitCode.USAGE
    assert "'not-json' is not one of" in result.output
    assert "'not_json'" in result.output
    assert "'bad_ts'" in result.output
    assert _run("--data-dir", str(data_dir), "--reason", "not_json").exit_code == 0


def test_default_is_the_summary_then_the_last_records(data_dir: Path) -> None:
    result = _run("--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert "5 records" in result.output
    assert "not_json" in result.output.split("last 5:")[0]
    assert result.output.count("payload:") == 5


def test_tail_lists_only_the_last_n_records(data_dir: Path) -> None:
    result = _run("--data-dir", str(data_dir), "--tail", "2")
    assert result.exit_code == 0, result.output
    assert "records" not in result.output, "no summary before the records"
    lines = [line for line in result.output.splitlines() if not line.startswith(" ")]
    assert len(lines) == 2
    assert all("bad_ts" in line and "rvm-" in line for line in lines)
    doc = json.loads(_run("--data-dir", str(data_dir), "--tail", "1", "--json").output)
    assert "summary" not in doc
    assert [r["topic"] for r in doc["records"]] == [
        format_topic("astana", "rvm", "rvm-1", "deposit")
    ]
    assert _run("--data-dir", str(data_dir), "--tail", "1", "--summary").exit_code == 2


@pytest.mark.parametrize(
    "since",
    [
        "1h",
        "90m",
        (NOW - timedelta(hours=1)).isoformat(),
        (NOW - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    ],
)
def test_since_takes_a_duration_or_an_rfc3339_time(data_dir: Path, since: str) -> None:
    result = _run("--data-dir", str(data_dir), "--since", since, "--json", "--summary")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)["summary"]
    assert summary["total"] == 2
    assert summary["by_reason"] == {"bad_ts": 2}


def test_since_with_everything_older_and_a_bad_value(data_dir: Path) -> None:
    result = _run("--data-dir", str(data_dir), "--since", "3d", "--json", "--summary")
    assert json.loads(result.output)["summary"]["total"] == 5
    result = _run("--data-dir", str(data_dir), "--since", "last tuesday")
    assert result.exit_code == ExitCode.USAGE
    assert "neither a duration" in result.output
