"""``taza-ingest``: run the service, inspect the dead-letter store, show the configuration.

Conventions shared with ``taza-sim``: ``-h``/``--help``, ``--version``, options accepted after
the subcommand (``taza-ingest run --config taza.toml``), exit statuses from
:class:`devices.ExitCode`.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from devices import ExitCode, Reason
from devices.timeparse import parse_duration, parse_instant
from ingest import deadletter
from ingest.config import Settings, describe_settings, load_settings
from ingest.errors import BrokerRefused, ConfigError, StageFailed
from ingest.logs import configure

EPILOG = (
    "Configuration: environment variables (below) over an optional TOML file given with "
    "--config, whose keys are the same names in lower case without the prefix "
    '(e.g. mqtt_url = "mqtt://127.0.0.1:1883").\n\n\b\n' + describe_settings()
)


CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 120}


def _settings(ctx: click.Context) -> Settings:
    try:
        return load_settings(ctx.find_root().meta.get(_CONFIG))
    except ConfigError as exc:
        click.echo(f"taza-ingest: {exc}", err=True)
        sys.exit(ExitCode.USAGE)


_CONFIG = "taza.config"
F = TypeVar("F", bound=Callable[..., Any])


def _remember_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    """``--config`` before or after the subcommand: the one given last wins."""
    if value is not None or _CONFIG not in ctx.find_root().meta:
        ctx.find_root().meta[_CONFIG] = value


def config_option(envvar: str | None) -> Callable[[F], F]:
    return click.option(
        "--config",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        envvar=envvar,
        expose_value=False,
        callback=_remember_config,
        help="TOML file with settings (environment variables take precedence; env TAZA_CONFIG).",
    )


@click.group(epilog=EPILOG, context_settings=CONTEXT_SETTINGS)
@config_option("TAZA_CONFIG")
@click.version_option(package_name="taza-telemetry", prog_name="taza-ingest")
def main() -> None:
    """taza ingest service: MQTT telemetry of eco-boxes and RVMs → InfluxDB, at least once."""


@main.command(
    epilog=EPILOG, short_help="Run the service: MQTT → validate → InfluxDB, at least once."
)
@config_option(None)
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
        sys.exit(ExitCode.USAGE if isinstance(fatal, ConfigError) else ExitCode.FAILURE)


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


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """An instant (RFC 3339) or a duration back from now (``90m``, ``1h``, ``2d``)."""
    if value is None:
        return None
    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(value))
    except ValueError:
        pass
    try:
        return parse_instant(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a duration (90m, 1h, 2d) nor an RFC 3339 time "
            "(2025-03-01T08:00:00+05:00)"
        ) from None


def _received_after(record: dict[str, Any], since: datetime) -> bool:
    try:
        return datetime.fromisoformat(str(record.get("received_at"))) >= since
    except ValueError:
        return False


_DEFAULT_TAIL = 20


@main.command(
    "deadletter", short_help="List and summarise rejected messages (the dead-letter store)."
)
@config_option(None)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="The service's data directory, which holds deadletter/ (default: TAZA_DATA_DIR or "
    "the configuration's data_dir).",
)
@click.option(
    "--reason",
    type=click.Choice([r.value for r in Reason]),
    default=None,
    metavar="REASON",
    help="Only records with this reason code (" + ", ".join(r.value for r in Reason) + ").",
)
@click.option("--device", default=None, help="Only records of this device id.")
@click.option(
    "--since",
    callback=_since,
    default=None,
    help="Only records received since this time: RFC 3339 (2025-03-01T08:00:00+05:00) or a "
    "duration back from now (90m, 1h, 2d).",
)
@click.option(
    "--tail",
    type=click.IntRange(0),
    default=None,
    help=f"List only the last N records, without the summary (default: the summary, then "
    f"the last {_DEFAULT_TAIL}).",
)
@click.option("--summary", "summary_only", is_flag=True, help="Only the summary, no records.")
@click.option("--json", "as_json", is_flag=True, help="JSON output for scripts.")
@click.pass_context
def deadletter_cmd(
    ctx: click.Context,
    data_dir: Path | None,
    reason: str | None,
    device: str | None,
    since: datetime | None,
    tail: int | None,
    summary_only: bool,
    as_json: bool,
) -> None:
    """List and summarise rejected messages (the dead-letter store), newest last.

    Without options: the summary (records by reason), then the last 20 records. Exit
    status 2 when there is no dead-letter store in the data directory (wrong --data-dir?).
    """
    if tail is not None and summary_only:
        raise click.UsageError("--tail lists records without the summary; --summary the opposite")
    root = data_dir if data_dir is not None else _settings(ctx).data_dir
    directory = root / "deadletter"
    if not directory.is_dir():
        where = "--data-dir" if data_dir is not None else "the configured data_dir (TAZA_DATA_DIR)"
        raise click.UsageError(
            f"no dead-letter store at {directory}: {where} is not the data directory of a "
            "taza-ingest that has run"
        )
    found = deadletter.scan(directory)
    records = [
        r
        for r in found.records
        if (reason is None or r.get("reason") == reason)
        and (device is None or str(r.get("topic", "")).split("/")[4:5] == [device])
        and (since is None or _received_after(r, since))
    ]
    show_summary = tail is None
    count = 0 if summary_only else (_DEFAULT_TAIL if tail is None else tail)
    shown = records[-count:] if count > 0 else []
    if as_json:
        out: dict[str, Any] = {"directory": str(directory)}
        if show_summary:
            out["summary"] = deadletter.summarise(records)
        out["torn"] = [{"file": t.file, "offset": t.offset, "bytes": t.bytes} for t in found.torn]
        if not summary_only:
            out["records"] = shown
        click.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
        return
    if show_summary:
        summary = deadletter.summarise(records)
        click.echo(f"dead-letter store {directory}: {summary['total']} records")
        if found.torn:
            files = sorted({Path(t.file).name for t in found.torn})
            click.echo(f"  torn: {found.torn_bytes} bytes not whole records, in {', '.join(files)}")
        for r, n in summary["by_reason"].items():
            click.echo(f"  {r:<22} {n}")
        if shown:
            click.echo(f"\nlast {len(shown)}:")
    for rec in shown:
        payload = deadletter.decode_payload(rec)
        text = payload.decode("utf-8", "backslashreplace")
        text = text if len(text) <= 120 else text[:117] + "..."
        click.echo(f"{rec.get('received_at')}  {rec.get('reason')}  {rec.get('topic')}")
        click.echo(f"    {rec.get('detail')}")
        click.echo(f"    payload: {text}")


@main.command("config", short_help="Validate the configuration and print it (secrets hidden).")
@config_option(None)
@click.pass_context
def config_cmd(ctx: click.Context) -> None:
    """Validate the configuration and print it as JSON (secrets hidden)."""
    settings = _settings(ctx)
    shown = settings.model_dump(mode="json")
    shown["mqtt_url"] = settings.broker.redacted()
    click.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
