"""``taza-sim run``: simulate a fleet, one MQTT connection per device."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from devices import MATERIALS, DeviceInfo, ExitCode, Registry, RegistryError
from simulator import faults as fault_kinds
from simulator.cli.options import (
    apply,
    broker_option,
    client_prefix_option,
    duration,
    fail,
    fleet_options,
    fraction,
    generate_fleet,
    json_option,
    quiet_option,
    usage_errors,
    write_log_option,
)
from simulator.clock import SimClock, parse_instant
from simulator.device import preflight
from simulator.ecobox import EcoboxParams
from simulator.fleet import parse_mix, parse_regions
from simulator.run import RunConfig, render_summary, run_fleet
from simulator.rvm import KZ_MIX, RvmParams
from simulator.stream import FaultConfig, Models


def load_fleet_file(path: str) -> list[DeviceInfo]:
    """The registry's own reader: the same errors taza-ingest gives for the same file."""
    try:
        return list(Registry.load(path).values())
    except RegistryError as exc:
        raise click.BadParameter(str(exc), param_hint="--fleet") from None


def rvm_mixes(specs: tuple[str, ...]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """``pet=0.54,alu=0.46`` (everywhere) and ``shymkent:pet=..,glass=..`` (one region)."""
    default = dict(KZ_MIX)
    by_region: dict[str, dict[str, float]] = {}
    for spec in specs:
        region, sep, mix = spec.partition(":")
        if sep:
            by_region[parse_regions(region)[0]] = parse_mix(mix, MATERIALS)
        else:
            default = parse_mix(spec, MATERIALS)
    return default, by_region


_fault_options = apply(
    click.option(
        "--malformed-rate",
        type=float,
        default=0.0,
        callback=fraction,
        show_default=True,
        help="Share of messages broken on purpose (each labelled in the log with its kind).",
    ),
    click.option(
        "--malformed-kinds",
        default="all",
        show_default=True,
        help="Which malformed kinds to inject: all, or a list of "
        f"{', '.join(fault_kinds.MALFORMED)}.",
    ),
    click.option(
        "--duplicate-rate",
        type=float,
        default=0.0,
        callback=fraction,
        show_default=True,
        help="Share of messages published twice (the same bytes; the copy is labelled duplicate).",
    ),
    click.option(
        "--out-of-order-rate",
        type=float,
        default=0.0,
        callback=fraction,
        show_default=True,
        help="Share of messages held back and sent after the device's next message.",
    ),
    click.option(
        "--clock-skew",
        callback=duration,
        default="0s",
        show_default=True,
        help="Skewed devices' clocks are off by up to ± this (e.g. 10m); beyond +5 min their "
        "messages are in the future and the contract rejects them.",
    ),
    click.option(
        "--skew-fraction",
        type=float,
        default=0.1,
        callback=fraction,
        show_default=True,
        help="Share of devices with a skewed clock (when --clock-skew is set).",
    ),
    click.option(
        "--offline-rate",
        type=float,
        default=0.0,
        callback=fraction,
        show_default=True,
        help="Share of time each device spends offline (real fleets: ~0.025). An outage drops "
        "the connection without DISCONNECT, so the broker publishes the Last Will.",
    ),
    click.option(
        "--offline-duration",
        callback=duration,
        default="2h",
        show_default=True,
        help="Median length of an outage, in simulated time (lognormal).",
    ),
    click.option(
        "--store-forward/--no-store-forward",
        default=True,
        show_default=True,
        help="Devices keep readings made while offline and upload them on reconnect.",
    ),
)

_model_options = apply(
    click.option(
        "--collection",
        type=click.Choice(["threshold", "schedule"]),
        default="threshold",
        show_default=True,
        help="Crews empty eco-boxes after a reading above --threshold, or on a fixed schedule "
        "(every --schedule-days).",
    ),
    click.option(
        "--threshold",
        type=float,
        default=80.0,
        show_default=True,
        help="Fill level, in %, at which a crew is sent (--collection threshold).",
    ),
    click.option(
        "--schedule-days",
        type=float,
        default=2.0,
        show_default=True,
        help="Days between emptyings with --collection schedule (Philadelphia Bigbelly: 2).",
    ),
    click.option(
        "--fill-median",
        type=float,
        default=36.0,
        show_default=True,
        help="Median eco-box fill rate, %/day (Edinburgh sensors: 36, p10 15, p90 79).",
    ),
    click.option(
        "--glitch-rate",
        type=float,
        default=0.02,
        callback=fraction,
        show_default=True,
        help="Share of ultrasonic readings that jump to ~100 % for one sample.",
    ),
    click.option(
        "--rvm-daily-items",
        type=float,
        default=160.0,
        show_default=True,
        help="Containers per RVM per average day (Kazakh mall fandomat: 150–170).",
    ),
    click.option(
        "--rvm-items-per-session",
        type=float,
        default=21.0,
        show_default=True,
        help="Mean containers per customer session (TOMRA: 21).",
    ),
    click.option(
        "--rvm-mix",
        multiple=True,
        default=[",".join(f"{k}={v}" for k, v in KZ_MIX.items())],
        show_default=True,
        help="Material mix by count, for all RVMs or, as REGION:MIX, for one region (repeat the "
        "option). Kazakh fandomats take PET and cans only; a machine that takes glass: "
        "pet=0.54,alu=0.41,glass=0.05 (Lithuania).",
    ),
)

_connection_options = apply(
    client_prefix_option("taza-sim", "<prefix>-<device_id>"),
    click.option(
        "--keepalive",
        type=click.IntRange(5, 3600),
        default=30,
        show_default=True,
        help="MQTT keepalive of each device connection, in seconds (the broker publishes the "
        "Last Will after 1.5× this without traffic).",
    ),
    click.option(
        "--connect-concurrency",
        type=click.IntRange(1),
        default=64,
        show_default=True,
        help="Connections opened at the same time while the fleet comes up.",
    ),
    click.option(
        "--drain-timeout",
        callback=duration,
        default="15s",
        show_default=True,
        help="At the end, how long devices may keep sending what is still queued.",
    ),
    click.option(
        "--seq-start",
        type=click.IntRange(0, 2**32 - 1),
        default=0,
        show_default=True,
        help="First seq of every device (e.g. 4294967290 to see the counter wrap).",
    ),
)


@click.command(short_help="Simulate a fleet over MQTT, one connection per device, with a log.")
@broker_option
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
    callback=duration,
    help="How long the run lasts in real time (60s, 10m, 2h). Required when --speed > 1 "
    "unless --start is given.",
)
@click.option(
    "--start",
    help="Simulated start (RFC 3339, e.g. 2025-03-01T00:00:00+05:00). Default: chosen so "
    "that the simulated clock reaches the real clock when the run ends — no timestamp in the "
    "future. Fix it to reproduce a run byte for byte.",
)
@write_log_option(
    "Ground-truth JSON-lines log of every message the broker acknowledged "
    "(keys topic, payload|payload_b64, fault, t, device_id, seq, ts_ms, ...). "
    "Input of `taza-sim verify`."
)
@_fault_options
@_model_options
@_connection_options
@json_option("the summary")
@quiet_option("progress lines")
@click.option(
    "--progress",
    type=click.Choice(["human", "jsonl", "none"]),
    default="human",
    show_default=True,
    help="Progress on stderr once a second: a line for people, a JSON object per line for "
    'programs ({"event": "progress", "elapsed_s", "sim_time", "published", "rate_per_s", '
    '"online", "devices", "queued", "reconnects"}), or none.',
)
def command(**kw: Any) -> None:
    """Simulate a fleet: each device its own MQTT connection, publishing per the contract.

    Topics taza/v1/{region}/{kind}/{device_id}/{fill|status|deposit|state}, QoS 1; each
    device publishes a retained `online` on connect, has the Last Will `offline`, counts `seq`
    and reconnects with backoff after a broker restart. Progress goes to stderr once a second;
    a summary at the end (--json for machines). Exit status: 0 done, 2 bad options,
    5 broker unreachable at start, 130 interrupted (Ctrl-C; the summary is still printed).

    \b
    Example (ten simulated hours in a minute, with faults and a ground-truth log):
      taza-sim run --broker mqtt://127.0.0.1:1883 --ecoboxes 300 --rvms 30 \\
          --regions almaty,astana --speed 600 --duration 60s --seed 7 \\
          --malformed-rate 0.01 --duplicate-rate 0.01 --log run.jsonl
    """
    broker = kw["broker"]
    specs = load_fleet_file(kw["fleet_file"]) if kw["fleet_file"] else generate_fleet(kw)
    with usage_errors():
        start = parse_instant(kw["start"]) if kw["start"] else None
        clock, run_s = SimClock.plan(speed=kw["speed"], duration_s=kw["duration"], start=start)
        mix, mix_by_region = rvm_mixes(kw["rvm_mix"])
        kinds = fault_kinds.parse_kinds(kw["malformed_kinds"])
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
        duration_s=run_s,
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
    try:
        asyncio.run(preflight(broker, f"{cfg.client_prefix}-preflight"))
    except ConnectionError as exc:
        fail(f"cannot connect to the broker: {exc}", ExitCode.BROKER_UNREACHABLE)
    result = asyncio.run(run_fleet(cfg))
    if kw["as_json"]:
        click.echo(json.dumps(result.summary, indent=2))
    else:
        click.echo(render_summary(result.summary))
    if result.interrupted:
        sys.exit(ExitCode.INTERRUPTED)
