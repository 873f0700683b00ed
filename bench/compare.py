"""taza side by side with the broker's own QoS 1 ceiling and what users would write instead.

One command, one run, real local servers (devstack: mosquitto, influxd 1.x), the same
payloads and count for every contender, all fed by the same C publishers (several in
parallel, stdin kept open — see NOTES-servers.md). The stream (``--stream``):

- ``four-topics`` (default: the stream every figure in docs/performance.md before issue 11's
  last round was measured on, and the goals with them): ``mosquitto_pub -l -q 1`` with one
  topic each — four "devices" at ~10k msg/s, each reading another bin's (one message in six
  an alert-stage event); the per-device rate limit off, since it exists to refuse exactly
  that;
- ``fleet``: a fleet's backlog draining — 1,000 eco-boxes (taza-sim's calibrated
  model, its payload styles) each uploading its last 100 readings, every device on its own
  topic (``bench/cpub``, a C publisher built here: libmosquitto, a topic per line), taza
  with its default settings: 1,000 series in the database, payloads of taza-sim's three
  firmware styles, the alert stage's events at a real fleet's rate (≈ 4 %).

- ceiling: C publishers → mosquitto → ``mosquitto_sub -q 1`` (C); measured before the first
  contender and after each one, so every contender has a ceiling from its own minute;
- naive: paho → influxdb-client ``Point`` → one HTTP write per message (bounded by time:
  its rate comes from a shorter run);
- tuned-qos0: paho at QoS 0, f-string line protocol, 5000-line batches, no validation, no
  guarantee (what "just make it fast" looks like);
- taza: ``taza-ingest`` with every guarantee (QoS 1, validated, PUBACK after the write);
  then publish→queryable latency at half of taza's measured rate.

Printed: sustained msg/s, taza ÷ ceiling, taza ÷ naive, CPU µs/message of service, broker
and database (from /proc), peak RSS, latency p50/p99; ``--json``; ``--plot`` a PNG.

    .venv/bin/python bench/compare.py [--messages 100000] [--rounds 1] [--json] [--plot F]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from devstack.ingest_process import IngestProcess
from devstack.publisher import FLEET_ID, fill_messages, fleet_fill_payloads
from devstack.servers import InfluxDB1, Mosquitto, find_binary, free_port

HERE = Path(__file__).resolve().parent
PUBLISHERS = 4
TOPIC = "taza/v1/{region}/ecobox/{prefix}-p{p}/fill"
DEVICE_TOPIC = "taza/v1/{region}/ecobox/{prefix}-{d:05d}/fill"
CPUB = HERE / "cpub" / "cpub.c"
TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_hwm(pid: int) -> int:
    """Peak RSS in bytes (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Cpu:
    """CPU seconds of named processes between two instants."""

    pids: dict[str, int]
    start: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.start = {k: proc_cpu(p) for k, p in self.pids.items()}

    def us_per_msg(self, n: int) -> dict[str, float]:
        return {
            k: round((proc_cpu(p) - self.start[k]) / max(n, 1) * 1e6, 2)
            for k, p in self.pids.items()
        }


class Timeline:
    """The CPU of groups of processes (all their threads), sampled every ``interval`` s in a
    thread: where a run's time goes, moment by moment (``bench/drain_phases.py``). A process
    that exits keeps its last reading."""

    def __init__(self, interval: float = 0.2, progress: Callable[[], int] | None = None) -> None:
        self.interval = interval
        self.progress = progress  # messages done so far, read with each sample (or None)
        self.samples: list[tuple[float, dict[str, float]]] = []  # (s since start, CPU s so far)
        self.done: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, groups: dict[str, list[int]]) -> None:
        self.samples.clear()
        self.done.clear()
        self._stop.clear()
        last: dict[int, float] = {}

        def read() -> dict[str, float]:
            for pids in groups.values():
                for pid in pids:
                    with contextlib.suppress(OSError, IndexError):
                        last[pid] = proc_cpu(pid)
            if self.progress is not None:
                self.done.append(self.progress())
            return {g: sum(last.get(p, 0.0) for p in pids) for g, pids in groups.items()}

        t0 = time.monotonic()
        self.samples.append((0.0, read()))

        def run() -> None:
            while not self._stop.wait(self.interval):
                self.samples.append((time.monotonic() - t0, read()))
            self.samples.append((time.monotonic() - t0, read()))

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def usage(self) -> list[tuple[float, dict[str, float]]]:
        """(end of interval, {group: share of one core in it})."""
        out = []
        for (t0, a), (t1, b) in zip(self.samples, self.samples[1:], strict=False):
            dt = max(t1 - t0, 1e-9)
            out.append((t1, {g: (b[g] - a[g]) / dt for g in b}))
        return out


@dataclass(frozen=True)
class Mix:
    """The payloads every contender gets, in publish order. ``devices``: message ``i`` is
    device ``i % devices``'s, on its own topic (``None``: the four-topics stream)."""

    payloads: Sequence[bytes]
    devices: int | None = None

    def __len__(self) -> int:
        return len(self.payloads)

    def head(self, n: int) -> Mix:
        return Mix(self.payloads[:n], self.devices)

    def lines(self, p: int, prefix: str, region: str) -> list[bytes]:
        """Publisher ``p``'s input: every ``PUBLISHERS``-th message from the ``p``-th (with
        ``devices`` a multiple of ``PUBLISHERS``, each device's messages all on one)."""
        mine = self.payloads[p::PUBLISHERS]
        if self.devices is None:
            return list(mine)
        old = f'"{FLEET_ID}-'.encode()
        new = f'"{prefix}-'.encode()
        out = []
        for k, payload in enumerate(mine):
            d = (p + k * PUBLISHERS) % self.devices
            topic = DEVICE_TOPIC.format(region=region, prefix=prefix, d=d)
            out.append(topic.encode() + b"\t" + payload.replace(old, new, 1))
        return out


def cpub_binary(directory: Path) -> Path:
    """bench/cpub/cpub.c built into ``directory`` (gcc and libmosquitto-dev: `make setup`)."""
    out = directory / "cpub"
    if not out.exists():
        try:
            subprocess.run(
                [find_binary("gcc"), "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out),
                 str(CPUB), "-lmosquitto", "-lpthread"],
                check=True, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
        except subprocess.CalledProcessError as exc:
            raise SystemExit(f"building {CPUB} failed (make setup):\n{exc.stderr}") from None
    return out


class Publishers:
    """C publishers, one per slice of the mix; stdin stays open (mosquitto_pub -l drops what is
    queued at end of input). ``feed`` writes their lines, all at once or paced; ``close`` stops
    them once the receiver has everything."""

    cpub: Path | None = None  # set by main() for the fleet stream

    def __init__(self, broker: Mosquitto, prefix: str, mix: Mix, region: str = "almaty") -> None:
        self.slices = [mix.lines(p, prefix, region) for p in range(PUBLISHERS)]
        if mix.devices is not None:
            assert mix.devices % PUBLISHERS == 0, "a device's messages on one publisher"
            assert self.cpub is not None, "Publishers.cpub: built by main()"

        def command(p: int) -> list[str]:
            where = ["-h", broker.host, "-p", str(broker.port), "-i", f"{prefix}-pub-{p}"]
            if mix.devices is not None:
                return [str(self.cpub), *where, "-M", "1000"]
            topic = TOPIC.format(region=region, prefix=prefix, p=p)
            return [find_binary("mosquitto_pub"), *where, "-q", "1", "-l", "-M", "1000",
                    "-t", topic]  # fmt: skip

        self.procs = [
            subprocess.Popen(command(p), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
            for p in range(PUBLISHERS)
        ]
        time.sleep(0.3)  # connected

    def feed(self, rate: float | None = None) -> np.ndarray:
        """Write every line; returns the time each message was handed to its publisher."""
        n = sum(len(s) for s in self.slices)
        sent = np.zeros(n)
        start = time.monotonic()

        def one(p: int) -> None:
            stdin = self.procs[p].stdin
            assert stdin is not None
            lines = self.slices[p]
            if rate is None:
                sent[p::PUBLISHERS] = time.monotonic()
                stdin.write(b"\n".join(lines) + b"\n")
                stdin.flush()
                return
            step = 50
            per = rate / PUBLISHERS
            for i in range(0, len(lines), step):
                ahead = i / per - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
                sent[p + i * PUBLISHERS : p + (i + step) * PUBLISHERS : PUBLISHERS] = (
                    time.monotonic()
                )
                stdin.write(b"\n".join(lines[i : i + step]) + b"\n")
                stdin.flush()

        threads = [threading.Thread(target=one, args=(p,)) for p in range(PUBLISHERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sent

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def cpu(self) -> float:
        return sum(proc_cpu(p.pid) for p in self.procs)

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


def payload_mix(n: int, devices: int, prefix: str) -> list[bytes]:
    per = max(1, -(-n // devices))
    return [p for _, p, _ in fill_messages(devices, per, prefix=prefix)][:n]


def fleet_mix(n: int, devices: int) -> Mix:
    if devices % PUBLISHERS or n % devices:
        raise SystemExit(
            f"--stream fleet: --devices a multiple of {PUBLISHERS} that divides --messages"
        )
    return Mix(fleet_fill_payloads(devices, n // devices), devices)


def ceiling(
    broker: Mosquitto, payloads: Mix, tag: str, timeline: Timeline | None = None
) -> dict[str, float]:
    """C publishers → mosquitto → one C subscriber at QoS 1: the most any subscriber gets
    (``timeline``: sampled from the first publish until the subscriber has everything)."""
    sub = subprocess.Popen(
        [
            find_binary("mosquitto_sub"),
            *("-h", broker.host, "-p", str(broker.port), "-q", "1", "-i", f"ceil-{tag}"),
            *("-t", f"taza/v1/{tag}/#", "-C", str(len(payloads))),
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.4)  # subscribed before the first PUBLISH (no session before SUBACK)
    if sub.poll() is not None:
        raise SystemExit(f"ceiling {tag}: mosquitto_sub exited {sub.returncode}")
    pubs = Publishers(broker, tag, payloads, region=tag)
    cpu = Cpu({"broker": broker.pid, "subscriber": sub.pid})
    if timeline is not None:
        timeline.start({"receiver": [sub.pid], "broker": [broker.pid], "publishers": pubs.pids})
    start = time.monotonic()
    pubs.feed()
    try:
        code = sub.wait(180)
    except subprocess.TimeoutExpired:
        sub.kill()
        raise SystemExit(f"ceiling {tag}: the C subscriber did not get every message") from None
    elapsed = time.monotonic() - start
    if timeline is not None:
        timeline.stop()
    if code != 0:
        raise SystemExit(f"ceiling {tag}: mosquitto_sub exited {code}")
    # the subscriber has exited: its CPU is gone with it; the broker's is what counts here
    used = {"broker": round((proc_cpu(broker.pid) - cpu.start["broker"]) / len(payloads) * 1e6, 2)}
    pubs.close()
    return {"msgs_per_s": len(payloads) / elapsed, "seconds": elapsed, **used}


class Queryable:
    """The stored fill points of one database, and when all of a run's are queryable.

    ``wait`` must not tax the machine it measures. A count over the whole measurement costs
    the database ≈ 0.2 µs of CPU per stored point, each time (≈ 40 ms at 200k): counting every
    50 ms, as this did until issue 11's last round, took up to ≈ 0.4 of a core of this 2-core
    machine from the contender — more the longer its run — while the ceiling's C subscriber
    paid nothing. So by default (``completion="stats"``) it first polls what the database
    itself counts as accepted into this database (``SHOW STATS``, ≈ 0.6 ms): a point accepted
    is queryable, but that counter also counts other lines (taza's history) and rewrites,
    so it only says when counting can succeed. Then ``claimed`` (the contender's own count of
    points stored, taza's /metrics: ≈ 3 ms of its CPU, so asked only then), then the count,
    which alone decides. ``completion="count"``: the old way, a count every poll.
    """

    completion = "stats"  # or "count"; set by main() (--completion)

    def __init__(self, influxd: InfluxDB1, db: str) -> None:
        self.influxd, self.db = influxd, db
        influxd.create_database(db)

    def count(self) -> int:
        rows = self.influxd.query("SELECT count(fill_pct) FROM fill", db=self.db)
        return int(rows[0]["count"]) if rows else 0  # type: ignore[call-overload]

    def accepted(self) -> int:
        """Points the database accepted into this database so far, of any measurement."""
        rows = self.influxd.query("SHOW STATS FOR 'shard'")
        return sum(int(r["writePointsOk"]) for r in rows if r.get("database") == self.db)  # type: ignore[call-overload]

    def wait(
        self,
        n: int,
        timeout: float,
        interval: float = 0.05,
        claimed: Callable[[], int] | None = None,
    ) -> list[tuple[float, int]]:
        """(time, count) of each count made; the last is n or more unless ``timeout`` ran out."""
        polls: list[tuple[float, int]] = []
        deadline = time.monotonic() + timeout
        cheap = self.completion == "stats"
        while time.monotonic() < deadline:
            ready = not cheap or self.accepted() >= n
            if ready and cheap and claimed is not None:
                ready = claimed() >= n
            if ready:
                c = self.count()
                polls.append((time.monotonic(), c))
                if c >= n:
                    return polls
            time.sleep(interval)
        polls.append((time.monotonic(), self.count()))
        return polls


def bridge_process(
    kind: str, broker: Mosquitto, influxd: InfluxDB1, db: str
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "bridges.py"),
            kind,
            *(broker.host, str(broker.port), influxd.url, db),
        ],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"subscribed":
        raise SystemExit(f"{kind} bridge did not subscribe")
    return proc


def run_bridge(
    kind: str,
    broker: Mosquitto,
    influxd: InfluxDB1,
    payloads: Mix,
    time_limit: float,
) -> dict[str, float]:
    """A bridge of bench/bridges.py: msg/s until all stored, or what it stored in the limit."""
    store = Queryable(influxd, kind.replace("-", "_"))
    proc = bridge_process(kind, broker, influxd, store.db)
    cpu = Cpu({"service": proc.pid, "broker": broker.pid, "database": influxd.pid})
    pubs = Publishers(broker, kind, payloads)
    start = time.monotonic()
    threading.Thread(target=pubs.feed, daemon=True).start()
    polls = store.wait(len(payloads), time_limit)
    end, stored = polls[-1]
    used = cpu.us_per_msg(stored)
    rss = proc_hwm(proc.pid)
    proc.kill()
    proc.wait()
    pubs.close()
    return {
        "msgs_per_s": stored / (end - start),
        "stored": stored,
        "complete": stored >= len(payloads),
        "seconds": end - start,
        "cpu_us_per_msg": used,  # type: ignore[dict-item]
        "peak_rss_mib": round(rss / 2**20, 1),
    }


def latency(
    broker: Mosquitto, store: Queryable, payloads: Mix, rate: float, tag: str
) -> dict[str, float]:
    """Paced publishing; message i is queryable at the first poll counting more than i."""
    already = store.count()
    polls: list[tuple[float, int]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            polls.append((time.monotonic(), store.count() - already))
            if polls[-1][1] >= len(payloads):
                return
            time.sleep(0.02)

    pubs = Publishers(broker, tag, payloads)
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    sent = pubs.feed(rate)
    poller.join(120)
    stop.set()
    pubs.close()
    counts = np.array([c for _, c in polls])
    times = np.array([t for t, _ in polls])
    if not len(counts) or counts[-1] < len(payloads):
        raise SystemExit(f"latency: only {counts[-1] if len(counts) else 0} became queryable")
    # publishers interleave, so arrival order is only roughly sent order: sort the send times
    first = np.searchsorted(counts, np.arange(1, len(payloads) + 1), side="left")
    lat = times[first] - np.sort(sent)
    return {
        "rate": rate,
        "p50_ms": float(np.percentile(lat, 50) * 1000),
        "p99_ms": float(np.percentile(lat, 99) * 1000),
    }


def taza_env(
    broker: Mosquitto, influxd: InfluxDB1, db: str, payloads: Mix, env: dict[str, str], tag: str
) -> dict[str, str]:
    """taza-ingest's environment for one bench run (``env``: --taza-env, overrides)."""
    return {
        "TAZA_MQTT_URL": broker.url,
        "TAZA_MQTT_CLIENT_ID": f"taza-bench-{tag}",
        "TAZA_MQTT_TOPIC": "taza/v1/almaty/ecobox/+/fill",
        "TAZA_INFLUX_URL": influxd.url,
        "TAZA_INFLUX_DB": db,
        "TAZA_STATS_INTERVAL_S": "0",
        "TAZA_MQTT_SESSION_EXPIRY_S": "5",  # a stopped bench service leaves no queue behind
        # The four-topics stream is 4 "devices" at ~10k msg/s each, which the per-device rate
        # limit exists to refuse: measured with it off (its cost, ~0.45 µs/msg, is
        # bench/ratelimit.py's). The fleet stream runs the defaults.
        **({"TAZA_RATE_LIMIT_PER_S": "0"} if payloads.devices is None else {}),
        **env,
    }


def run_taza(
    root: Path,
    broker: Mosquitto,
    influxd: InfluxDB1,
    payloads: Mix,
    lat_payloads: Mix,
    env: dict[str, str],
    tag: str,
    timeline: Timeline | None = None,
) -> dict[str, object]:
    """taza-ingest drains ``payloads``, then the latency run (``timeline``: sampled from the
    first publish until all are stored, with the database's accepted count as progress)."""
    store = Queryable(influxd, f"taza_{tag}")
    ingest = IngestProcess(
        root / f"ingest-{tag}", taza_env(broker, influxd, store.db, payloads, env, tag), free_port()
    ).start()
    assert ingest.proc is not None
    pid = ingest.proc.pid
    try:
        cpu = Cpu({"service": pid, "broker": broker.pid, "database": influxd.pid})
        pubs = Publishers(broker, f"tz{tag}", payloads)
        if timeline is not None:
            timeline.progress = store.accepted
            timeline.start({
                "receiver": [pid], "broker": [broker.pid],
                "database": [influxd.pid], "publishers": pubs.pids,
            })  # fmt: skip
        start = time.monotonic()
        threading.Thread(target=pubs.feed, daemon=True).start()
        gc_before = gc_collections(ingest)
        polls = store.wait(len(payloads), 180, claimed=lambda: points_written(ingest))
        if timeline is not None:
            timeline.stop()
        end, stored = polls[-1]
        used = cpu.us_per_msg(stored)
        gc_runs = [a - b for a, b in zip(gc_collections(ingest), gc_before, strict=True)]
        pubs.close()
        if stored < len(payloads):
            raise SystemExit(f"taza stored only {stored} of {len(payloads)}:\n{ingest.log_tail()}")
        rate = len(payloads) / (end - start)
        lat = latency(broker, store, lat_payloads, round(rate / 2, -2), f"lt{tag}")
        rss = proc_hwm(pid)
    finally:
        ingest.stop()
    return {
        "msgs_per_s": rate,
        "seconds": end - start,
        "cpu_us_per_msg": used,
        "peak_rss_mib": round(rss / 2**20, 1),
        "latency_at_half_rate": lat,
        "gc_collections_by_generation": gc_runs,
    }


def points_written(ingest: IngestProcess) -> int:
    """The raw points taza says the database accepted (its /metrics; history not included)."""
    return int(ingest.metrics().get("taza_points_written_total", 0))


def gc_collections(ingest: IngestProcess) -> list[int]:
    """The service's collector runs so far, generations 0, 1, 2 (its /metrics)."""
    m = ingest.metrics()
    return [int(m.get(f'python_gc_collections_total{{generation="{g}"}}', 0)) for g in range(3)]


def plot(result: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = result["msgs_per_s"]
    assert isinstance(rates, dict)
    names = list(rates)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    bars = ax.bar(
        names,
        [rates[n] for n in names],
        color=["#888", "#c44", "#c84", "#2a7", "#69c"][: len(names)],
    )
    for b, n in zip(bars, names, strict=True):
        ax.annotate(
            f"{rates[n]:,.0f}",
            (b.get_x() + b.get_width() / 2, b.get_height()),
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_ylabel("msg/s, published → stored (ceiling: → C subscriber)")
    ax.set_title(f"{result['messages']:,} messages, QoS 1 publishers, {os.cpu_count()} cores")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--stream", choices=("four-topics", "fleet"), default="four-topics",
                    help="the payload mix (see above)")  # fmt: skip
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--naive-seconds", type=float, default=15.0, help="time bound of the naive run")
    ap.add_argument("--rounds", type=int, default=1, help="taza ÷ ceiling pairs (median reported)")
    ap.add_argument("--taza-env", action="append", default=[], help="KEY=VALUE for taza-ingest")
    ap.add_argument(
        "--stage-ab",
        action="store_true",
        help="after each taza round, one with the alert stage off (TAZA_ALERTS_ENABLED=false): "
        "the stage's cost from interleaved rounds of one session",
    )
    ap.add_argument(
        "--paho", action="store_true", help="also taza with TAZA_MQTT_CLIENT=paho (the old intake)"
    )
    ap.add_argument(
        "--completion",
        choices=("stats", "count"),
        default="stats",
        help="how a run's end is found: the database's own counters, then one count (default), "
        "or a count over all stored points every 50 ms (before issue 11's last round; it "
        "costs the database CPU that grows with the run, see Queryable)",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--plot", type=Path, default=Path("var/bench/compare.png"))
    args = ap.parse_args()
    env = dict(kv.split("=", 1) for kv in args.taza_env)
    Queryable.completion = args.completion
    if args.stream == "fleet":
        payloads = fleet_mix(args.messages, args.devices)
    else:
        payloads = Mix(payload_mix(args.messages, args.devices, "cmp"))
    lat_payloads = payloads.head(max(1000, len(payloads) // 5))
    say: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731

    with tempfile.TemporaryDirectory(prefix="taza-compare-") as tmp:
        root = Path(tmp)
        if payloads.devices is not None:
            Publishers.cpub = cpub_binary(root)
        with Mosquitto(root / "mq") as broker, InfluxDB1(root / "influx") as influxd:
            ceilings: list[float] = []
            ceiling_broker: list[float] = []  # the broker's CPU µs/msg in each ceiling run

            def ceil(tag: str) -> float:
                c = ceiling(broker, payloads, tag)
                say(f"  ceiling {tag}: {c['msgs_per_s']:,.0f} msg/s, broker {c['broker']} µs/msg")
                ceilings.append(c["msgs_per_s"])
                ceiling_broker.append(c["broker"])
                return c["msgs_per_s"]

            say(f"{len(payloads):,} messages ({args.stream}), {PUBLISHERS} C publishers, QoS 1")
            ceil("c0")
            say("naive bridge (paho → Point → one write per message) ...")
            naive = run_bridge("naive", broker, influxd, payloads, args.naive_seconds)
            ceil("c1")
            say("tuned QoS 0 batching bridge ...")
            tuned = run_bridge("tuned-qos0", broker, influxd, payloads, 120)
            ceil("c2")
            tazas: list[dict[str, object]] = []
            ratios: list[float] = []
            offs: list[dict[str, object]] = []
            off_ratios: list[float] = []

            def taza_round(run_env: dict[str, str], tag: str) -> tuple[dict[str, object], float]:
                t = run_taza(root, broker, influxd, payloads, lat_payloads, run_env, tag)
                before = ceilings[-1]
                after = ceil(f"c-{tag}")
                t["paired_ceiling"] = (before + after) / 2
                return t, float(t["msgs_per_s"]) / ((before + after) / 2)  # type: ignore[arg-type]

            for r in range(args.rounds):
                say(f"taza-ingest, round {r + 1} ...")
                t, ratio = taza_round(env, str(r))
                tazas.append(t)
                ratios.append(ratio)
                if args.stage_ab:
                    say(f"taza-ingest, alert stage off, round {r + 1} ...")
                    t, ratio = taza_round(env | {"TAZA_ALERTS_ENABLED": "false"}, f"off{r}")
                    offs.append(t)
                    off_ratios.append(ratio)
            median = sorted(range(len(ratios)), key=ratios.__getitem__)[len(ratios) // 2]
            taza = tazas[median]
            paho: dict[str, object] | None = None
            if args.paho:
                say("taza-ingest with the paho intake ...")
                paho_env = env | {"TAZA_MQTT_CLIENT": "paho"}
                paho = run_taza(root, broker, influxd, payloads, lat_payloads, paho_env, "paho")
                before = ceilings[-1]
                after = ceil("cpaho")
                paho["paired_ceiling"] = (before + after) / 2
                paho["over_ceiling"] = round(float(paho["msgs_per_s"]) / ((before + after) / 2), 3)  # type: ignore[arg-type]

    taza_rate = float(taza["msgs_per_s"])  # type: ignore[arg-type]
    result: dict[str, object] = {
        "stream": args.stream,
        "completion": args.completion,
        "messages": len(payloads),
        "publishers": PUBLISHERS,
        "cores": os.cpu_count(),
        "ceilings_msgs_per_s": [round(c) for c in ceilings],
        "ceilings_broker_cpu_us_per_msg": ceiling_broker,
        "msgs_per_s": {
            "ceiling": round(float(taza["paired_ceiling"])),  # type: ignore[arg-type]
            "naive": round(naive["msgs_per_s"]),
            "tuned-qos0": round(tuned["msgs_per_s"]),
            "taza": round(taza_rate),
        },
        "taza_over_ceiling": round(statistics.median(ratios), 3),
        "taza_over_ceiling_rounds": [round(r, 3) for r in ratios],
        "taza_over_naive": round(taza_rate / naive["msgs_per_s"], 1),
        "tuned_over_ceiling": round(tuned["msgs_per_s"] / ceilings[2], 3),
        "naive": naive,
        "tuned-qos0": tuned,
        "taza": taza,
    }
    result["taza_cpu_us_per_msg_rounds"] = [t["cpu_us_per_msg"] for t in tazas]
    if offs:
        result["stage_off"] = {
            "taza_over_ceiling": round(statistics.median(off_ratios), 3),
            "taza_over_ceiling_rounds": [round(r, 3) for r in off_ratios],
            "msgs_per_s_rounds": [round(float(t["msgs_per_s"])) for t in offs],  # type: ignore[arg-type]
            "cpu_us_per_msg_rounds": [t["cpu_us_per_msg"] for t in offs],
        }
    if paho is not None:
        rates = result["msgs_per_s"]
        assert isinstance(rates, dict)
        rates["taza-paho"] = round(float(paho["msgs_per_s"]))  # type: ignore[arg-type]
        result["taza-paho"] = paho
    plot(result, args.plot)
    if args.json:
        print(json.dumps(result, indent=2, default=float))
        return
    rates = result["msgs_per_s"]
    assert isinstance(rates, dict)
    print(
        f"{len(payloads):,} messages ({args.stream} stream), {PUBLISHERS} C QoS 1 publishers, "
        f"{os.cpu_count()} cores"
    )
    print(f"  ceilings (C → mosquitto → C, QoS 1): {result['ceilings_msgs_per_s']}")
    rows = [("naive", naive), ("tuned-qos0", tuned), ("taza", taza)]
    if paho is not None:
        rows.append(("taza-paho", paho))
    for name, r in rows:
        cpu = r["cpu_us_per_msg"]
        assert isinstance(cpu, dict)
        part = "" if r.get("complete", True) else f" (rate from {r['stored']:,} in the time bound)"
        print(
            f"  {name:<11} {rates[name]:>8,} msg/s{part}; CPU µs/msg "
            + ", ".join(f"{k} {v}" for k, v in cpu.items())
            + f"; peak RSS {r['peak_rss_mib']} MiB"
        )
    lat = taza["latency_at_half_rate"]
    assert isinstance(lat, dict)
    print(
        f"  taza ÷ ceiling {result['taza_over_ceiling']} "
        f"(rounds {result['taza_over_ceiling_rounds']}), "
        f"taza ÷ naive {result['taza_over_naive']}, "
        f"tuned-qos0 ÷ ceiling {result['tuned_over_ceiling']}"
    )
    print(
        f"  taza publish→queryable at {lat['rate']:,.0f} msg/s: "
        f"p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms"
    )
    off = result.get("stage_off")
    if isinstance(off, dict):
        on_cpu = [c["service"] for c in result["taza_cpu_us_per_msg_rounds"]]  # type: ignore[attr-defined, index]
        off_cpu = [c["service"] for c in off["cpu_us_per_msg_rounds"]]
        print(
            f"  alert stage on / off, interleaved: ÷ ceiling {result['taza_over_ceiling']} / "
            f"{off['taza_over_ceiling']} (rounds {off['taza_over_ceiling_rounds']} off); "
            f"service CPU µs/msg per round {on_cpu} / {off_cpu}"
        )
    print(f"  plot: {args.plot}")


if __name__ == "__main__":
    main()
