"""After the fleet run: the verify report, the fullest bins, the dead letters, where to look next.

Everything here is read back from what the run left: ``taza-sim verify`` against the
database, InfluxQL queries, ``taza-ingest deadletter --summary --json``.
"""

from __future__ import annotations

import contextlib
import csv
import json

from devstack.demo.console import fmt, rel
from devstack.demo.stack import DB, Stack
from devstack.demo.supervisor import failure, flags, shown, tool
from devstack.servers import HOST

FULL_PCT = 80.0  # the simulated crews' threshold (taza-sim run --threshold)
TOP_N = 5

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


def verify(stack: Stack) -> int:
    """``taza-sim verify``'s report, indented; its exit status (0: nothing lost) is returned."""
    assert stack.influxd is not None
    out = stack.out
    out.line()
    out.line("published vs stored (taza-sim verify)")
    argv = [*tool("taza-sim"), "verify"]
    argv += flags(log=stack.run_log, influx_url=stack.influxd.url, db=DB)
    argv += flags(deadletter=stack.data_dir / "deadletter")
    rc, text = stack.run_tool("verify", argv, timeout=300)
    if rc not in (0, 1):
        raise failure(f"taza-sim verify could not compare (exit {rc})", stack.var / "verify.log")
    for line in text.rstrip().splitlines():
        if line.strip():
            out.line(f"  {line}")
    return rc


def fullest_bins(stack: Stack) -> None:
    assert stack.influxd is not None
    out = stack.out
    capacity: dict[str, str] = {}
    with contextlib.suppress(OSError), stack.fleet.open() as f:
        for rec in csv.DictReader(f):
            capacity[rec["device_id"]] = rec.get("capacity_l", "")
    rows = stack.influxd.query(
        "SELECT last(fill_pct) AS fill_pct FROM fill GROUP BY region, device_id, site, fraction",
        DB,
    )
    rvm_rows = stack.influxd.query(
        "SELECT last(fill_pct) AS fill_pct FROM rvm_bin GROUP BY region, device_id, material",
        DB,
    )
    by_region: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        by_region.setdefault(str(row.get("region")), []).append(row)
    out.line()
    out.line(f"fullest eco-boxes per region (latest reading; crews come at {FULL_PCT:g} %)")
    out.line(
        f"  {'region':<10} {'device':<16} {'site':<12} {'fraction':<9} {'capacity':>8} {'fill':>7}"
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
            out.line(
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
                f" · fullest RVM bin {top.get('device_id')} {top.get('material')} {pct(top):.0f} %"
            )
        out.line(line)
    if not by_region:
        out.line("  (no fill readings in the database)")


def deadletter(stack: Stack) -> None:
    out = stack.out
    out.line()
    argv = [*tool("taza-ingest"), "deadletter", "--summary", "--json"]
    rc, text = stack.run_tool("deadletter", [*argv, *flags(data_dir=stack.data_dir)], timeout=60)
    try:
        doc = json.loads(text) if rc == 0 else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise failure(f"taza-ingest deadletter failed (exit {rc})", stack.var / "deadletter.log")
    summary = doc.get("summary") or {}
    by_reason: dict[str, int] = summary.get("by_reason") or {}
    total = summary.get("total", 0)
    out.line(
        f"dead-letter store ({rel(stack.data_dir / 'deadletter')}): {fmt(total)} rejected "
        "messages, each with its reason"
    )
    parts = [f"{reason} {count}" for reason, count in by_reason.items()]
    line = " "
    for part in parts:
        if len(line) + len(part) + 3 > 96:
            out.line(line.rstrip(" ·"))
            line = " "
        line += f" {part} ·"
    if parts:
        out.line(line.rstrip(" ·"))


def next_steps(stack: Stack) -> None:
    assert stack.influxd is not None
    assert stack.mosquitto is not None
    out = stack.out
    q = (
        f"q() {{ curl -sG {stack.influxd.url}/query -H 'Accept: application/csv' "
        f'--data-urlencode db={DB} --data-urlencode "q=$1"; }}'
    )
    out.line()
    out.line("where to look next")
    if not stack.o.keep_running:
        out.line(
            "  (the servers stop when the demo ends; `make demo DEMO_ARGS=--keep-running` "
            "keeps them up for this)"
        )
    out.line(f"  taza-ingest   curl -s {stack.http}/metrics | grep '^taza_'")
    out.line(f"                curl -s {stack.http}/readyz")
    out.line("  InfluxQL      (no influx CLI needed: curl speaks InfluxQL, CSV out)")
    out.line(f"    {q}")
    for comment, query in INFLUXQL_EXAMPLES:
        out.line(f"    # {comment}")
        out.line(f"    q '{query}'")
    out.line(
        f"  dead letters  {shown('taza-ingest')} deadletter --data-dir {rel(stack.data_dir)} "
        "--tail 5"
    )
    out.line(
        f"  verify        {shown('taza-sim')} verify --log {rel(stack.run_log)} "
        f"--influx-url {stack.influxd.url} --db {DB} --deadletter "
        f"{rel(stack.data_dir / 'deadletter')}"
    )
    out.line(
        f"  MQTT          mosquitto_sub -h {HOST} -p {stack.mosquitto.port} "
        "-t 'taza/v1/+/+/+/state' -v    (retained presence of every device)"
    )
    logs = [
        stack.var / "ingest.log",
        stack.var / "sim.log",
        stack.mosquitto.log_path,
        stack.influxd.log_path,
    ]
    out.line(f"  logs          {'  '.join(rel(p) for p in logs[:2])}")
    out.line(f"                {'  '.join(rel(p) for p in logs[2:])}")
    out.line("  docs          docs/demo.md, docs/ingest.md, docs/simulator.md, docs/protocol.md")
