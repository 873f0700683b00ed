"""``make demo``: local servers, taza-ingest and a simulated fleet end to end, then a report.

``python -m simulator.demo [--short] [--keep-running] ...`` starts Mosquitto and InfluxDB 1.x on
127.0.0.1 (data under ``var/demo``), writes a fleet file, starts ``taza-ingest run`` on it, runs
``taza-sim run`` against the broker, and ends with the ``taza-sim verify`` report, the fullest
bins per region, the dead-letter summary and where to look next. Everything is a child process
the demo stops itself, in order, also on Ctrl-C. docs/demo.md describes it.

It runs from a checkout of the repository, not from an installed wheel: the servers are driven
by ``tests/servers.py`` (the stdlib-only harness the integration tests use, so the demo and the
tests start the servers the same way) with the repository's ``mosquitto.conf``.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

import click

from simulator.clock import parse_duration
from simulator.fleet import parse_regions

if TYPE_CHECKING:
    from devstack.servers import InfluxDB1, Mosquitto

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
DB = "taza"
SIM_DAY_S = 86_400.0
KZ = timezone(timedelta(hours=5), "UTC+5")  # every built-in region is in Kazakhstan
MALFORMED_RATE = 0.005
DUPLICATE_RATE = 0.005
FULL_PCT = 80.0  # the simulated crews' threshold (taza-sim run --threshold)
TOP_N = 5

_MARKER = ".taza-demo"  # lock file; a directory holding it may be wiped by the demo
_PIDS = ".pids"  # processes of the current run, to stop leftovers of one that was killed

_PROGRESS = re.compile(
    r"^\[\s*(?P<t>[\d.]+)s\] sim (?P<sim>\S+?)Z?\s+"
    r"published\s+(?P<pub>\d+)\s+\(\s*(?P<rate>\d+)/s\)\s+"
    r"online\s+(?P<on>\d+)/(?P<n>\d+)\s+queued\s+(?P<q>\d+)"
)

# Shown at the end; tests/test_demo.py runs every one against the demo's database.
INFLUXQL_EXAMPLES: list[tuple[str, str]] = [
    (
        "the table above: latest fill of every eco-box, top 5 per region",
        "SELECT top(fill_pct, device_id, 5) AS fill_pct, site, fraction FROM "
        "(SELECT last(fill_pct) AS fill_pct FROM fill GROUP BY device_id, site, fraction) "
        "GROUP BY region",
    ),
    (
        "the daily rhythm: mean fill by site type, every 3 simulated hours",
        "SELECT mean(fill_pct) FROM fill WHERE time > now() - 1d GROUP BY time(3h), site",
    ),
    (
        "containers taken by the RVMs, by region and material",
        'SELECT sum("count") AS containers FROM deposit WHERE time > now() - 1d '
        "GROUP BY region, material",
    ),
    (
        "refunds paid, in tenge (minor units / 100)",
        "SELECT sum(refund_minor) / 100 AS refund_kzt FROM deposit WHERE time > now() - 1d "
        "GROUP BY region",
    ),
]


class DemoError(RuntimeError):
    """A step failed; the message says which and carries the log tail of that component."""


# ----- output ---------------------------------------------------------------------------------


class Console:
    """Plain lines, plus on a terminal one status line rewritten in place (no walls of logs)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._status_open = False
        self._lock = threading.Lock()

    def line(self, text: str = "") -> None:
        with self._lock:
            if self._status_open:
                self.stream.write("\r\x1b[K")
                self._status_open = False
            self.stream.write(text + "\n")
            self.stream.flush()

    def status(self, text: str) -> None:
        if not self.tty:
            return
        with self._lock:
            self.stream.write("\r" + text + "\x1b[K")
            self.stream.flush()
            self._status_open = True


def rel(path: Path) -> str:
    """A path as the user would type it from where they are."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(path)


def tail(path: Path, n: int = 30) -> str:
    try:
        lines = path.read_bytes().decode("utf-8", "replace").splitlines()
    except FileNotFoundError:
        return f"    (no log at {rel(path)})"
    if not lines:
        return f"    ({rel(path)} is empty)"
    return "\n".join("    " + line for line in lines[-n:])


def failure(what: str, log: Path, n: int = 30) -> DemoError:
    return DemoError(f"{what}\n  --- last lines of {rel(log)} ---\n{tail(log, n)}")


# ----- signals --------------------------------------------------------------------------------


class Signals:
    """SIGINT, SIGTERM and SIGHUP become KeyboardInterrupt, except inside `deferred()` (while a
    child is spawned and recorded, so none escapes the clean-up) and once stopping has begun."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.stopping = False
        self._depth = 0
        self._pending = False
        self._noted = False

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._handler)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            if not self._noted:
                self._noted = True
                self.console.line("  (already stopping everything, please wait)")
            return
        if self._depth:
            self._pending = True
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth and self._pending and not self.stopping:
                self._pending = False
                raise KeyboardInterrupt


# ----- small helpers --------------------------------------------------------------------------

_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with _no_proxy.open(url, timeout=timeout) as response:
            status: int = response.status
            return status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def metrics(url: str) -> dict[str, float]:
    """Prometheus text → {metric name: value summed over its label sets}."""
    status, body = http_get(url)
    if status != 200:
        raise OSError(f"{url}: HTTP {status}")
    out: dict[str, float] = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name = series.split("{", 1)[0]
        with contextlib.suppress(ValueError):
            out[name] = out.get(name, 0.0) + float(value)
    return out


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def pick_port(standard: int) -> int | None:
    """The standard port if free, else standard + 10000, else None (any free port)."""
    for port in (standard, standard + 10_000):
        if port_free(port):
            return port
    return None


def proc_starttime(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (guards against PID reuse)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return None if fields[0] == "Z" else int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def flags(**options: object) -> list[str]:
    """`--long-name value` pairs for a child's command line, in the order given."""
    out: list[str] = []
    for key, value in options.items():
        out += ["--" + key.replace("_", "-"), str(value)]
    return out


def exit_text(rc: int) -> str:
    if rc < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-rc).name
    return f"exit {rc}"


def fmt(n: float) -> str:
    return f"{int(n):,}"


def tool(name: str) -> list[str]:
    """The console script next to this interpreter (what a user types), or `python -m`."""
    script = Path(sys.executable).with_name(name)
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", {"taza-ingest": "ingest", "taza-sim": "simulator.cli"}[name]]


def shown(name: str) -> str:
    script = Path(sys.executable).with_name(name)
    return rel(script) if script.exists() else name


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Options:
    var: Path
    ecoboxes: int
    rvms: int
    regions: list[str]
    duration_s: float
    speed: float
    seed: int
    keep_running: bool


# ----- the demo -------------------------------------------------------------------------------


class Demo:
    def __init__(self, opts: Options, console: Console, signals: Signals) -> None:
        self.o = opts
        self.out = console
        self.signals = signals
        self.var = opts.var.resolve()
        self.children: list[Child] = []
        self.mosquitto: Mosquitto | None = None
        self.influxd: InfluxDB1 | None = None
        self.ingest: Child | None = None
        self.http = ""
        self._lock: IO[str] | None = None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TAZA_")}
        self.env["PYTHONUNBUFFERED"] = "1"
        self.started = time.monotonic()

    @property
    def owns_dir(self) -> bool:
        return self._lock is not None

    # -- paths

    @property
    def fleet(self) -> Path:
        return self.var / "fleet.csv"

    @property
    def run_log(self) -> Path:
        return self.var / "run.jsonl"

    @property
    def data_dir(self) -> Path:
        return self.var / "ingest"

    # -- the steps

    def run(self) -> int:
        o = self.o
        self.out.line(
            f"taza demo: {o.ecoboxes} eco-boxes + {o.rvms} RVMs in {', '.join(o.regions)}; "
            f"{o.duration_s * o.speed / 3600:.0f} simulated hours in {o.duration_s:.0f} s "
            f"(×{o.speed:g})"
        )
        self.prepare_dir()
        self.out.line(f"  everything goes to {rel(self.var)}/ (emptied at every start)")
        self.out.line()
        self.start_servers()
        self.write_fleet()
        self.start_ingest()
        self.run_fleet()
        self.wait_stored()
        verdict = self.verify()
        self.fullest_bins()
        self.deadletter()
        self.next_steps()
        if o.keep_running:
            self.keep_running()
        return verdict

    def prepare_dir(self) -> None:
        """Lock the directory, stop leftovers of a demo that was killed, start from empty."""
        var = self.var
        if any(c.isspace() for c in str(var)):
            raise DemoError(f"{var}: the servers' configs cannot hold paths with spaces; use --var")
        if var.exists() and any(var.iterdir()) and not (var / _MARKER).exists():
            raise DemoError(
                f"{rel(var)} exists and was not made by the demo; the demo empties its directory "
                "at every start, so choose another --var or remove it yourself"
            )
        var.mkdir(parents=True, exist_ok=True)
        lock = (var / _MARKER).open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            owner = lock.read().strip() or "?"
            lock.close()
            raise DemoError(
                f"another demo (pid {owner}) is using {rel(var)}; stop it (Ctrl-C in its "
                "terminal) or give this one its own --var"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock
        self.stop_leftovers()
        for entry in var.iterdir():
            if entry.name == _MARKER:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def stop_leftovers(self) -> None:
        """Processes recorded by an earlier run of this directory that are still alive (that
        run was SIGKILLed): SIGTERM, then SIGKILL. PID + start time, so never a stranger."""
        try:
            records = (self.var / _PIDS).read_text().split("\n")
        except FileNotFoundError:
            return
        alive: list[tuple[int, int, str]] = []
        for record in records:
            parts = record.split()
            if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
                continue
            pid, start, name = int(parts[0]), int(parts[1]), parts[2]
            if proc_starttime(pid) == start:
                alive.append((pid, start, name))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                    os.kill(pid, signal.SIGCONT)
        if not alive:
            return
        deadline = time.monotonic() + 15
        while any(proc_starttime(pid) == start for pid, start, _ in alive):
            if time.monotonic() > deadline:
                for pid, start, _ in alive:
                    if proc_starttime(pid) == start:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.1)
        names = ", ".join(f"{name} ({pid})" for pid, _, name in alive)
        self.out.line(f"  stopped what an earlier, killed demo left running: {names}")

    def record(self, pid: int, name: str) -> None:
        start = proc_starttime(pid)
        if start is not None:
            with (self.var / _PIDS).open("a") as f:
                f.write(f"{pid} {start} {name}\n")

    def start_servers(self) -> None:
        servers = harness()
        ports = {"mosquitto": pick_port(1883), "influxd": pick_port(8086)}
        self.out.line("servers")
        for name in ("mosquitto", "influxd"):
            cls = servers.Mosquitto if name == "mosquitto" else servers.InfluxDB1
            directory = self.var / ("mosquitto" if name == "mosquitto" else "influxdb")
            for attempt in (1, 2):
                server = cls(directory, port=ports[name] if attempt == 1 else None)
                if name == "mosquitto":
                    self.mosquitto = server
                else:
                    self.influxd = server
                try:
                    t0 = time.monotonic()
                    server.start()
                    break
                except servers.ServerError as exc:
                    if attempt == 1 and "already in use" in str(exc).lower():
                        continue  # someone took the port since we looked: any free one
                    raise
            self.record(server.pid, name)
            standard = 1883 if name == "mosquitto" else 8086
            note = "" if server.port == standard else f"  ({standard} is taken)"
            url = server.url if name == "mosquitto" else f"{server.url} db {DB}"
            self.out.line(
                f"  {name:<11} {url:<32} ready in {time.monotonic() - t0:4.1f} s   "
                f"log {rel(server.log_path)}{note}"
            )
        assert self.influxd is not None
        self.influxd.create_database(DB)

    def write_fleet(self) -> None:
        o = self.o
        argv = [*tool("taza-sim"), "fleet"]
        argv += flags(ecoboxes=o.ecoboxes, rvms=o.rvms, regions=",".join(o.regions), seed=o.seed)
        rc, _ = self.run_tool("fleet", [*argv, *flags(out=self.fleet)], timeout=60)
        if rc != 0:
            raise failure(f"taza-sim fleet failed (exit {rc})", self.var / "fleet.log")
        self.out.line(
            f"  {'fleet':<11} {rel(self.fleet):<32} {o.ecoboxes + o.rvms} devices, seed {o.seed}"
        )

    def start_ingest(self) -> None:
        assert self.mosquitto is not None
        assert self.influxd is not None
        log = self.var / "ingest.log"
        port = pick_port(8080)
        for attempt in (1, 2):
            if port is None:
                port = harness().free_port()
            self.http = f"http://{HOST}:{port}"
            env = {
                **self.env,
                "TAZA_MQTT_URL": self.mosquitto.url,
                "TAZA_MQTT_CLIENT_ID": "taza-ingest-demo",
                "TAZA_INFLUX_API": "v1",
                "TAZA_INFLUX_URL": self.influxd.url,
                "TAZA_INFLUX_DB": DB,
                "TAZA_REGISTRY": str(self.fleet),
                "TAZA_DATA_DIR": str(self.data_dir),
                "TAZA_HTTP_ADDR": f"{HOST}:{port}",
                "TAZA_LOG_FORMAT": "text",
            }
            t0 = time.monotonic()
            self.ingest = self.spawn("taza-ingest", [*tool("taza-ingest"), "run"], log, env=env)
            rc = self._wait_ready(self.ingest)
            if rc is None:
                note = "" if port == 8080 else "  (8080 is taken)"
                self.out.line(
                    f"  {'taza-ingest':<11} {self.http:<32} ready in "
                    f"{time.monotonic() - t0:4.1f} s   log {rel(log)}{note}"
                )
                return
            if attempt == 1 and "in use" in log.read_text(errors="replace"):
                port = None  # the HTTP port was taken since we looked
                continue
            raise failure(f"taza-ingest exited with code {rc} before it was ready", log)

    def _wait_ready(self, child: Child, timeout: float = 60.0) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = child.proc.poll()
            if rc is not None:
                return rc
            with contextlib.suppress(OSError):
                if http_get(f"{self.http}/readyz", timeout=1.0)[0] == 200:
                    return None
            time.sleep(0.2)
        raise failure(f"taza-ingest was not ready within {timeout:.0f} s", child.log)

    def run_fleet(self) -> None:
        o = self.o
        assert self.mosquitto is not None
        assert self.ingest is not None
        log = self.var / "sim.log"
        summary_path = self.var / "run-summary.json"
        self.out.line()
        self.out.line(
            f"fleet running: {MALFORMED_RATE:.1%} of messages malformed and {DUPLICATE_RATE:.1%} "
            "sent twice, on purpose"
        )
        argv = [*tool("taza-sim"), "run", "--json"]
        argv += flags(broker=self.mosquitto.url, fleet=self.fleet, seed=o.seed)
        argv += flags(speed=f"{o.speed:g}", duration=f"{o.duration_s:g}s", log=self.run_log)
        argv += flags(malformed_rate=MALFORMED_RATE, duplicate_rate=DUPLICATE_RATE)
        argv += flags(client_prefix="taza-demo", drain_timeout="10s")
        with summary_path.open("wb") as stdout:
            sim = self.spawn("taza-sim", argv, log, stdout=stdout, stderr_pipe=True)
        latest: dict[str, str] = {}
        others: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(
            target=self._read_progress, args=(sim, log, latest, others), daemon=True
        )
        reader.start()
        header = (
            f"  {'time':>5}  {'simulated (UTC+5)':<16}  {'published':>9}  {'msg/s':>5}  "
            f"{'online':>9} │ {'received':>9}  {'rejected':>8}  {'points':>9}  {'queue':>5}"
        )
        self.out.line(f"  {'':<5}  {'── taza-sim ':─<45}   {'── taza-ingest ':─<38}")
        self.out.line(header)
        every = 10.0 if self.out.tty else 5.0
        t0 = time.monotonic()
        next_row = t0 + every
        shown_others = 0
        while True:
            rc = sim.proc.poll()
            while not others.empty():
                text = others.get()
                shown_others += 1
                if shown_others <= 10:
                    self.out.line(f"  taza-sim: {text}")
                elif shown_others == 11:
                    self.out.line(f"  taza-sim: (more in {rel(log)})")
            if rc is not None:
                break
            if self.ingest.proc.poll() is not None:
                raise failure(
                    f"taza-ingest died during the run ({exit_text(self.ingest.proc.returncode)})",
                    self.ingest.log,
                )
            row = self._row(latest, time.monotonic() - t0)
            if time.monotonic() >= next_row:
                self.out.line(row)
                next_row += every
            else:
                self.out.status(row)
            time.sleep(1.0 - (time.monotonic() - t0) % 1.0)
        reader.join(10)
        if rc != 0:
            raise failure(f"taza-sim run failed ({exit_text(rc)})", log)
        self.out.line(self._row(latest, time.monotonic() - t0))
        try:
            result: dict[str, Any] = json.loads(summary_path.read_text())
        except (OSError, ValueError) as exc:
            raise DemoError(
                f"taza-sim run wrote no summary to {rel(summary_path)}: {exc}"
            ) from None
        lag = result.get("steady_lag_seconds") or {}
        self.out.line(
            f"  taza-sim     published {fmt(result['published'])} messages, all acknowledged by "
            f"the broker · {result['reconnects']} reconnects"
            + (f" · PUBACK p99 {lag['p99'] * 1000:.0f} ms" if "p99" in lag else "")
        )

    def _read_progress(
        self, sim: Child, log: Path, latest: dict[str, str], others: queue.Queue[str]
    ) -> None:
        assert sim.proc.stderr is not None
        with log.open("ab") as f:
            for raw in sim.proc.stderr:
                f.write(raw)
                f.flush()
                text = raw.decode("utf-8", "replace").rstrip()
                m = _PROGRESS.match(text)
                if m:
                    latest.update(m.groupdict())
                elif text.strip():
                    others.put(text.strip())

    def _row(self, latest: dict[str, str], elapsed: float) -> str:
        sim_time = "starting"
        if latest.get("sim"):
            with contextlib.suppress(ValueError):
                when = datetime.fromisoformat(latest["sim"]).replace(tzinfo=UTC)
                sim_time = when.astimezone(KZ).strftime("%a %d %b %H:%M")
        m: dict[str, float] = {}
        with contextlib.suppress(OSError):
            m = metrics(f"{self.http}/metrics")
        online = f"{latest['on']}/{latest['n']}" if "n" in latest else "-"
        return (
            f"  {elapsed:>4.0f}s  {sim_time:<16}  {fmt(float(latest.get('pub', 0))):>9}  "
            f"{fmt(float(latest.get('rate', 0))):>5}  {online:>9} │ "
            f"{fmt(m.get('taza_messages_received_total', 0)):>9}  "
            f"{fmt(m.get('taza_messages_rejected_total', 0)):>8}  "
            f"{fmt(m.get('taza_points_written_total', 0)):>9}  "
            f"{fmt(m.get('taza_queue_depth', 0)):>5}"
        )

    def wait_stored(self, timeout: float = 60.0) -> None:
        """Until taza-ingest has acknowledged (= stored or dead-lettered) every logged message."""
        assert self.ingest is not None
        expected = 0
        with self.run_log.open("rb") as f:
            for line in f:
                expected += b'"acked":true' in line
        t0 = time.monotonic()
        last_acked, still_since = -1.0, t0
        while True:
            if self.ingest.proc.poll() is not None:
                raise failure("taza-ingest died after the run", self.ingest.log)
            m = metrics(f"{self.http}/metrics")
            acked = m.get("taza_messages_acked_total", 0.0)
            idle = m.get("taza_queue_depth", 0.0) == 0
            now = time.monotonic()
            if acked != last_acked:
                last_acked, still_since = acked, now
            if idle and (acked >= expected or now - still_since > 5):
                break
            if now - t0 > timeout:
                self.out.line(
                    f"  taza-ingest acknowledged {fmt(acked)} of {fmt(expected)} messages within "
                    f"{timeout:.0f} s; verifying what is there"
                )
                break
            time.sleep(0.2)
        self.out.line(
            f"  taza-ingest  received {fmt(m.get('taza_messages_received_total', 0))} · "
            f"accepted {fmt(m.get('taza_messages_accepted_total', 0))} · "
            f"rejected {fmt(m.get('taza_messages_rejected_total', 0))} · "
            f"{fmt(m.get('taza_points_written_total', 0))} points written · "
            f"{fmt(m.get('taza_write_retries_total', 0))} retries"
        )

    def verify(self) -> int:
        assert self.influxd is not None
        self.out.line()
        self.out.line("published vs stored (taza-sim verify)")
        argv = [*tool("taza-sim"), "verify"]
        argv += flags(log=self.run_log, influx_url=self.influxd.url, db=DB)
        argv += flags(deadletter=self.data_dir / "deadletter")
        rc, text = self.run_tool("verify", argv, timeout=300)
        if rc not in (0, 1):
            raise failure(f"taza-sim verify could not compare (exit {rc})", self.var / "verify.log")
        for line in text.rstrip().splitlines():
            if line.strip():
                self.out.line(f"  {line}")
        return rc

    def fullest_bins(self) -> None:
        assert self.influxd is not None
        capacity: dict[str, str] = {}
        with contextlib.suppress(OSError), self.fleet.open() as f:
            for rec in csv.DictReader(f):
                capacity[rec["device_id"]] = rec.get("capacity_l", "")
        rows = self.influxd.query(
            "SELECT last(fill_pct) AS fill_pct FROM fill "
            "GROUP BY region, device_id, site, fraction",
            DB,
        )
        rvm_rows = self.influxd.query(
            "SELECT last(fill_pct) AS fill_pct FROM rvm_bin GROUP BY region, device_id, material",
            DB,
        )
        by_region: dict[str, list[dict[str, object]]] = {}
        for row in rows:
            by_region.setdefault(str(row.get("region")), []).append(row)
        self.out.line()
        self.out.line(
            f"fullest eco-boxes per region (latest reading; crews come at {FULL_PCT:g} %)"
        )
        self.out.line(
            f"  {'region':<10} {'device':<16} {'site':<12} {'fraction':<9} {'capacity':>8} "
            f"{'fill':>7}"
        )

        def pct(row: dict[str, object]) -> float:
            value = row.get("fill_pct")
            return float(value) if isinstance(value, int | float) else 0.0

        for region in sorted(by_region):
            devices = sorted(by_region[region], key=pct, reverse=True)
            for i, row in enumerate(devices[:TOP_N]):
                device = str(row.get("device_id"))
                cap = capacity.get(device, "")
                cap = f"{float(cap):.0f} L" if cap else "-"
                self.out.line(
                    f"  {region if i == 0 else '':<10} {device:<16} {row.get('site') or '-':<12} "
                    f"{row.get('fraction') or '-':<9} {cap:>8} {pct(row):>5.1f} %"
                )
            full = sum(1 for row in devices if pct(row) >= FULL_PCT)
            mean = sum(pct(row) for row in devices) / len(devices)
            line = (
                f"  {'':<10} {len(devices)} eco-boxes, mean {mean:.0f} %, {full} at or above "
                f"{FULL_PCT:g} %"
            )
            bins = [r for r in rvm_rows if r.get("region") == region]
            if bins:
                top = max(bins, key=pct)
                line += (
                    f" · fullest RVM bin {top.get('device_id')} {top.get('material')} "
                    f"{pct(top):.0f} %"
                )
            self.out.line(line)
        if not by_region:
            self.out.line("  (no fill readings in the database)")

    def deadletter(self) -> None:
        self.out.line()
        argv = [*tool("taza-ingest"), "deadletter", "--summary", "--json"]
        rc, text = self.run_tool("deadletter", [*argv, *flags(data_dir=self.data_dir)], timeout=60)
        try:
            doc = json.loads(text) if rc == 0 else None
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise failure(f"taza-ingest deadletter failed (exit {rc})", self.var / "deadletter.log")
        summary = doc.get("summary") or {}
        by_reason: dict[str, int] = summary.get("by_reason") or {}
        total = summary.get("total", 0)
        self.out.line(
            f"dead-letter store ({rel(self.data_dir / 'deadletter')}): {fmt(total)} rejected "
            "messages, each with its reason"
        )
        parts = [f"{reason} {count}" for reason, count in by_reason.items()]
        line = " "
        for part in parts:
            if len(line) + len(part) + 3 > 96:
                self.out.line(line.rstrip(" ·"))
                line = " "
            line += f" {part} ·"
        if parts:
            self.out.line(line.rstrip(" ·"))

    def next_steps(self) -> None:
        assert self.influxd is not None
        assert self.mosquitto is not None
        q = (
            f"q() {{ curl -sG {self.influxd.url}/query -H 'Accept: application/csv' "
            f'--data-urlencode db={DB} --data-urlencode "q=$1"; }}'
        )
        self.out.line()
        self.out.line("where to look next")
        if not self.o.keep_running:
            self.out.line(
                "  (the servers stop when the demo ends; `make demo DEMO_ARGS=--keep-running` "
                "keeps them up for this)"
            )
        self.out.line(f"  taza-ingest   curl -s {self.http}/metrics | grep '^taza_'")
        self.out.line(f"                curl -s {self.http}/readyz")
        self.out.line("  InfluxQL      (no influx CLI needed: curl speaks InfluxQL, CSV out)")
        self.out.line(f"    {q}")
        for comment, query in INFLUXQL_EXAMPLES:
            self.out.line(f"    # {comment}")
            self.out.line(f"    q '{query}'")
        self.out.line(
            f"  dead letters  {shown('taza-ingest')} deadletter --data-dir {rel(self.data_dir)} "
            "--tail 5"
        )
        self.out.line(
            f"  verify        {shown('taza-sim')} verify --log {rel(self.run_log)} "
            f"--influx-url {self.influxd.url} --db {DB} --deadletter "
            f"{rel(self.data_dir / 'deadletter')}"
        )
        self.out.line(
            f"  MQTT          mosquitto_sub -h {HOST} -p {self.mosquitto.port} "
            "-t 'taza/v1/+/+/+/state' -v    (retained presence of every device)"
        )
        logs = [
            self.var / "ingest.log",
            self.var / "sim.log",
            self.mosquitto.log_path,
            self.influxd.log_path,
        ]
        self.out.line(f"  logs          {'  '.join(rel(p) for p in logs[:2])}")
        self.out.line(f"                {'  '.join(rel(p) for p in logs[2:])}")
        self.out.line(
            "  docs          docs/demo.md, docs/ingest.md, docs/simulator.md, docs/protocol.md"
        )

    def keep_running(self) -> None:
        assert self.ingest is not None
        self.out.line()
        self.out.line("servers and taza-ingest keep running; press Ctrl-C to stop them")
        try:
            while self.ingest.proc.poll() is None:
                time.sleep(1.0)
        except KeyboardInterrupt:
            self.out.line()
            return
        raise failure(f"taza-ingest exited (code {self.ingest.proc.returncode})", self.ingest.log)

    # -- processes

    def spawn(
        self,
        name: str,
        argv: list[str],
        log: Path,
        *,
        env: dict[str, str] | None = None,
        stdout: IO[bytes] | None = None,
        stderr_pipe: bool = False,
    ) -> Child:
        """A child in its own session: a Ctrl-C reaches only the demo, which stops the
        children in order (simulator, ingest, broker, database) instead of all at once."""
        with self.signals.deferred(), log.open("ab") as logf:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=stdout if stdout is not None else logf,
                stderr=subprocess.PIPE if stderr_pipe else logf,
                cwd=self.var,
                env=env or self.env,
                start_new_session=True,
            )
            child = Child(name, proc, log)
            self.children.append(child)
            self.record(proc.pid, name)
        return child

    def run_tool(self, name: str, argv: list[str], timeout: float) -> tuple[int, str]:
        """A short command: stdout captured, stderr to var/<name>.log; interruptible."""
        out_path = self.var / f"{name}.out"
        with out_path.open("wb") as stdout:
            child = self.spawn(name, argv, self.var / f"{name}.log", stdout=stdout)
        deadline = time.monotonic() + timeout
        while child.proc.poll() is None:
            if time.monotonic() > deadline:
                self._terminate(child, signal.SIGTERM, 5)
                raise failure(f"{name} took longer than {timeout:.0f} s", child.log)
            time.sleep(0.05)
        return child.proc.returncode, out_path.read_text(errors="replace")

    def _terminate(self, child: Child, sig: signal.Signals, timeout: float) -> int:
        proc = child.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
                self.out.line(f"  {child.name} ignored {sig.name} for {timeout:.0f} s: killed")
        return proc.returncode

    def stop_all(self) -> bool:
        """Simulator and tools, then taza-ingest (SIGTERM: flush, ack, exit 0), then the broker
        and the database. True when every part stopped cleanly."""
        self.signals.stopping = True
        clean = True
        stopped: list[str] = []
        for child in reversed(self.children):
            if child is self.ingest or child.proc.poll() is not None:
                continue
            sig = signal.SIGINT if child.name == "taza-sim" else signal.SIGTERM
            stopped.append(f"{child.name} ({exit_text(self._terminate(child, sig, 40))})")
        if self.ingest is not None and self.ingest.proc.poll() is None:
            rc = self._terminate(self.ingest, signal.SIGTERM, 30)
            stopped.append(f"taza-ingest ({exit_text(rc)})")
            if rc != 0:
                clean = False
                self.out.line(str(failure(f"taza-ingest exited with code {rc}", self.ingest.log)))
        for server in (self.mosquitto, self.influxd):
            if server is None:
                continue
            try:
                running = server.running
                server.stop()  # raises if it had died or stopped uncleanly
                if running:
                    stopped.append(server.name)
            except RuntimeError as exc:
                clean = False
                self.out.line(f"  {exc}")
        if stopped:
            self.out.line(f"  stopped {', '.join(stopped)}")
        if self._lock is not None:  # the directory is ours (another demo may hold it)
            if clean:
                with contextlib.suppress(OSError):
                    (self.var / _PIDS).unlink()
            self._lock.close()
        return clean


def harness() -> Any:
    """devstack.servers (moving into devstack.demo next)."""
    from devstack import servers

    return servers


# ----- command line ---------------------------------------------------------------------------


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if seconds < 5:
        raise click.BadParameter("at least 5s")
    return seconds


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--short", is_flag=True, help="CI size: 60 eco-boxes, 6 RVMs, a 10 s run (about 15 s in all)."
)
@click.option(
    "--duration",
    callback=_duration,
    help="Real length of the fleet run (60s, 5m); it always simulates the last 24 hours unless "
    "--speed says otherwise.  [default: 60s; --short: 10s]",
)
@click.option(
    "--ecoboxes",
    type=click.IntRange(1),
    help="Eco-boxes (street bins with fill sensors).  [default: 300; --short: 60]",
)
@click.option(
    "--rvms",
    type=click.IntRange(0),
    help="Reverse vending machines.  [default: 30; --short: 6]",
)
@click.option(
    "--regions",
    default="almaty,astana",
    show_default=True,
    help="Comma-separated regions (built-in city centres: `taza-sim fleet --help`).",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=1),
    help="Simulated seconds per real second.  [default: 86400 / duration, one simulated day: "
    "×1440 for 60 s]",
)
@click.option("--seed", type=int, default=7, show_default=True, help="Fleet and stream seed.")
@click.option(
    "--keep-running",
    is_flag=True,
    help="After the report, leave the servers and taza-ingest up until Ctrl-C, to explore.",
)
@click.option(
    "--var",
    "var",
    type=click.Path(file_okay=False, path_type=Path),
    default=REPO_ROOT / "var" / "demo",
    show_default="var/demo",
    help="Directory for the servers' data, the logs, the fleet file and the ground-truth log; "
    "emptied at every start (only if the demo made it).",
)
def main(
    short: bool,
    duration: float | None,
    ecoboxes: int | None,
    rvms: int | None,
    regions: str,
    speed: float | None,
    seed: int,
    keep_running: bool,
    var: Path,
) -> None:
    """The taza demo: a simulated fleet through a real broker and taza-ingest into InfluxDB.

    Starts Mosquitto (from mosquitto.conf) and InfluxDB 1.x on 127.0.0.1 (the standard ports
    1883 / 8086 / 8080 when free, others when not, printed), writes a fleet file, starts
    taza-ingest on it and runs the fleet, with a few malformed and duplicated messages on
    purpose, showing live progress. Then it prints the verify report (published vs stored,
    lost, duplicated, correctly rejected), the fullest bins per region, the dead-letter summary
    and where to look next. Server and service logs go to files in the --var directory.

    \b
    Examples:
      make demo                               # the full demo, about 70 s
      make demo DEMO_ARGS=--short             # CI size, about 15 s
      make demo DEMO_ARGS=--keep-running      # explore afterwards; Ctrl-C ends it
      .venv/bin/python -m simulator.demo --duration 5m --ecoboxes 2000 --rvms 100

    \b
    Exit status: 0 when verify finds nothing lost, partial or wrongly accepted and
    everything stopped cleanly; 1 otherwise (with the log tail of the part that failed);
    130 on Ctrl-C (with --keep-running, Ctrl-C after the report is the normal end: 0).
    More: docs/demo.md.
    """
    if duration is None:
        duration = 10.0 if short else 60.0
    try:
        region_list = parse_regions(regions)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--regions") from None
    opts = Options(
        var=var,
        ecoboxes=ecoboxes if ecoboxes is not None else (60 if short else 300),
        rvms=rvms if rvms is not None else (6 if short else 30),
        regions=region_list,
        duration_s=duration,
        speed=speed if speed is not None else SIM_DAY_S / duration,
        seed=seed,
        keep_running=keep_running,
    )
    if opts.speed * opts.duration_s > 6 * SIM_DAY_S:
        raise click.BadParameter(
            "--speed × --duration spans more than 6 simulated days; taza-ingest rejects readings "
            "older than 7 days (the contract's ts window)",
            param_hint="--speed",
        )
    console = Console(sys.stdout)
    signals = Signals(console)
    signals.install()
    demo = Demo(opts, console, signals)
    code = 1
    clean = False
    try:
        try:
            code = demo.run()
        except KeyboardInterrupt:
            signals.stopping = True
            console.line()
            console.line("interrupted: stopping taza-sim, taza-ingest, mosquitto and influxd ...")
            code = 130
        except (RuntimeError, OSError) as exc:  # DemoError, harness errors, network
            signals.stopping = True
            console.line()
            console.line(f"FAILED: {exc}")
            code = 1
    finally:
        clean = demo.stop_all()
    elapsed = time.monotonic() - demo.started
    if code == 0 and not clean:
        code = 1
    console.line()
    if code == 0:
        console.line(f"OK: nothing lost; everything stopped cleanly ({elapsed:.0f} s in all)")
    elif code == 130:
        console.line(
            f"stopped {'cleanly' if clean else 'with errors (above)'} after {elapsed:.0f} s; "
            f"logs in {rel(demo.var)}/"
        )
    else:
        where = f"; logs in {rel(demo.var)}/" if demo.owns_dir else ""
        console.line(f"demo FAILED after {elapsed:.0f} s (details above){where}")
    sys.exit(code)


if __name__ == "__main__":
    main()
