"""``taza-sim verify``: compare a ground-truth log with what InfluxDB holds."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from devices import ExitCode
from simulator.cli.options import duration, fail, json_option
from simulator.verify import Influx, VerifyError, render, verify


@click.command(short_help="Compare a ground-truth log with InfluxDB: delivered, lost, duplicated.")
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
    callback=duration,
    default="7d",
    show_default=True,
    help="The ingest's maximum message age (the contract's ts window), if changed.",
)
@click.option("--strict", is_flag=True, help="The ingest runs in strict mode (unknown fields).")
@click.option(
    "--workers",
    type=click.IntRange(1, 32),
    default=4,
    show_default=True,
    help="Queries run in parallel (one per device; more is faster, and loads the database).",
)
@click.option(
    "--max-rows",
    type=click.IntRange(1),
    default=20,
    show_default=True,
    help="Devices with problems listed in the human report (--json lists all).",
)
@json_option("the full report")
def command(**kw: Any) -> None:
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
    messages are counted, not checked.

    \b
    Exit status:
      0  all good
      3  something lost, partial, wrongly accepted or missing from the dead-letter store
      4  verification impossible (database unreachable, unreadable log)

    \b
    Example:
      taza-sim verify --log run.jsonl --influx-url http://127.0.0.1:8086 --db taza \\
          --deadletter var/deadletter
    """
    influx = Influx(
        kw["influx_url"], kw["db"], user=kw["user"], password=kw["password"], rp=kw["rp"]
    )
    try:
        report = verify(
            kw["log_path"],
            influx,
            deadletter=Path(kw["deadletter"]) if kw["deadletter"] else None,
            max_age=timedelta(seconds=kw["max_age"] or 7 * 86400),
            strict=kw["strict"],
            workers=kw["workers"],
        )
    except VerifyError as exc:
        fail(str(exc), ExitCode.VERIFY_IMPOSSIBLE)
    if kw["as_json"]:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        click.echo(render(report, kw["max_rows"]))
    sys.exit(ExitCode.OK if report.ok else ExitCode.VERIFY_MISMATCH)
