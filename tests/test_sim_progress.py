"""`taza-sim run --progress {human,jsonl,none}`: the progress a program can read (the demo does).

Against a real broker of each test's own (the devices leave retained state messages, which
would reach other tests' subscribers on the shared one): jsonl gives one JSON record a second
on stderr, with exactly the documented fields and types, whose figures add up to the run's
summary; human keeps today's lines; none prints nothing.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from datetime import datetime

import pytest

from devstack.servers import Mosquitto
from tests.conftest import ServerFactory

pytestmark = pytest.mark.integration

SIM = [sys.executable, "-m", "simulator.cli"]
FIELDS = {
    "event": str,
    "elapsed_s": float,
    "sim_time": str,
    "published": int,
    "rate_per_s": int,
    "online": int,
    "devices": int,
    "queued": int,
    "reconnects": int,
}


def run(broker: Mosquitto, progress: str | None, seconds: int) -> tuple[dict[str, object], str]:
    """(summary, stderr) of a small fleet run."""
    argv = [*SIM, "run", "--broker", broker.url, "--ecoboxes", "10", "--rvms", "2"]
    argv += ["--regions", "kokshetau", "--speed", "600", "--duration", f"{seconds}s"]
    argv += ["--client-prefix", f"t-progress-{progress}", "--json"]
    if progress is not None:
        argv += ["--progress", progress]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    summary: dict[str, object] = json.loads(done.stdout)
    return summary, done.stderr


def test_jsonl_progress_records(make_mosquitto: ServerFactory[Mosquitto]) -> None:
    summary, stderr = run(make_mosquitto(), "jsonl", seconds=4)
    records = [json.loads(line) for line in stderr.splitlines()]
    assert len(records) >= 3, stderr
    for record in records:
        assert set(record) == set(FIELDS), record
        for key, kind in FIELDS.items():
            assert type(record[key]) is kind, (key, record)
        assert record["event"] == "progress"
        assert record["sim_time"].endswith("Z"), record
        assert record["devices"] == 12
        assert 0 <= record["online"] <= 12
    pairs = list(itertools.pairwise(records))
    gaps = [b["elapsed_s"] - a["elapsed_s"] for a, b in pairs]
    assert all(0.5 < gap < 5.0 for gap in gaps), f"not once a second: {gaps}"
    for a, b in pairs:  # simulated time runs at ×600 of elapsed (sim_time has whole seconds)
        advance = datetime.fromisoformat(b["sim_time"]) - datetime.fromisoformat(a["sim_time"])
        expected = 600 * (b["elapsed_s"] - a["elapsed_s"])
        assert abs(advance.total_seconds() - expected) < 5, (a, b)
    published = [r["published"] for r in records]
    assert published == sorted(published)
    assert sum(r["rate_per_s"] for r in records) == published[-1]
    assert 0 < published[-1] <= summary["published"]  # type: ignore[operator]
    assert max(r["online"] for r in records) == 12, "the whole fleet never showed as online"


def test_human_progress_is_unchanged_and_none_is_silent(
    make_mosquitto: ServerFactory[Mosquitto],
) -> None:
    broker = make_mosquitto()
    _, human = run(broker, None, seconds=2)
    line = re.compile(
        r"^\[\s*[\d.]+s\] sim \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+published\s+\d+ \(\s*\d+/s\)\s+"
        r"online\s+\d+/12\s+queued\s+\d+\s+reconnects \d+$"
    )
    lines = human.splitlines()
    assert lines, "no progress lines by default"
    assert all(line.match(text) for text in lines), human
    _, silent = run(broker, "none", seconds=2)
    assert silent == ""
