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
import urllib.error
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


# A terminal starts its commands with SIGINT at its default; a background job of a
# non-interactive shell (POSIX) hands them SIGINT ignored, and make would then ignore Ctrl-C.
SIGINT_DEFAULT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


class Demo:
    """The demo as a child process (SIGINT at its default, as from a terminal); its output is
    collected line by line by a thread."""

    def __init__(self, var: Path, *args: str, via_make: bool = False) -> None:
        self.var = var
        demo_args = ["--short", "--var", str(var), *args]
        command = (
            ["make", "--no-print-directory", "demo", f"DEMO_ARGS={' '.join(demo_args)}"]
            if via_make  # the command people type: its set-up steps must be no-ops here
            else [sys.executable, "-m", "devstack.demo", *demo_args]
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SIGINT_DEFAULT, *command],
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

    dead = re.search(r"dead-letter store \(\S+\): ([\d,]+) rejected messages", out)
    assert dead, out
    limited = check_rate_limit(out)
    assert num(dead[1]) == int(rejected[1]) + limited, "dead-letter store and verify disagree"
    check_crew_view(out)
    check_plans(out)
    check_feedback(out)
    check_tokens(out)
    check_security(out)
    assert "FAIL" not in out, out
    assert len(out.splitlines()) < 150, f"no walls of logs:\n{out}"


def num(text: str) -> int:
    return int(text.replace(",", ""))


FLOODER = "eb-almaty-flood"


def check_rate_limit(out: str) -> int:
    """The flooding device: what it sent is what was stored plus what was refused; every
    refusal is its own (the counter, the dead letters) and no other device was limited.
    Returns the refusals."""
    sent = re.search(
        rf"rate limit \(.*\): {FLOODER} sent ([\d,]+) in [\d.]+ s, ([\d,]+) stored, "
        r"([\d,]+) refused",
        out,
    )
    assert sent, out
    total, stored, refused = map(num, sent.groups())
    assert total == 2500, out  # bounded: the demo's FLOOD_COUNT, every one acknowledged
    assert stored + refused == total, out
    # The burst (1000) gets through, then ~100/s: in a flood of a few seconds at most, most of
    # the 2500 are refused.
    assert stored >= 1000, out
    assert refused >= 500, out
    counts = re.search(
        r"taza_rate_limited_total ([\d,]+) · dead letters rate_limited ([\d,]+) · "
        r"other devices rate-limited (\d+)",
        out,
    )
    assert counts, out
    assert (num(counts[1]), num(counts[2]), int(counts[3])) == (refused, refused, 0), out
    listed = re.search(r"^\s+rate_limited (\d+)\b", out, re.MULTILINE)
    assert listed, out
    assert int(listed[1]) == refused, out
    return refused


def check_feedback(out: str) -> tuple[str, list[tuple[str, str]]]:
    """What the firmware engineer of one faulty device reads on its feedback topic: each line
    a reason code and its detail; every feedback taza published reached the subscriber.
    Returns the device and its (reason, detail) lines."""
    published = re.search(r"device feedback \(.*\): taza_feedback_published_total ([\d,]+)", out)
    assert published, out
    received = re.search(
        rf"the demo's subscriber received ([\d,]+), for (\d+) faulty devices and {FLOODER} "
        r"\((\d)\)",
        out,
    )
    assert received, out
    assert num(received[1]) == num(published[1]) > 0, out
    assert int(received[2]) > 0, out
    assert int(received[3]) == 5, f"the flooder is told its first 5 refusals only:\n{out}"
    seen = re.search(
        r"what (\S+)'s firmware engineer sees: mosquitto_sub -t 'taza/v1/_feedback/(\S+)'\n"
        r"((?:    \w+: .*\n)+)",
        out,
    )
    assert seen, out
    assert seen[1] == seen[2] != FLOODER, out
    lines = [tuple(line.strip().split(": ", 1)) for line in seen[3].splitlines()]
    assert all(re.fullmatch(r"[a-z_]+", reason) and detail for reason, detail in lines), out
    return seen[1], [(r, d) for r, d in lines]


def check_tokens(out: str) -> dict[str, str]:
    """Two tokens printed (operator, crew of almaty) and the API's refusals: none → 401, a
    crew token outside its region → 403 region_forbidden. Returns {role: token}."""
    tokens = dict(re.findall(r"^\s+(operator|crew almaty)\s+(taza_[0-9a-f]{8}_\S{43})$", out, re.M))
    assert set(tokens) == {"operator", "crew almaty"}, out
    assert re.search(r"^\s+demo secrets on loopback, printed on purpose", out, re.M), out
    for who, path, answer in (
        ("no token", "/api/v1/fill-levels", "401 token_missing"),
        ("crew-almaty, its region", "/api/v1/fill-levels?region=almaty", "200"),
        ("crew-almaty, region astana", "/api/v1/fill-levels?region=astana", "403 region_forbidden"),
        ("crew-almaty, operator endpoint", "/api/v1/devices", "403 role_forbidden"),
        ("operator", "/api/v1/whoami", "200 operator"),
    ):
        assert re.search(
            rf"^\s+PASS\s+{re.escape(who)}\s+GET {re.escape(path)}\s+→ {answer}$", out, re.M
        ), f"{who}:\n{out}"
    assert re.search(rf"^\s+export TAZA_API_TOKEN={tokens['operator']}\s", out, re.M), out
    return tokens


def check_security(out: str) -> None:
    """The production-profile broker refused what an attacker tries, one PASS line each."""
    broker = re.search(r"^\s+broker\s+mqtts://127\.0\.0\.1:\d+\s+TLS only, dev CA ", out, re.M)
    assert broker, out
    assert re.search(r"^\s+accounts\s+eb-almaty-0001, eb-almaty-0002, ingest\.demo ", out, re.M)
    for text in (
        r"anonymous connection refused \(CONNACK 0x87",
        r"eb-almaty-0001 with a wrong password refused \(CONNACK 0x87\)",
        r"eb-almaty-0001 publishing as eb-almaty-0002: PUBACK 0x87 not authorized; the ingest "
        r"account got only eb-almaty-0001's own message \(1 received\)",
        r"eb-almaty-0001 may read its own feedback topic, not eb-almaty-0002's "
        r"\(SUBACK \[135, 1\]\)",
        r"plain MQTT to the TLS listener fails",
    ):
        assert re.search(rf"^\s+PASS\s+{text}", out, re.M), f"{text}:\n{out}"


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
    tokens = check_tokens(out)
    check_api_tokens_work(ingest[1], tokens)
    check_feedback_matches_dead_letters(var, out)
    request = urllib.request.Request(
        f"{ingest[1]}/metrics", headers={"Authorization": f"Bearer {tokens['operator']}"}
    )
    with _no_proxy.open(request, timeout=5) as response:
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


def status_of(url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with _no_proxy.open(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def check_api_tokens_work(http: str, tokens: dict[str, str]) -> None:
    """The printed tokens against the running service, and the printed `taza` commands with
    TAZA_API_TOKEN: the page loads (it asks for a token), the API answers only with one."""
    with _no_proxy.open(f"{http}/", timeout=10) as response:
        page = response.read().decode()
    assert 'id="auth-token"' in page, "the page has no token prompt"
    crew = tokens["crew almaty"]
    assert status_of(f"{http}/api/v1/fill-levels", None) == 401
    assert status_of(f"{http}/api/v1/fill-levels?region=almaty", crew) == 200
    assert status_of(f"{http}/api/v1/fill-levels?region=astana", crew) == 403
    assert status_of(f"{http}/api/v1/fill-levels?region=astana", tokens["operator"]) == 200
    assert status_of(f"{http}/metrics", None) == 401
    taza = str(Path(sys.executable).with_name("taza"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAZA_")}
    argv = [taza, "fill-levels", "--min-pct", "80", "--url", http]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode != 0, "the taza CLI got data without a token"
    env["TAZA_API_TOKEN"] = tokens["operator"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Fill levels ("), done.stdout
    # Which bins are at 80 % depends on the hour: the simulated crews empty the night's full
    # bins from 06:00 local, so at 07:00 there may be none. Every bin has a level.
    argv[argv.index("80")] = "0"
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 0, done.stderr
    assert re.search(r"eb-(almaty|astana)-\d{4}", done.stdout), done.stdout


def check_feedback_matches_dead_letters(var: Path, out: str) -> None:
    """What the device was told is what its dead letters say (reason and detail)."""
    device, told = check_feedback(out)
    ingest = str(Path(sys.executable).with_name("taza-ingest"))
    argv = [ingest, "deadletter", "--data-dir", str(var / "ingest"), "--device", device, "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    letters = [(r["reason"], r["detail"]) for r in json.loads(done.stdout)["records"]]
    for reason, detail in told:
        assert any(
            r == reason and (d == detail or (detail.endswith("…") and d.startswith(detail[:-1])))
            for r, d in letters
        ), f"{device} was told {reason}: {detail}, not in its dead letters {letters}"
