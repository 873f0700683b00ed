"""`make demo` in its CI size (`--short`): the whole chain runs, reports, and leaves nothing behind.

Each test runs `python -m devstack.demo` as a user would (its own process group, like a shell
job), in a temporary `--var` directory, and checks what a user relies on: exit status, the report
(nothing lost, the fullest-bins table, the dead-letter summary), that the printed InfluxQL and
HTTP examples work, that a second run in the same directory needs no clean-up, and that Ctrl-C
stops every process the demo started.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from devstack.demo.report import INFLUXQL_EXAMPLES, shell_arg
from devstack.servers import MissingBinary, find_binary
from tests.conftest import REPO as REPO_ROOT

pytestmark = pytest.mark.integration

_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(autouse=True)
def _binaries() -> None:
    for binary in ("mosquitto", "influxd"):
        try:
            find_binary(binary)
        except MissingBinary as exc:
            pytest.fail(str(exc), pytrace=False)


class Demo:
    """The demo as a child process; its output is collected line by line by a thread."""

    def __init__(self, var: Path, *args: str, via_make: bool = False) -> None:
        self.var = var
        demo_args = ["--short", "--var", str(var), *args]
        command = (
            ["make", "--no-print-directory", "demo", f"DEMO_ARGS={' '.join(demo_args)}"]
            if via_make  # the command people type: its set-up steps must be no-ops here
            else [sys.executable, "-m", "devstack.demo", *demo_args]
        )
        self.proc = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no {text!r} within {timeout:.0f} s:\n{self.output}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"demo exited ({self.proc.wait()}) before {text!r}:\n{self.output}")
            self.lines.append(line)

    def finish(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            pytest.fail(f"demo still running after {timeout:.0f} s:\n{self.output}")
        while (line := self._queue.get(timeout=10)) is not None:
            self.lines.append(line)
        return code

    def interrupt(self) -> None:
        """What Ctrl-C in a terminal does: SIGINT to the foreground process group."""
        os.killpg(self.proc.pid, signal.SIGINT)


def survivors(var: Path) -> list[str]:
    """Processes whose command line or environment names the demo's directory: the servers'
    config paths, taza-sim's --fleet, taza-ingest's TAZA_DATA_DIR."""
    marker = str(var).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        for part in ("cmdline", "environ"):
            try:
                data = (proc / part).read_bytes()
            except OSError:
                continue
            if marker in data:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append(f"{proc.name}: {cmdline}")
                break
    return found


def check_report(out: str) -> None:
    """The end of a run: verify's totals, the fullest bins, the dead-letter summary."""
    totals = re.search(
        r"delivered (\d+)\s+lost (\d+)\s+partial (\d+)\s+duplicated points (\d+)", out
    )
    assert totals, out
    delivered, lost, partial, duplicated = map(int, totals.groups())
    assert delivered > 1000, out
    assert (lost, partial, duplicated) == (0, 0, 0), out
    rejected = re.search(
        r"correctly rejected (\d+)\s+wrongly accepted (\d+)\s+not in dead-letter (\d+)", out
    )
    assert rejected, out
    assert int(rejected[1]) > 0, "the demo's deliberate malformed messages are missing"
    assert (int(rejected[2]), int(rejected[3])) == (0, 0), out

    assert "fullest eco-boxes per region" in out
    rows = re.findall(
        r"^\s+(?:almaty|astana)?\s+eb-(almaty|astana)-\d{4}\s+(\w+)\s+(\w+)\s+\d+ L\s+([\d.]+) %$",
        out,
        re.MULTILINE,
    )
    assert [r[0] for r in rows] == ["almaty"] * 5 + ["astana"] * 5, out
    for region in ("almaty", "astana"):
        fills = [float(r[3]) for r in rows if r[0] == region]
        assert fills == sorted(fills, reverse=True), f"{region} table is not fullest first:\n{out}"
    assert all(site in {"residential", "commercial", "park", "transit"} for _, site, _, _ in rows)

    dead = re.search(r"dead-letter store \(\S+\): (\d+) rejected messages", out)
    assert dead, out
    assert int(dead[1]) == int(rejected[1]), "dead-letter store and verify disagree"
    check_crew_view(out)
    check_plans(out)
    assert len(out.splitlines()) < 130, f"no walls of logs:\n{out}"


def check_plans(out: str) -> None:
    """A collection plan per region from the API: due bins served in routes, the solver's
    result set against the fallback's, and the fleet page and the taza CLI named."""
    plans = re.findall(
        r"^\s+(almaty|astana)\s+(\d+)/(\d+) due bins in (\d+) route\(s\), ([\d.]+) km by (\w+)",
        out,
        re.MULTILINE,
    )
    assert [p[0] for p in plans] == ["almaty", "astana"], out
    for _, served, due, routes, km, _solver in plans:
        assert min(int(due), int(served), int(routes)) > 0, out
        assert float(km) > 0, out
    assert re.search(r"^\s+truck 1: [\d.]+ km, \d+ l, ", out, re.MULTILINE), out
    assert re.search(r"fleet page\s+http://127\.0\.0\.1:\d+/", out), out
    assert re.search(r"taza CLI\s+\S*taza fill-levels", out), out


def check_crew_view(out: str) -> list[tuple[str, str, str]]:
    """The crew view: alerts fired and resolved per region (live over MQTT), `full` episodes
    that collections resolved, what fires now, collections detected, anomalies flagged;
    returns the (region, device, alert) listed as firing now."""
    assert re.search(r"^\s+alerts\s+fired [1-9]\d* · resolved \d+ · firing ", out, re.M), out
    regions = dict(
        (m[0], (int(m[1]), int(m[2])))
        for m in re.findall(r"^\s+(almaty|astana)\s+(\d+)\s+(\d+)\s{3}\S", out, re.MULTILINE)
    )
    assert set(regions) == {"almaty", "astana"}, out
    assert all(fired > 0 for fired, _ in regions.values()), f"a region without alerts:\n{out}"
    full = re.search(r"fired/resolved\s.*\bfull (\d+)/(\d+) \((\d+) collected\)", out)
    assert full, out
    fired, resolved, collected = map(int, full.groups())
    assert min(fired, resolved, collected) > 0, out
    assert resolved <= fired, out
    firing = re.findall(
        r"^\s+(almaty|astana)\s+((?:eb|rvm)-\S+)\s+(\w+)\s+[\d.]+ ?\S*\s+since ", out, re.M
    )
    assert firing, f"nothing listed as firing now:\n{out}"
    found = re.search(r"collections detected \(measurement collection\): (\d+) \(", out)
    assert found, out
    assert int(found[1]) > 0, out
    examples = re.findall(
        r"^\s+eb-\S+\s+\w{3} \d\d \w{3} \d\d:\d\d\s+([\d.]+) % →\s+([\d.]+) %$", out, re.M
    )
    assert examples, out
    assert all(float(before) > float(after) for before, after in examples), out
    assert re.search(r"anomalies flagged \(.*\): .*\bspike [1-9]", out), out
    return firing


def influxql(url: str, q: str) -> list[object]:
    params = urllib.parse.urlencode({"db": "taza", "q": q})
    with _no_proxy.open(f"{url}/query?{params}", timeout=10) as response:
        doc = json.load(response)
    result = doc["results"][0]
    assert "error" not in result, f"{q}: {result['error']}"
    return [v for s in result.get("series", []) for v in s["values"]]


def test_demo_runs_twice_in_one_directory_and_its_examples_work(tmp_path: Path) -> None:
    var = tmp_path / "demo"
    first = Demo(var, via_make=True)
    code = first.finish(timeout=180)
    assert code == 0, first.output
    check_report(first.output)
    assert "OK: nothing lost; everything stopped cleanly" in first.output
    assert not survivors(var), survivors(var)

    # Second run, same directory, no clean-up in between; this time it stays up to be explored.
    second = Demo(var, "--keep-running")
    second.wait_for("press Ctrl-C to stop them", timeout=120)
    out = second.output
    check_report(out)
    influx = re.search(r"influxd\s+(http://127\.0\.0\.1:\d+) db taza", out)
    ingest = re.search(r"taza-ingest\s+(http://127\.0\.0\.1:\d+)", out)
    assert influx, out
    assert ingest, out
    for comment, q in INFLUXQL_EXAMPLES:
        assert f"q {shell_arg(q)}" in out
        assert influxql(influx[1], q), f"printed example ({comment}) returns nothing: {q}"
    check_printed_commands_work(out)
    with _no_proxy.open(f"{ingest[1]}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    received = re.search(r"^taza_messages_received_total (\S+)$", metrics, re.MULTILINE)
    assert received, metrics
    assert float(received[1]) > 1000

    second.interrupt()
    code = second.finish(timeout=60)
    assert code == 0, second.output  # Ctrl-C is the normal end of --keep-running
    assert "stopped taza-ingest (exit 0), mosquitto, influxd" in second.output
    assert not survivors(var), survivors(var)


def check_printed_commands_work(out: str) -> None:
    """The InfluxQL examples and the alert-watching mosquitto_sub line, run by a shell exactly
    as printed: each query answers rows, and mosquitto_sub shows (retained) every alert the
    crew view lists as firing now."""
    define = re.search(r"^\s+(q\(\) \{ curl .*; \})$", out, re.MULTILINE)
    assert define, out
    queries = re.findall(r"^\s+(q ['\"]SELECT .*)$", out, re.MULTILINE)
    assert len(queries) == len(INFLUXQL_EXAMPLES), out
    for line in queries:
        done = subprocess.run(
            ["bash", "-c", f"{define[1]}\n{line}"], capture_output=True, text=True, timeout=30
        )
        rows = done.stdout.strip().splitlines()
        assert done.returncode == 0, f"{line}\n{done.stderr}"
        assert len(rows) >= 2, f"printed example answers no rows: {line}\n{done.stdout}"
        assert "error" not in done.stdout, f"{line}\n{done.stdout}"

    watch = re.search(r"^\s+watch them\s+(mosquitto_sub .*)$", out, re.MULTILINE)
    assert watch, out
    assert watch[1].endswith("-t 'taza/v1/alerts/#' -v"), watch[1]
    done = subprocess.run(
        ["bash", "-c", f"{watch[1]} -W 3"], capture_output=True, text=True, timeout=30
    )
    retained: dict[tuple[str, str, str], dict[str, object]] = {}
    for line in done.stdout.splitlines():
        topic, _, payload = line.partition(" ")
        parts = topic.split("/")
        assert len(parts) == 6, line
        assert parts[:3] == ["taza", "v1", "alerts"], line
        retained[parts[3], parts[4], parts[5]] = json.loads(payload)
    assert retained, f"mosquitto_sub showed no alert:\n{done.stdout}{done.stderr}"
    assert all(doc["state"] == "firing" for doc in retained.values()), done.stdout
    firing = check_crew_view(out)
    missing = [key for key in firing if key not in retained]
    assert not missing, f"listed as firing but not retained: {missing}\n{done.stdout}"
    for (region, device, alert), doc in retained.items():
        assert (doc["region"], doc["device_id"], doc["alert"]) == (region, device, alert), doc


def test_printed_queries_reach_curl_unchanged() -> None:
    """Each example as printed is one shell word that the shell hands over exactly (a query
    with an InfluxQL string literal goes in double quotes); what it cannot quote it refuses."""
    for _, q in INFLUXQL_EXAMPLES:
        done = subprocess.run(
            ["bash", "-c", f"printf %s {shell_arg(q)}"], capture_output=True, text=True, timeout=10
        )
        assert done.stdout == q
    with pytest.raises(ValueError, match="one shell word"):
        shell_arg("SELECT * FROM x WHERE a = '$HOME'")


def test_ctrl_c_mid_run_stops_everything(tmp_path: Path) -> None:
    var = tmp_path / "demo"
    demo = Demo(var, "--duration", "30s")
    demo.wait_for("66/66 │", timeout=60)  # a progress row: every device connected, publishing
    demo.interrupt()
    code = demo.finish(timeout=60)
    assert code == 130, demo.output
    assert "interrupted" in demo.output
    assert re.search(
        r"stopped taza-sim \(exit 130\), taza-ingest \(exit 0\), mosquitto, influxd", demo.output
    ), demo.output
    assert not survivors(var), survivors(var)


def test_ctrl_c_through_make_ends_make_by_the_signal(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches make and the demo alike (one foreground process group).
    The demo stops everything and exits 130; GNU make reports the recipe's status and then
    ends by the same signal, so the shell sees 130 (128 + SIGINT), as docs/demo.md says."""
    var = tmp_path / "demo"
    demo = Demo(var, "--duration", "30s", via_make=True)
    demo.wait_for("66/66 │", timeout=60)
    demo.interrupt()
    code = demo.finish(timeout=60)
    assert code == -signal.SIGINT, demo.output  # what a shell shows as $? = 130
    assert re.search(r"make(\[\d+\])?: \*\*\* \[Makefile:\d+: demo\] Error 130", demo.output), (
        demo.output
    )
    assert "stopped cleanly after" in demo.output
    assert not survivors(var), survivors(var)
