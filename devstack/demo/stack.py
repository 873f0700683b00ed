"""The demo's steps: the servers, the fleet file, taza-ingest, the fleet run, until all is stored.

Each step starts its part through the :class:`~devstack.demo.supervisor.Supervisor` (so it is
stopped in order, also on Ctrl-C) and reads it only through machine interfaces: the
simulator's ``--progress jsonl`` records and ``--json`` summary, taza-ingest's ``/readyz`` and
``/metrics`` (prometheus_client's parser, via :mod:`devstack.metrics`).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from devstack import metrics
from devstack.demo.console import Console, fmt, progress_header, progress_row, rel
from devstack.demo.crew import AlertFeed
from devstack.demo.firmware import FeedbackFeed, Flood, flood
from devstack.demo.security import Tokens, make_tokens
from devstack.demo.supervisor import (
    Child,
    DemoError,
    Supervisor,
    exit_text,
    failure,
    flags,
    pick_port,
    tool,
)
from devstack.ingest_process import http_get
from devstack.servers import HOST, InfluxDB1, Mosquitto, ServerError, free_port

DB = "taza"
MALFORMED_RATE = 0.005
DUPLICATE_RATE = 0.005
# One device sends this many messages at once, a third into the run: 2.5× the rate limit's
# default burst (1000), so most are refused as rate_limited (docs/protocol.md, "Rate limit").
FLOOD_COUNT = 2500


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


def ingest_metrics(http: str, token: str | None = None) -> dict[str, float]:
    """taza-ingest's /metrics: {sample name: value summed over its label sets}; with API
    tokens it needs an operator token."""
    status, body = http_get(f"{http}/metrics", token=token)
    if status != 200:
        raise OSError(f"{http}/metrics: HTTP {status}")
    return metrics.totals(body)


class Stack:
    """The running demo: its servers, taza-ingest and the files of this run."""

    def __init__(self, opts: Options, console: Console, supervisor: Supervisor) -> None:
        self.o = opts
        self.out = console
        self.sup = supervisor
        self.var = supervisor.var
        self.mosquitto: Mosquitto | None = None
        self.influxd: InfluxDB1 | None = None
        self.ingest: Child | None = None
        self.http = ""
        self.crew: AlertFeed | None = None
        self.feedback: FeedbackFeed | None = None
        self.flood: Flood | None = None
        self.tokens: Tokens | None = None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TAZA_")}
        self.env["PYTHONUNBUFFERED"] = "1"

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

    @property
    def tokens_file(self) -> Path:
        return self.var / "api-tokens.json"

    @property
    def flooder(self) -> str:
        return f"eb-{self.o.regions[0]}-flood"

    @property
    def token(self) -> str | None:
        """The operator token: what the demo itself asks /metrics and the API with."""
        return self.tokens.operator if self.tokens is not None else None

    def metrics(self) -> dict[str, float]:
        return ingest_metrics(self.http, self.token)

    def run_tool(self, name: str, argv: list[str], timeout: float) -> tuple[int, str]:
        return self.sup.run_tool(name, argv, timeout, self.env)

    # -- the steps

    def start_servers(self) -> None:
        ports = {"mosquitto": pick_port(1883), "influxd": pick_port(8086)}
        self.out.line("servers")
        for name in ("mosquitto", "influxd"):
            cls = Mosquitto if name == "mosquitto" else InfluxDB1
            directory = self.var / ("mosquitto" if name == "mosquitto" else "influxdb")
            for attempt in (1, 2):
                server = cls(directory, port=ports[name] if attempt == 1 else None)
                self.sup.servers[name] = server
                if isinstance(server, Mosquitto):
                    self.mosquitto = server
                else:
                    self.influxd = server
                try:
                    t0 = time.monotonic()
                    server.start()
                    break
                except ServerError as exc:
                    if attempt == 1 and "already in use" in str(exc).lower():
                        continue  # someone took the port since we looked: any free one
                    raise
            self.sup.record(server.pid, name)
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
                port = free_port()
            self.http = f"http://{HOST}:{port}"
            if self.tokens is None:
                self.tokens = make_tokens(self.sup, self.env, self.tokens_file, self.o.regions[0])
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
                "TAZA_API_TOKENS_FILE": str(self.tokens_file),
                # The simulated day is replayed in a minute, so its alerts are hours old by the
                # wall clock; live notification for all of it, as if the day were happening now.
                "TAZA_ALERT_NOTIFY_MAX_AGE_S": str(int(self.o.duration_s * self.o.speed) + 3600),
            }
            t0 = time.monotonic()
            self.ingest = self.sup.spawn("taza-ingest", [*tool("taza-ingest"), "run"], log, env=env)
            self.sup.service = self.ingest
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
            if http_get(f"{self.http}/readyz", timeout=1.0)[0] == 200:
                return None
            time.sleep(0.2)
        raise failure(f"taza-ingest was not ready within {timeout:.0f} s", child.log)

    def start_crew(self) -> None:
        """A crew app's subscription to every alert, before any device publishes."""
        assert self.mosquitto is not None
        self.crew = AlertFeed(self.mosquitto.host, self.mosquitto.port).start()
        self.feedback = FeedbackFeed(self.mosquitto.host, self.mosquitto.port).start()

    def stop_crew(self) -> None:
        if self.crew is not None:
            self.crew.stop()
            self.crew = None
        if self.feedback is not None:
            self.feedback.stop()
            self.feedback = None

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
        argv = [*tool("taza-sim"), "run", "--json", "--progress", "jsonl"]
        argv += flags(broker=self.mosquitto.url, fleet=self.fleet, seed=o.seed)
        argv += flags(speed=f"{o.speed:g}", duration=f"{o.duration_s:g}s", log=self.run_log)
        argv += flags(malformed_rate=MALFORMED_RATE, duplicate_rate=DUPLICATE_RATE)
        argv += flags(client_prefix="taza-demo", drain_timeout="10s")
        with summary_path.open("wb") as stdout:
            sim = self.sup.spawn(
                "taza-sim", argv, log, env=self.env, stdout=stdout, stderr_pipe=True
            )
        latest: dict[str, object] = {}
        others: queue.Queue[str] = queue.Queue()
        assert sim.proc.stderr is not None
        reader = threading.Thread(
            target=read_progress, args=(sim.proc.stderr, log, latest, others), daemon=True
        )
        reader.start()
        for line in progress_header():
            self.out.line(line)
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
            if self.flood is None and time.monotonic() - t0 >= o.duration_s / 3:
                self.flood = flood(
                    self.mosquitto.host,
                    self.mosquitto.port,
                    o.regions[0],
                    self.flooder,
                    FLOOD_COUNT,
                )
                self.out.line(
                    f"  {self.flooder} floods: {FLOOD_COUNT:,} messages at once "
                    "(the rate limit: 100/s, bursts of 1,000)"
                )
            if self.ingest.proc.poll() is not None:
                raise failure(
                    f"taza-ingest died during the run ({exit_text(self.ingest.proc.returncode)})",
                    self.ingest.log,
                )
            row = self._row(latest, time.monotonic() - t0)
            if time.monotonic() >= next_row:
                self.out.line(row)
                if self.crew is not None and self.crew.messages:
                    self.out.line(self.crew.live_line())
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

    def _row(self, latest: dict[str, object], elapsed: float) -> str:
        m: dict[str, float] = {}
        with contextlib.suppress(OSError, ValueError):
            m = self.metrics()
        return progress_row(dict(latest), m, elapsed)

    def wait_stored(self, timeout: float = 60.0) -> None:
        """Until taza-ingest has acknowledged (= stored or dead-lettered) every logged message."""
        assert self.ingest is not None
        expected = 0
        with self.run_log.open("rb") as f:
            for line in f:
                expected += b'"acked":true' in line
        if self.flood is not None:  # not in taza-sim's log: acknowledged all the same
            self.flood.done.wait(60)
            if self.flood.error:
                raise DemoError(f"the flooding device failed: {self.flood.error}")
            expected += self.flood.acked
        t0 = time.monotonic()
        last_acked, still_since = -1.0, t0
        while True:
            if self.ingest.proc.poll() is not None:
                raise failure("taza-ingest died after the run", self.ingest.log)
            m = self.metrics()
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

    def keep_running(self) -> None:
        """Until Ctrl-C (the normal end) or taza-ingest exits on its own (a failure)."""
        assert self.ingest is not None
        self.out.line()
        self.out.line(f"servers and taza-ingest keep running; the fleet page is {self.http}/")
        self.out.line("press Ctrl-C to stop them")
        try:
            while self.ingest.proc.poll() is None:
                time.sleep(1.0)
        except KeyboardInterrupt:
            self.out.line()
            return
        raise failure(f"taza-ingest exited (code {self.ingest.proc.returncode})", self.ingest.log)


def read_progress(
    stream: IO[bytes], log: Path, latest: dict[str, object], others: queue.Queue[str]
) -> None:
    """taza-sim's stderr, copied to its log: each ``{"event": "progress", ...}`` record
    replaces ``latest``; any other line (a warning, an error) goes to ``others`` for display."""
    with log.open("ab") as f:
        for raw in stream:
            f.write(raw)
            f.flush()
            text = raw.decode("utf-8", "replace").strip()
            if not text:
                continue
            record: object = None
            with contextlib.suppress(ValueError):
                record = json.loads(text)
            if isinstance(record, dict) and record.get("event") == "progress":
                latest.update(record)
            else:
                others.put(text)
