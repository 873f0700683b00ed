"""``taza-sim load``: publish valid messages as fast as asked (benchmarks)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from devices import ExitCode
from simulator.cli.options import (
    broker_option,
    client_prefix_option,
    duration,
    fail,
    json_option,
    quiet_option,
    write_log_option,
)
from simulator.load import LoadConfig, dumps, run_load


@click.command(short_help="Publish valid messages as fast as asked (benchmarks).")
@broker_option
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
    callback=duration,
    default="10s",
    show_default=True,
    help="Stop publishing after this long (60s, 5m); 0 = no time limit (use --count).",
)
@click.option("--count", type=click.IntRange(1), help="Stop after this many messages.")
@click.option(
    "--qos",
    type=click.Choice(["0", "1"]),
    default="1",
    show_default=True,
    help="MQTT QoS of every publish (1: the rate counts PUBACKs; 0: fire and forget).",
)
@click.option("--region", default="almaty", show_default=True, help="Region of the topics.")
@click.option(
    "--window",
    type=click.IntRange(1, 65000),
    default=2000,
    show_default=True,
    help="Unacknowledged messages allowed per connection (backpressure).",
)
@write_log_option("Ground-truth log (same format as `run`) for `taza-sim verify`.")
@client_prefix_option("taza-load", "<prefix>-<connection number>")
@json_option("the summary")
@quiet_option("per-second lines")
def command(**kw: Any) -> None:
    """Publish valid messages as fast as asked, reporting the achieved rate each second.

    For benchmarks (bench/ uses it): N virtual devices over C paho-mqtt connections, QoS 1
    by default, payloads valid per the contract with timestamps = now (fill 80 %, status 15 %,
    RVM deposits 5 %). The rate counts acknowledged messages. Ends at --duration or --count,
    then waits up to 30 s for the last acknowledgements. Exit status: 0 all acknowledged,
    1 some not, 2 bad options, 5 broker unreachable.

    \b
    Example:
      taza-sim load --rate 5000 --devices 2000 --connections 4 --duration 30s --json
    """
    broker = kw["broker"]
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
        fail(f"cannot load {broker}: {exc}", ExitCode.BROKER_UNREACHABLE)
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
        sys.exit(ExitCode.FAILURE)
