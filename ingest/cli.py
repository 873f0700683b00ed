"""``taza-ingest``: run the service, inspect the dead-letter store, show the configuration."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import click
import orjson

from ingest import deadletter
from ingest.config import Settings, describe_settings, load_settings
from ingest.errors import BrokerRefused, ConfigError, StageFailed
from ingest.logs import configure

EPILOG = (
    "Configuration: environment variables (below) over an optional TOML file given with "
    "--config, whose keys are the same names in lower case without the prefix "
    '(e.g. mqtt_url = "mqtt://127.0.0.1:1883").\n\n\b\n' + describe_settings()
)


def _settings(ctx: click.Context) -> Settings:
    try:
        return load_settings(ctx.obj["config"])
    except ConfigError as exc:
        click.echo(f"taza-ingest: {exc}", err=True)
        sys.exit(2)


@click.group(epilog=EPILOG, context_settings={"max_content_width": 120})
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    envvar="TAZA_CONFIG",
    help="TOML file with settings (environment variables take precedence).",
)
@click.version_option(package_name="taza-telemetry")
@click.pass_context
def main(ctx: click.Context, config: Path | None) -> None:
    """taza ingest service: MQTT telemetry of eco-boxes and RVMs → InfluxDB, at least once."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config


@main.command(epilog=EPILOG)
@click.pass_context
def run(ctx: click.Context) -> None:
    """Subscribe, validate, store; acknowledge each message only once it is stored.

    Stops cleanly on SIGTERM/SIGINT: intake stops, the last batch is written and
    acknowledged, the session is kept for the next start. Exit codes: 0 clean stop,
    2 invalid configuration, 1 the broker refused us (credentials) or a fatal error.
    """
    settings = _settings(ctx)
    configure(settings.log_format, settings.log_level)
    try:
        asyncio.run(_run(settings))
    except (ConfigError, BrokerRefused, StageFailed, ExceptionGroup) as exc:
        fatal = _first_fatal(exc)
        if fatal is None:
            raise
        click.echo(f"taza-ingest: {fatal}", err=True)
        sys.exit(2 if isinstance(fatal, ConfigError) else 1)


def _first_fatal(exc: BaseException) -> ConfigError | BrokerRefused | StageFailed | None:
    """The TaskGroup wraps a task's error in an ExceptionGroup; find the one to report."""
    if isinstance(exc, ConfigError | BrokerRefused | StageFailed):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_fatal(inner)
            if found is not None:
                return found
    return None


async def _run(settings: Settings) -> None:
    from ingest.service import Service

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await Service(settings).run(stop)


@main.command("deadletter")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Data directory (default: TAZA_DATA_DIR).",
)
@click.option("--reason", default=None, help="Only records with this reason code.")
@click.option("--device", default=None, help="Only records of this device id.")
@click.option("--tail", type=int, default=20, show_default=True, help="How many records to list.")
@click.option("--summary", "summary_only", is_flag=True, help="Only the summary.")
@click.option("--json", "as_json", is_flag=True, help="JSON output for scripts.")
@click.pass_context
def deadletter_cmd(
    ctx: click.Context,
    data_dir: Path | None,
    reason: str | None,
    device: str | None,
    tail: int,
    summary_only: bool,
    as_json: bool,
) -> None:
    """List and summarise rejected messages (the dead-letter store), newest last."""
    directory = (data_dir or _settings(ctx).data_dir) / "deadletter"
    records = [
        r
        for r in deadletter.read_records(directory)
        if (reason is None or r.get("reason") == reason)
        and (device is None or str(r.get("topic", "")).split("/")[4:5] == [device])
    ]
    summary = deadletter.summarise(records)
    shown = records[-tail:] if tail > 0 else []
    if as_json:
        out: dict[str, Any] = {"directory": str(directory), "summary": summary}
        if not summary_only:
            out["records"] = shown
        click.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"dead-letter store {directory}: {summary['total']} records")
    for r, n in summary["by_reason"].items():
        click.echo(f"  {r:<22} {n}")
    if summary_only or not shown:
        return
    click.echo(f"\nlast {len(shown)}:")
    for rec in shown:
        payload = deadletter.decode_payload(rec)
        text = payload.decode("utf-8", "backslashreplace")
        text = text if len(text) <= 120 else text[:117] + "..."
        click.echo(f"{rec.get('received_at')}  {rec.get('reason')}  {rec.get('topic')}")
        click.echo(f"    {rec.get('detail')}")
        click.echo(f"    payload: {text}")


@main.command("config")
@click.pass_context
def config_cmd(ctx: click.Context) -> None:
    """Validate the configuration and print it as JSON (secrets hidden)."""
    settings = _settings(ctx)
    shown = settings.model_dump(mode="json")
    shown["mqtt_url"] = settings.broker.redacted()
    click.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
