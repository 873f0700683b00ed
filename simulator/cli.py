"""``taza-sim``: the fleet simulator's command line (run, fleet, load, verify)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from simulator import faults as fault_kinds
from simulator.clock import SimClock, parse_duration, parse_instant
from simulator.ecobox import EcoboxParams
from simulator.fleet import (
    DEFAULT_ECOBOX_INTERVAL,
    DEFAULT_RVM_INTERVAL,
    ECOBOX_FRACTION_MIX,
    ECOBOX_SITE_MIX,
    FRACTIONS,
    REGIONS,
    SITES,
    DeviceSpec,
    generate,
    parse_interval,
    parse_mix,
    parse_regions,
    write,
)
from simulator.rvm import KZ_MIX, RvmParams
from simulator.stream import FaultConfig, Models

_BROKER_ENV = ["TAZA_SIM_BROKER", "TAZA_MQTT_URL"]
_REGION_LIST = ", ".join(sorted(REGIONS))


def _fail(message: str) -> None:
    raise click.UsageError(message)


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _rate(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise click.BadParameter("must be between 0 and 1 (a fraction, e.g. 0.02 = 2 %)")
    return value


def _load_fleet_file(path: str) -> list[DeviceSpec]:
    """Validate with the registry (same errors as taza-ingest), then use its rows."""
    from devices import Registry, RegistryError

    try:
        registry = Registry.load(path)
    except RegistryError as exc:
        raise click.ClickException(f"fleet file: {exc}") from None
    specs = []
    for info in registry.values():
        specs.append(
            DeviceSpec(
                device_id=info.device_id,
                kind=str(info.kind),
                region=info.region,
                lat=info.lat,
                lon=info.lon,
                capacity_l=info.capacity_l or (150.0 if str(info.kind) == "rvm" else 240.0),
                fraction=info.fraction or "",
                site=info.site or ("commercial" if str(info.kind) == "rvm" else "residential"),
                report_interval_s=info.report_interval_s,
            )
        )
    return specs


def _rvm_mixes(specs: tuple[str, ...]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """``pet=0.54,alu=0.46`` (everywhere) and ``shymkent:pet=..,glass=..`` (one region)."""
    materials = ("pet", "alu", "glass", "hdpe", "other")
    default = dict(KZ_MIX)
    by_region: dict[str, dict[str, float]] = {}
    for spec in specs:
        region, sep, mix = spec.partition(":")
        if sep:
            by_region[parse_regions(region)[0]] = parse_mix(mix, materials)
        else:
            default = parse_mix(spec, materials)
    return default, by_region


def fleet_options(func: Any) -> Any:
    """Options shared by `run` and `fleet`: which devices exist."""
    options = [
        click.option(
            "--ecoboxes",
            type=click.IntRange(0),
            default=300,
            show_default=True,
            help="Eco-boxes (street bins with ultrasonic fill sensors), spread evenly over "
            "the regions.",
        ),
        click.option(
            "--rvms",
            type=click.IntRange(0),
            default=30,
            show_default=True,
            help="Reverse vending machines (fandomats), spread evenly over the regions.",
        ),
        click.option(
            "--regions",
            default="almaty,astana",
            show_default=True,
            help=f"Comma-separated regions (city centres built in): {_REGION_LIST}.",
        ),
        click.option(
            "--seed",
            type=int,
            default=0,
            show_default=True,
            help="Seed of everything random: the same seed gives the same fleet (and, with a "
            "fixed --start, the same messages byte for byte).",
        ),
        click.option(
            "--report-interval",
            default=DEFAULT_ECOBOX_INTERVAL,
            show_default=True,
            help="Eco-box fill-report interval, fixed (15m) or a range each device draws "
            "from (4h-12h, the real cadence of battery ultrasonic sensors).",
        ),
        click.option(
            "--rvm-report-interval",
            default=DEFAULT_RVM_INTERVAL,
            show_default=True,
            help="RVM status interval (deposits are sent as they happen).",
        ),
        click.option(
            "--site-mix",
            default=",".join(f"{k}={v}" for k, v in ECOBOX_SITE_MIX.items()),
            show_default=True,
            help=f"Eco-box site types and weights ({', '.join(SITES)}).",
        ),
        click.option(
            "--fraction-mix",
            default=",".join(f"{k}={v}" for k, v in ECOBOX_FRACTION_MIX.items()),
            show_default=True,
            help=f"Eco-box waste fractions and weights ({', '.join(FRACTIONS)}).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _generate(kw: dict[str, Any]) -> list[DeviceSpec]:
    try:
        return generate(
            ecoboxes=kw["ecoboxes"],
            rvms=kw["rvms"],
            regions=parse_regions(kw["regions"]),
            seed=kw["seed"],
            ecobox_interval=kw["report_interval"],
            rvm_interval=kw["rvm_report_interval"],
            site_mix=parse_mix(kw["site_mix"], SITES),
            fraction_mix=parse_mix(kw["fraction_mix"], FRACTIONS),
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """taza's fleet simulator: realistic eco-boxes and reverse vending machines over MQTT.

    \b
    taza-sim fleet   write a fleet file (the registry taza-ingest reads)
    taza-sim run     simulate a fleet, one MQTT connection per device, with a ground-truth log
    taza-sim load    publish valid messages as fast as asked (benchmarks)
    taza-sim verify  compare a ground-truth log with InfluxDB: delivered, lost, duplicated, ...

    Every subcommand has --help. The model, its defaults and their sources: docs/simulator.md.
    """


# ----- fleet -----------------------------------------------------------------------------------


@main.command()
@fleet_options
@click.option(
    "--out",
    "-o",
    default="-",
    show_default=True,
    help="Fleet file to write: .json → JSON array, otherwise CSV; '-' → CSV on stdout.",
)
def fleet(out: str, **kw: Any) -> None:
    """Generate a fleet and write it as the registry file taza-ingest reads.

    Columns: device_id, kind, region, lat, lon, capacity_l, fraction, site, report_interval_s.
    Devices are scattered around each region's centre; ids look like eb-almaty-0001 and
    rvm-astana-001. The file is checked by loading it back with devices.Registry.load.

    \b
    Example:
      taza-sim fleet --ecoboxes 300 --rvms 30 --regions almaty,astana --seed 7 --out fleet.csv
    """
    specs = _generate(kw)
    if out == "-":
        import csv
        from dataclasses import asdict

        from simulator.fleet import COLUMNS

        writer = csv.DictWriter(sys.stdout, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(asdict(s) for s in specs)
        return
    write(specs, out)
    from devices import Registry, RegistryError

    try:
        registry = Registry.load(out)
    except RegistryError as exc:  # a bug here, not the user's: say so plainly
        raise click.ClickException(f"the written fleet file does not load: {exc}") from None
    kinds: dict[str, int] = {}
    for s in specs:
        kinds[s.kind] = kinds.get(s.kind, 0) + 1
    click.echo(f"wrote {out}: {len(registry)} devices {kinds}", err=True)


# ----- run -------------------------------------------------------------------------------------


@main.command()
@click.option(
    "--broker",
    envvar=_BROKER_ENV,
    default="mqtt://127.0.0.1:1883",
    show_default=True,
    help="MQTT broker URL mqtt://[user:pass@]host:port (env TAZA_SIM_BROKER, TAZA_MQTT_URL).",
)
@fleet_options
@click.option(
    "--fleet",
    "fleet_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Use this fleet file (CSV/JSON, as written by `taza-sim fleet`) instead of "
    "generating one; --ecoboxes/--rvms/--regions are then ignored.",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0.001),
    default=1.0,
    show_default=True,
    help="Simulated seconds per real second (600: ten hours in a minute).",
)
@click.option(
    "--duration",
    callback=_duration,
    help="How long the run lasts in real time (60s, 10m, 2h). Required when --speed > 1 "
    "unless --start is given.",
)
@click.option(
    "--start",
    help="Simulated start (RFC 3339, e.g. 2025-03-01T00:00:00+05:00). Default: chosen so "
    "that the simulated clock reaches the real clock when the run ends — no timestamp in the "
    "future. Fix it to reproduce a run byte for byte.",
)
@click.option(
    "--log",
    "log_path",
    type=click.Path(dir_okay=False, writable=True),
    help="Ground-truth JSON-lines log of every message the broker acknowledged "
    "(keys topic, payload|payload_b64, fault, t, device_id, seq, ts_ms, ...). "
    "Input of `taza-sim verify`.",
)
@click.option(
    "--malformed-rate",
    type=float,
    default=0.0,
    callback=_rate,
    show_default=True,
    help="Share of messages broken on purpose (each labelled in the log with its kind).",
)
@click.option(
    "--malformed-kinds",
    default="all",
    show_default=True,
    help=f"Which malformed kinds to inject: all, or a list of {', '.join(fault_kinds.MALFORMED)}.",
)
@click.option(
    "--duplicate-rate",
    type=float,
    default=0.0,
    callback=_rate,
    show_default=True,
    help="Share of messages published twice (the same bytes; the copy is labelled duplicate).",
)
@click.option(
    "--out-of-order-rate",
    type=float,
    default=0.0,
    callback=_rate,
    show_default=True,
    help="Share of messages held back and sent after the device's next message.",
)
@click.option(
    "--clock-skew",
    callback=_duration,
    default="0s",
    show_default=True,
    help="Skewed devices' clocks are off by up to ± this (e.g. 10m); beyond +5 min their "
    "messages are in the future and the contract rejects them.",
)
@click.option(
    "--skew-fraction",
    type=float,
    default=0.1,
    callback=_rate,
    show_default=True,
    help="Share of devices with a skewed clock (when --clock-skew is set).",
)
@click.option(
    "--offline-rate",
    type=float,
    default=0.0,
    callback=_rate,
    show_default=True,
    help="Share of time each device spends offline (real fleets: ~0.025). An outage drops "
    "the connection without DISCONNECT, so the broker publishes the Last Will.",
)
@click.option(
    "--offline-duration",
    callback=_duration,
    default="2h",
    show_default=True,
    help="Median length of an outage, in simulated time (lognormal).",
)
@click.option(
    "--store-forward/--no-store-forward",
    default=True,
    show_default=True,
    help="Devices keep readings made while offline and upload them on reconnect.",
)
@click.option(
    "--collection",
    type=click.Choice(["threshold", "schedule"]),
    default="threshold",
    show_default=True,
    help="Crews empty eco-boxes after a reading above --threshold, or on a fixed schedule "
    "(every --schedule-days).",
)
@click.option("--threshold", type=float, default=80.0, show_default=True, help="Full, in %.")
@click.option("--schedule-days", type=float, default=2.0, show_default=True)
@click.option(
    "--fill-median",
    type=float,
    default=36.0,
    show_default=True,
    help="Median eco-box fill rate, %/day (Edinburgh sensors: 36, p10 15, p90 79).",
)
@click.option(
    "--glitch-rate",
    type=float,
    default=0.02,
    callback=_rate,
    show_default=True,
    help="Share of ultrasonic readings that jump to ~100 % for one sample.",
)
@click.option(
    "--rvm-daily-items",
    type=float,
    default=160.0,
    show_default=True,
    help="Containers per RVM per average day (Kazakh mall fandomat: 150–170).",
)
@click.option(
    "--rvm-items-per-session",
    type=float,
    default=21.0,
    show_default=True,
    help="Mean containers per customer session (TOMRA: 21).",
)
@click.option(
    "--rvm-mix",
    multiple=True,
    default=[",".join(f"{k}={v}" for k, v in KZ_MIX.items())],
    show_default=True,
    help="Material mix by count, for all RVMs or, as REGION:MIX, for one region (repeat the "
    "option). Kazakh fandomats take PET and cans only; a machine that takes glass: "
    "pet=0.54,alu=0.41,glass=0.05 (Lithuania).",
)
@click.option(
    "--client-prefix",
    default="taza-sim",
    show_default=True,
    help="MQTT client ids are <prefix>-<device_id>.",
)
@click.option("--keepalive", type=click.IntRange(5, 3600), default=30, show_default=True)
@click.option(
    "--connect-concurrency",
    type=click.IntRange(1),
    default=64,
    show_default=True,
    help="Connections opened at the same time while the fleet comes up.",
)
@click.option(
    "--drain-timeout",
    callback=_duration,
    default="15s",
    show_default=True,
    help="At the end, how long devices may keep sending what is still queued.",
)
@click.option(
    "--seq-start",
    type=click.IntRange(0, 2**32 - 1),
    default=0,
    show_default=True,
    help="First seq of every device (e.g. 4294967290 to see the counter wrap).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines on stderr.")
@click.option(
    "--progress",
    type=click.Choice(["human", "jsonl", "none"]),
    default="human",
    show_default=True,
    help="Progress on stderr once a second: a line for people, a JSON object per line for "
    'programs ({"event": "progress", "elapsed_s", "sim_time", "published", "rate_per_s", '
    '"online", "devices", "queued", "reconnects"}), or none.',
)
def run(**kw: Any) -> None:
    """Simulate a fleet: each device its own MQTT connection, publishing per the contract.

    Topics taza/v1/{region}/{kind}/{device_id}/{fill|status|deposit|state}, QoS 1; each
    device publishes a retained `online` on connect, has the Last Will `offline`, counts `seq`
    and reconnects with backoff after a broker restart. Progress goes to stderr once a second;
    a summary at the end (--json for machines).

    \b
    Example (ten simulated hours in a minute, with faults and a ground-truth log):
      taza-sim run --broker mqtt://127.0.0.1:1883 --ecoboxes 300 --rvms 30 \\
          --regions almaty,astana --speed 600 --duration 60s --seed 7 \\
          --malformed-rate 0.01 --duplicate-rate 0.01 --log run.jsonl
    """
    from simulator.device import Broker
    from simulator.run import RunConfig, render_summary, run_fleet

    try:
        broker = Broker.parse(kw["broker"])
        specs = _load_fleet_file(kw["fleet_file"]) if kw["fleet_file"] else _generate(kw)
        if not kw["fleet_file"]:
            parse_interval(kw["report_interval"])
        start = parse_instant(kw["start"]) if kw["start"] else None
        clock, duration = SimClock.plan(speed=kw["speed"], duration_s=kw["duration"], start=start)
        mix, mix_by_region = _rvm_mixes(kw["rvm_mix"])
        kinds = fault_kinds.parse_kinds(kw["malformed_kinds"])
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if not specs:
        raise click.UsageError("the fleet is empty")
    faults = FaultConfig(
        malformed_rate=kw["malformed_rate"],
        malformed_kinds=kinds,
        duplicate_rate=kw["duplicate_rate"],
        out_of_order_rate=kw["out_of_order_rate"],
        clock_skew_s=kw["clock_skew"] or 0.0,
        skew_fraction=kw["skew_fraction"],
        offline_rate=kw["offline_rate"],
        offline_median_s=kw["offline_duration"] or 7200.0,
        store_forward=kw["store_forward"],
    )
    models = Models(
        ecobox=EcoboxParams(
            collection=kw["collection"],
            threshold_pct=kw["threshold"],
            schedule_days=kw["schedule_days"],
            fill_median_pct_day=kw["fill_median"],
            fill_p10_pct_day=kw["fill_median"] * 15.0 / 36.0,
            fill_p90_pct_day=kw["fill_median"] * 79.0 / 36.0,
            glitch_rate=kw["glitch_rate"],
        ),
        rvm=RvmParams(
            daily_items=kw["rvm_daily_items"],
            items_per_session=max(1.0, kw["rvm_items_per_session"]),
            mix=mix,
        ),
        rvm_mix_by_region=mix_by_region,
    )
    cfg = RunConfig(
        broker=broker,
        specs=specs,
        clock=clock,
        duration_s=duration,
        seed=kw["seed"],
        faults=faults,
        models=models,
        log_path=Path(kw["log_path"]) if kw["log_path"] else None,
        client_prefix=kw["client_prefix"],
        keepalive=kw["keepalive"],
        connect_concurrency=kw["connect_concurrency"],
        drain_timeout_s=kw["drain_timeout"] or 0.0,
        progress=not kw["quiet"],
        progress_format=kw["progress"],
        seq_start=kw["seq_start"],
    )
    from simulator.device import preflight

    try:
        asyncio.run(preflight(broker, f"{cfg.client_prefix}-preflight"))
    except ConnectionError as exc:
        raise click.ClickException(f"cannot connect to the broker: {exc}") from None
    result = asyncio.run(run_fleet(cfg))
    if kw["as_json"]:
        click.echo(json.dumps(result.summary, indent=2))
    else:
        click.echo(render_summary(result.summary))
    if result.interrupted:
        sys.exit(130)


# ----- load ------------------------------------------------------------------------------------


@main.command()
@click.option(
    "--broker",
    envvar=_BROKER_ENV,
    default="mqtt://127.0.0.1:1883",
    show_default=True,
    help="MQTT broker URL mqtt://[user:pass@]host:port (env TAZA_SIM_BROKER, TAZA_MQTT_URL).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=1000.0,
    show_default=True,
    help="Target messages per second over all connections; 0 = as fast as the broker "
    "acknowledges (bounded by --window per connection).",
)
@click.option(
    "--devices",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="Virtual devices (ids ld-eb-NNNNNN, every tenth an RVM ld-rvm-NNNNNN), each with "
    "its own seq.",
)
@click.option(
    "--connections",
    type=click.IntRange(1, 1000),
    default=4,
    show_default=True,
    help="MQTT connections carrying the virtual devices (device i uses connection i mod C).",
)
@click.option(
    "--duration",
    callback=_duration,
    default="10s",
    show_default=True,
    help="Stop publishing after this long (60s, 5m); 0 = no time limit (use --count).",
)
@click.option("--count", type=click.IntRange(1), help="Stop after this many messages.")
@click.option("--qos", type=click.Choice(["0", "1"]), default="1", show_default=True)
@click.option("--region", default="almaty", show_default=True, help="Region of the topics.")
@click.option(
    "--window",
    type=click.IntRange(1, 65000),
    default=2000,
    show_default=True,
    help="Unacknowledged messages allowed per connection (backpressure).",
)
@click.option(
    "--log",
    "log_path",
    type=click.Path(dir_okay=False, writable=True),
    help="Ground-truth log (same format as `run`) for `taza-sim verify`.",
)
@click.option("--client-prefix", default="taza-load", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No per-second lines on stderr.")
def load(**kw: Any) -> None:
    """Publish valid messages as fast as asked, reporting the achieved rate each second.

    For benchmarks (bench/ uses it): N virtual devices over C paho-mqtt connections, QoS 1
    by default, payloads valid per the contract with timestamps = now (fill 80 %, status 15 %,
    RVM deposits 5 %). The rate counts acknowledged messages. Ends at --duration or --count,
    then waits up to 30 s for the last acknowledgements.

    \b
    Example:
      taza-sim load --rate 5000 --devices 2000 --connections 4 --duration 30s --json
    """
    from simulator.device import Broker
    from simulator.load import LoadConfig, dumps, run_load

    try:
        broker = Broker.parse(kw["broker"])
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if not kw["duration"] and kw["count"] is None:
        raise click.UsageError("give --duration or --count: a load run must be bounded")
    cfg = LoadConfig(
        broker=broker,
        rate=kw["rate"],
        devices=kw["devices"],
        connections=kw["connections"],
        duration_s=kw["duration"] or None,
        count=kw["count"],
        qos=int(kw["qos"]),
        region=kw["region"],
        client_prefix=kw["client_prefix"],
        window=kw["window"],
        log_path=Path(kw["log_path"]) if kw["log_path"] else None,
    )

    def report(tick: dict[str, object]) -> None:
        if not kw["quiet"]:
            click.echo(
                f"[{tick['second']:>4}s] sent {tick['sent']:>9}  acked {tick['acked']:>9}  "
                f"rate {tick['rate']:>7}/s",
                err=True,
            )

    try:
        summary = run_load(cfg, report)
    except (ConnectionError, OSError) as exc:
        raise click.ClickException(f"cannot load {broker}: {exc}") from None
    if kw["as_json"]:
        click.echo(dumps(summary))
    else:
        click.echo(
            f"taza-sim load: {summary['acked']}/{summary['sent']} acknowledged in "
            f"{summary['seconds']} s → {summary['achieved_rate']} msg/s "
            f"(target {summary['target_rate']}, {summary['devices']} devices over "
            f"{summary['connections']} connections, QoS {summary['qos']})"
        )
    if summary["unacked"]:
        sys.exit(1)


# ----- verify ----------------------------------------------------------------------------------


@main.command()
@click.option(
    "--log",
    "log_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Ground-truth log written by `taza-sim run --log` or `taza-sim load --log`.",
)
@click.option(
    "--influx-url",
    envvar="TAZA_INFLUX_URL",
    default="http://127.0.0.1:8086",
    show_default=True,
    help="InfluxDB 1.x HTTP API (InfluxQL /query) (env TAZA_INFLUX_URL).",
)
@click.option(
    "--db",
    envvar="TAZA_INFLUX_DB",
    default="taza",
    show_default=True,
    help="Database (env TAZA_INFLUX_DB).",
)
@click.option("--rp", help="Retention policy (default: the database's default).")
@click.option("--user", envvar="TAZA_INFLUX_USER", help="InfluxDB user (env TAZA_INFLUX_USER).")
@click.option(
    "--password",
    envvar="TAZA_INFLUX_PASSWORD",
    help="InfluxDB password (env TAZA_INFLUX_PASSWORD).",
)
@click.option(
    "--deadletter",
    type=click.Path(exists=True, file_okay=False),
    help="taza-ingest's dead-letter directory: a rejected message then counts as correctly "
    "rejected only if it is in a dead-letter file (*.jsonl with base64 payload, topic, reason).",
)
@click.option(
    "--max-age",
    callback=_duration,
    default="7d",
    show_default=True,
    help="The ingest's maximum message age (the contract's ts window), if changed.",
)
@click.option("--strict", is_flag=True, help="The ingest runs in strict mode (unknown fields).")
@click.option("--workers", type=click.IntRange(1, 32), default=4, show_default=True)
@click.option("--max-rows", type=click.IntRange(1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON on stdout.")
def verify(**kw: Any) -> None:
    """Prove "nothing lost": compare a ground-truth log with what InfluxDB holds.

    For every logged message, devices.decode (receive time = publish time) and devices.encode
    give the exact points expected; one InfluxQL query per device fetches what is there.
    Reported per device and in total:

    \b
      delivered           valid message, all its points present
      lost / partial      valid message, all / some of its points missing
      duplicated          points that belong to no logged message, or appear twice
      correctly rejected  faulty message, nothing in the database (and in the
                          dead-letter store, with --deadletter)
      wrongly accepted    faulty message, yet a point at its time slot

    A deliberate duplicate (same bytes twice) is delivered once, never "duplicated". State
    messages are counted, not checked. Exit status: 0 all good, 1 something lost, partial,
    wrongly accepted or missing from the dead-letter store, 2 verification impossible.

    \b
    Example:
      taza-sim verify --log run.jsonl --influx-url http://127.0.0.1:8086 --db taza \\
          --deadletter var/deadletter
    """
    from datetime import timedelta

    from simulator.verify import Influx, VerifyError, render
    from simulator.verify import verify as do_verify

    influx = Influx(
        kw["influx_url"], kw["db"], user=kw["user"], password=kw["password"], rp=kw["rp"]
    )
    try:
        report = do_verify(
            kw["log_path"],
            influx,
            deadletter=Path(kw["deadletter"]) if kw["deadletter"] else None,
            max_age=timedelta(seconds=kw["max_age"] or 7 * 86400),
            strict=kw["strict"],
            workers=kw["workers"],
        )
    except VerifyError as exc:
        click.echo(f"taza-sim verify: {exc}", err=True)
        sys.exit(2)
    if kw["as_json"]:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        click.echo(render(report, kw["max_rows"]))
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
