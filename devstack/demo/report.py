"""After the fleet run: the verify report, the fullest bins, the dead letters, where to look next.

Everything here is read back from what the run left: ``taza-sim verify`` against the
database, InfluxQL queries, ``taza-ingest deadletter --summary --json``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from datetime import UTC, datetime

from devstack.demo import crew, firmware, security
from devstack.demo.console import KZ, fmt, rel
from devstack.demo.stack import DB, Stack
from devstack.demo.supervisor import failure, flags, shown, tool
from devstack.servers import GUARD_SRC, HOST

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
    (
        "alert history: episodes started per region and alert",
        "SELECT count(value) AS episodes FROM alert WHERE state = 'firing' AND time > now() - 2d "
        "GROUP BY region, alert",
    ),
    (
        "collections: how many per region, how full the bins were when emptied",
        "SELECT count(fill_before_pct) AS collections, mean(fill_before_pct) AS before_pct, "
        "mean(fill_after_pct) AS after_pct FROM collection WHERE time > now() - 2d GROUP BY region",
    ),
    (
        "the last 5 collections, with the fill before and after",
        "SELECT device_id, fill_before_pct, fill_after_pct FROM collection "
        "ORDER BY time DESC LIMIT 5",
    ),
    (
        "readings flagged as implausible, by kind",
        "SELECT count(value) AS readings FROM anomaly WHERE time > now() - 2d GROUP BY anomaly",
    ),
]


def shell_arg(text: str) -> str:
    """``text`` as one shell word: in single quotes, or in double quotes when it holds a
    single quote (InfluxQL string literals); refused if the shell would expand anything."""
    if "'" not in text:
        return f"'{text}'"
    if any(c in text for c in '"$`\\!'):
        raise ValueError(f"cannot print {text!r} as one shell word")
    return f'"{text}"'


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
        if row.get("device_id") != stack.flooder:  # not a bin: the rate-limit step's device
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


UNITS = {"full": "%", "full_soon": "%", "battery_low": "%", "fire": "°C", "overheat": "°C"}
UNITS |= {"tilted": "°", "offline": "s"}
SEVERITY = {"critical": 0, "major": 1, "minor": 2}
FIRING_SHOWN = 2  # per region
COLLECTIONS_SHOWN = 2


def num(value: object) -> float:
    """A number from a query row or payload (JSON has no float/int distinction); 0 if none."""
    return float(value) if isinstance(value, int | float) else 0.0


def watch_command(stack: Stack) -> str:
    """The ``mosquitto_sub`` line that shows every alert, retained first, then live."""
    assert stack.mosquitto is not None
    return f"mosquitto_sub -h {HOST} -p {stack.mosquitto.port} -t '{crew.ALERTS}' -v"


def local(value: object, pattern: str = "%a %H:%M") -> str:
    """An RFC 3339 time (a payload's ``since``) or epoch ns (InfluxDB) in the regions' time."""
    try:
        if isinstance(value, int | float):
            when = datetime.fromtimestamp(value / 1e9, UTC)
        else:
            when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except (TypeError, ValueError, OverflowError):
        return "?"
    return when.astimezone(KZ).strftime(pattern)


def crew_view(stack: Stack) -> None:
    """What crews got over MQTT during the run, and what a crew app connecting now is shown."""
    feed = stack.crew
    assert feed is not None
    assert stack.mosquitto is not None
    out = stack.out
    feed.wait_quiet()
    out.line()
    out.line(f"crew view: alerts over MQTT ({crew.ALERTS}, QoS 1), as a crew app gets them")
    if not feed.messages:
        out.line("  no alert arrived during the run: taza-ingest published none")
        return
    now = crew.retained_now(stack.mosquitto.host, stack.mosquitto.port)
    by_region = crew.count_by_region(now)
    regions = sorted({r for r, _ in feed.fired} | set(by_region))
    gone = "; offline: the fleet disconnected" if any(a.alert == "offline" for a in now) else ""
    out.line(f"  {'region':<10} {'fired':>6} {'resolved':>8}   firing now (retained topics{gone})")
    for region in regions:
        fired = sum(n for (r, _), n in feed.fired.items() if r == region)
        resolved = sum(n for (r, _), n in feed.resolved.items() if r == region)
        kinds = crew.kinds_text(by_region.get(region, Counter()), 4) or "nothing"
        out.line(f"  {region:<10} {fired:>6} {resolved:>8}   {kinds}")
    per_alert: dict[str, list[int]] = {}
    for (_, alert), n in feed.fired.items():
        per_alert.setdefault(alert, [0, 0])[0] += n
    for (_, alert), n in feed.resolved.items():
        per_alert.setdefault(alert, [0, 0])[1] += n
    collected = sum(
        n for (alert, cause), n in feed.causes.items() if (alert, cause) == ("full", "collected")
    )

    def episodes(alert: str, fired: int, resolved: int) -> str:
        note = f" ({collected} collected)" if alert == "full" and collected else ""
        return f"{alert} {fired}/{resolved}{note}"

    ranked = sorted(per_alert.items(), key=lambda kv: (kv[0] == "offline", -kv[1][0], kv[0]))
    out.line(
        "  fired/resolved  "
        + " · ".join(episodes(alert, f, r) for alert, (f, r) in ranked[:4])
        + (f" · +{len(ranked) - 4} more" if len(ranked) > 4 else "")
    )

    def rank(a: crew.Alert) -> tuple[int, float]:
        return SEVERITY.get(str(a.payload.get("severity")), 3), -num(a.payload.get("value"))

    shown = [a for a in now if a.alert != "offline"]
    if shown:
        out.line(
            f"  firing now, most severe and fullest first (at most {FIRING_SHOWN} per region):"
        )
    for region in regions:
        for a in sorted((a for a in shown if a.region == region), key=rank)[:FIRING_SHOWN]:
            p = a.payload
            value = p.get("value")
            unit = "%" if a.alert.startswith("bin_full_") else UNITS.get(a.alert, "")
            text = f"{value:g} {unit}" if isinstance(value, int | float) else "-"
            where = " ".join(str(p[k]) for k in ("site", "fraction") if p.get(k))
            out.line(
                f"    {region:<10} {a.device_id:<16} {a.alert:<14} {text:>8}  "
                f"since {local(p.get('since'))}  {where}"
            )
    out.line(f"  watch them    {watch_command(stack)}")


def collections_and_anomalies(stack: Stack) -> None:
    """The emptyings taza-ingest detected and the readings it flagged, from InfluxDB."""
    assert stack.influxd is not None
    out = stack.out
    rows = stack.influxd.query(
        "SELECT count(fill_before_pct) AS n, mean(fill_before_pct) AS before FROM collection "
        "GROUP BY region",
        DB,
    )
    total = int(sum(num(r.get("n")) for r in rows))
    out.line()
    if not total:
        out.line("collections detected (measurement collection): none")
    else:
        parts = ", ".join(f"{r.get('region')} {r.get('n')}" for r in rows)
        before = sum(num(r.get("before")) * num(r.get("n")) for r in rows) / total
        out.line(
            f"collections detected (measurement collection): {total} ({parts}), "
            f"emptied at {before:.0f} % on average"
        )
        examples = stack.influxd.query(
            "SELECT device_id, fill_before_pct, fill_after_pct FROM collection "
            f"ORDER BY time DESC LIMIT {COLLECTIONS_SHOWN}",
            DB,
        )
        for r in examples:
            out.line(
                f"    {r.get('device_id')!s:<16} {local(r.get('time'), '%a %d %b %H:%M')}   "
                f"{num(r.get('fill_before_pct')):5.1f} % → {num(r.get('fill_after_pct')):4.1f} %"
            )
    flagged = stack.influxd.query("SELECT count(value) AS n FROM anomaly GROUP BY anomaly", DB)
    kinds = Counter({str(r.get("anomaly")): int(num(r.get("n"))) for r in flagged})
    out.line(
        "anomalies flagged (measurement anomaly; stored, kept out of alerts): "
        + (crew.kinds_text(kinds) or "none")
    )


def deadletter(stack: Stack) -> dict[str, int]:
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
    return by_reason


def collection_plans(stack: Stack) -> bool:
    """What a crew should empty next, per region: the planner's routes through the API.

    True when every region got a plan (the demo fails otherwise: it is a capability users see)."""
    out = stack.out
    out.line()
    out.line("collection plans (GET /api/v1/collection-plan: due bins → routes from the depot)")
    ok = True
    for region in stack.o.regions:
        query = urllib.parse.urlencode({"region": region})
        request = urllib.request.Request(f"{stack.http}/api/v1/collection-plan?{query}")
        if stack.token is not None:
            request.add_header("Authorization", f"Bearer {stack.token}")
        try:
            with urllib.request.urlopen(request, timeout=120) as resp:
                plan = json.load(resp)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            out.line(f"  {region:<8} no plan: {exc}")
            ok = False
            continue
        gain = plan.get("improvement_ratio")
        fallback = f"nearest-neighbour + 2-opt: {plan['fallback_km']:.1f} km"
        if not gain:
            versus = f"the fallback's routes ({plan.get('solver_error') or 'no solver run'})"
        elif gain > 1.005:
            versus = f"{(1 - 1 / gain) * 100:.0f} % shorter than {fallback}"
        else:
            versus = f"as short as {fallback}"
        out.line(
            f"  {region:<8} {plan['bins_served']}/{plan['bins_due']} due bins in "
            f"{len(plan['routes'])} route(s), {plan['distance_km']:.1f} km by {plan['solver']} "
            f"in {plan['solver_time_s']:.1f} s: {versus}"
        )
        for route in plan["routes"][:3]:
            stops = [s["device_id"] for s in route["stops"]]
            head = " → ".join(stops[:4]) + (f" → … ({len(stops)} stops)" if len(stops) > 4 else "")
            out.line(
                f"    truck {route['truck']}: {route['distance_km']:.1f} km, "
                f"{route['load_l']:.0f} l, {local(route['start'], '%H:%M')}–"
                f"{local(route['end'], '%H:%M')}: {head}"
            )
        reasons = Counter(u["reason"] for u in plan["unassigned"])
        if reasons:
            out.line(
                "    unassigned: " + ", ".join(f"{n} ({why})" for why, n in reasons.most_common())
            )
    return ok


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
    out.line(
        f"  fleet page    {stack.http}/    (map, alerts, history, collections, routes; "
        "it asks for a token: one of those above)"
    )
    out.line(f"  API           {stack.http}/api/v1/docs    (OpenAPI: /api/v1/openapi.json)")
    taza, url = shown("taza"), f"--url {stack.http}"
    if stack.token is not None:
        out.line(f"  export TAZA_API_TOKEN={stack.token}    (the operator token, for these)")
    out.line(f"  taza CLI      {taza} fill-levels --min-pct 80 {url}")
    for cmd in ("alerts", "collections", "plan --region " + stack.o.regions[0], "rvm", "devices"):
        out.line(f"                {taza} {cmd} {url}")
    auth = '-H "Authorization: Bearer $TAZA_API_TOKEN" ' if stack.token is not None else ""
    out.line(f"  taza-ingest   curl -s {auth}{stack.http}/metrics | grep '^taza_'")
    out.line(f"                curl -s {stack.http}/readyz")
    out.line("  InfluxQL      (no influx CLI needed: curl speaks InfluxQL, CSV out)")
    out.line(f"    {q}")
    for comment, query in INFLUXQL_EXAMPLES:
        out.line(f"    # {comment}")
        out.line(f"    q {shell_arg(query)}")
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
    out.line(f"                {watch_command(stack)}    (alerts firing now, then live)")
    logs = [
        stack.var / "ingest.log",
        stack.var / "sim.log",
        stack.mosquitto.log_path,
        stack.influxd.log_path,
    ]
    out.line(f"  logs          {'  '.join(rel(p) for p in logs[:2])}")
    out.line(f"                {'  '.join(rel(p) for p in logs[2:])}")
    out.line("  docs          docs/demo.md, docs/ingest.md, docs/simulator.md, docs/protocol.md")


def feedback(stack: Stack) -> None:
    """What one faulty device was told on its feedback topic, as its firmware engineer sees it."""
    feed = stack.feedback
    assert feed is not None
    out = stack.out
    m = stack.metrics()
    time.sleep(0.2)  # QoS 0 on loopback: the last batch's feedback is on its way
    told = feed.snapshot()
    faulty = {d: docs for d, docs in told.items() if d != stack.flooder}
    out.line()
    out.line(
        f"device feedback ({firmware.feedback_topic('{device_id}')}, QoS 0): "
        f"taza_feedback_published_total {fmt(m.get('taza_feedback_published_total', 0))}"
    )
    received = sum(len(docs) for docs in told.values())
    out.line(
        f"  the demo's subscriber received {fmt(received)}, for {len(faulty)} faulty devices"
        + (f" and {stack.flooder} ({len(told[stack.flooder])})" if stack.flooder in told else "")
        + "; at most 5 at once per device, then one every 5 s"
    )
    if not faulty:
        out.line("  no faulty device was told anything")
        return
    device = max(sorted(faulty), key=lambda d: len(faulty[d]))
    out.line(
        f"  what {device}'s firmware engineer sees: "
        f"mosquitto_sub -t '{firmware.feedback_topic(device)}'"
    )
    for doc in faulty[device][:3]:
        text = f"{doc.get('reason', '?')}: {doc.get('detail', '')}"
        out.line(f"    {text if len(text) <= 96 else text[:95] + '…'}")


def rate_limit(stack: Stack, by_reason: dict[str, int]) -> bool:
    """The flooding device throttled, the others not: its refusals are the counter's, and
    the database holds exactly the rest of what it sent. True when that adds up."""
    flood = stack.flood
    assert stack.influxd is not None
    out = stack.out
    out.line()
    if flood is None:
        out.line("rate limit: the run was too short for the flooding device")
        return True
    limited = int(stack.metrics().get("taza_rate_limited_total", 0))
    rows = stack.influxd.query(
        f"SELECT count(fill_pct) AS n FROM fill WHERE device_id = '{flood.device_id}'", DB
    )
    stored = int(sum(num(r.get("n")) for r in rows))
    others = limited - (flood.acked - stored)
    out.line(
        f"rate limit (per device: 100 messages/s, bursts of 1,000): {flood.device_id} sent "
        f"{fmt(flood.acked)} in {flood.seconds:.1f} s, {fmt(stored)} stored, "
        f"{fmt(flood.acked - stored)} refused"
    )
    out.line(
        f"  taza_rate_limited_total {fmt(limited)} · dead letters rate_limited "
        f"{fmt(by_reason.get('rate_limited', 0))} · other devices rate-limited {fmt(others)} "
        "(and 0 lost: verify above)"
    )
    return others == 0 and limited == by_reason.get("rate_limited", 0) and stored > 0


def access(stack: Stack) -> bool:
    """The API tokens and what the API answers each caller."""
    tokens = stack.tokens
    assert tokens is not None
    out = stack.out
    out.line()
    out.line(f"API tokens (TAZA_API_TOKENS_FILE {rel(tokens.file)}, made by `taza tokens add`)")
    out.line("  demo secrets on loopback, printed on purpose; never print real ones")
    out.line(f"  {'operator':<15} {tokens.operator}")
    out.line(f"  {'crew ' + tokens.crew_region:<15} {tokens.crew}")
    others = [r for r in stack.o.regions if r != tokens.crew_region]
    return security.api_check(out, stack.http, tokens, others[0] if others else None)


def broker_security(stack: Stack) -> bool:
    out = stack.out
    out.line()
    out.line("security check: a second broker with the production profile (deploy: docs/deploy.md)")
    if not (GUARD_SRC / "Makefile").exists():
        out.line(
            f"  not run: the profile's guard plugin is built from its source, {GUARD_SRC} "
            "(a checkout; the wheel does not ship it)"
        )
        return True
    return security.broker_check(stack.sup, stack.env, stack.fleet, out)
