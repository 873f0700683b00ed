"""``taza``: the operators' CLI — fill levels, alerts, collections, plans, RVMs, devices.

Every command asks taza-ingest's API (``--url``, env ``TAZA_API_URL``, default the local
service) and prints a table, or with ``--json`` the API's answer exactly as it came. Exit
statuses from :class:`devices.ExitCode`: 0 answered, 2 a bad option or parameter (the API's
422 too), 1 anything else (no answer, unknown device, database unavailable).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from devices import ExitCode
from devices.timeparse import parse_duration, parse_instant
from operators.client import DEFAULT_URL, ApiClient, ApiError
from operators.provision.commands import COMMANDS as PROVISION_COMMANDS
from operators.tokens import tokens

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 120}
F = TypeVar("F", bound=Callable[..., Any])
FRACTIONS = ("glass", "metal", "mixed", "organic", "paper", "plastic")


def _common(f: F) -> F:
    """``--url`` and ``--json`` on every command (accepted after the command name)."""
    f = click.option(
        "--json", "as_json", is_flag=True, help="print the API's JSON answer instead of a table"
    )(f)
    f = click.option(
        "--token",
        envvar="TAZA_API_TOKEN",
        expose_value=False,
        callback=_remember_token,
        help="API token (env TAZA_API_TOKEN; prefer the env: options show in `ps`)",
    )(f)
    f = click.option(
        "--url",
        envvar="TAZA_API_URL",
        default=DEFAULT_URL,
        show_default=True,
        help="taza-ingest's HTTP address (env TAZA_API_URL)",
    )(f)
    return f


def _remember_token(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.find_root().meta[_TOKEN] = value


_TOKEN = "taza.token"


def _region(f: F) -> F:
    return click.option("--region", default=None, help="only this region")(f)


def _instant(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """RFC 3339, ``now``, or a duration meaning that long ago (``6h``, ``7d``)."""
    if value is None:
        return None
    try:
        ago = parse_duration(value)
    except ValueError:
        try:
            t = parse_instant(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    else:
        t = datetime.now(UTC) - timedelta(seconds=ago)
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _range(f: F) -> F:
    f = click.option(
        "--to", "to", default=None, callback=_instant, help="end: RFC 3339 or 'now' (default now)"
    )(f)
    f = click.option(
        "--from",
        "from_",
        default=None,
        callback=_instant,
        help="start: RFC 3339, or a duration ago such as 6h or 7d",
    )(f)
    return f


def _call(url: str, path: str, **params: Any) -> Any:
    try:
        token = click.get_current_context().find_root().meta.get(_TOKEN)
        with ApiClient(url, token=token) as api:
            return api.get(path, **params)
    except ApiError as exc:
        click.echo(f"taza: {exc.message}", err=True)
        sys.exit(ExitCode.USAGE if exc.status == 422 else ExitCode.FAILURE)


def _show(doc: Any, as_json: bool, table: Callable[[Any], Table | str]) -> None:
    if as_json:
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    out = table(doc)
    console = Console(soft_wrap=False)
    if isinstance(out, str):
        console.print(out, highlight=False)
    else:
        console.print(out)


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for n, c in enumerate(columns):
        t.add_column(c, overflow="fold", no_wrap=n == 0)  # ids stay whole: people copy them
    for r in rows:
        t.add_row(*("" if v is None else _fmt(v) for v in r))
    if not rows:
        t.caption = "none"
    return t


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.1f}"
    if isinstance(v, list):
        return ", ".join(str(x) for x in v)
    return str(v)


def _time(v: str | None) -> str | None:
    """``2026-05-01T11:59:30.250Z`` → ``2026-05-01 11:59:30Z`` for tables."""
    return None if v is None else v.replace("T", " ").split(".")[0].removesuffix("Z") + "Z"


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="taza-telemetry", prog_name="taza")
def main() -> None:
    """taza for operators: what the fleet looks like now, through taza-ingest's HTTP API."""


@main.command("fill-levels")
@_common
@_region
@click.option("--min-pct", type=click.FloatRange(0, 100), default=None, help="at or above, %")
@click.option("--fraction", type=click.Choice(FRACTIONS), default=None, help="waste fraction")
def fill_levels(
    url: str, as_json: bool, region: str | None, min_pct: float | None, fraction: str | None
) -> None:
    """Eco-boxes by fill level, fullest first, with when each will be full."""
    doc = _call(url, "/fill-levels", region=region, min_pct=min_pct, fraction=fraction)
    rows = [
        (
            i["device_id"],
            i["fill_pct"],
            i["fill_rate_pct_per_h"],
            _time(i["forecast_full_at"]),
            i["fraction"],
            i["site"],
            i["capacity_l"],
            _time(i["last_seen"]),
        )
        for i in doc["items"]
    ]
    cols = ("device", "fill %", "%/h", "full at", "fraction", "site", "litres", "last seen")
    _show(doc, as_json, lambda d: _table(f"Fill levels ({len(rows)})", cols, rows))


@main.command()
@_common
@_region
@click.option("--alert", default=None, help="only this alert (full, offline, bin_full_pet…)")
@click.option("--state", type=click.Choice(["firing", "resolved"]), default=None)
@click.option("--history", is_flag=True, help="transitions in --from/--to instead of firing now")
@_range
@click.option("--limit", type=click.IntRange(1, 10000), default=None, help="with --history")
def alerts(
    url: str,
    as_json: bool,
    region: str | None,
    alert: str | None,
    state: str | None,
    history: bool,
    from_: str | None,
    to: str | None,
    limit: int | None,
) -> None:
    """Alerts firing now (or, with --history, the transitions in a time range)."""
    if not history:
        if from_ or to or limit:
            raise click.UsageError("--from, --to and --limit need --history")
        doc = _call(url, "/alerts", region=region, alert=alert, state=state)
        rows = [
            (
                a["severity"],
                a["alert"],
                a["device_id"],
                a["region"],
                a["value"],
                a["threshold"],
                _time(a["since"]),
                a["cause"],
            )
            for a in doc["items"]
        ]
        cols = ("severity", "alert", "device", "region", "value", "threshold", "since", "cause")
        _show(doc, as_json, lambda d: _table(f"Alerts firing ({len(rows)})", cols, rows))
        return
    doc = _call(
        url, "/alerts/history", region=region, alert=alert, state=state, limit=limit,
        **{"from": from_, "to": to},
    )  # fmt: skip
    events = [
        (_time(a["time"]), a["state"], a["alert"], a["device_id"], a["region"], a["value"])
        for a in doc["items"]
    ]
    heads = ("time", "state", "alert", "device", "region", "value")
    _show(doc, as_json, lambda d: _table(f"Alert history ({len(events)})", heads, events))


@main.command()
@_common
@_region
@click.option("--device-id", default=None, help="only this device")
@_range
@click.option("--limit", type=click.IntRange(1, 10000), default=None)
def collections(
    url: str,
    as_json: bool,
    region: str | None,
    device_id: str | None,
    from_: str | None,
    to: str | None,
    limit: int | None,
) -> None:
    """Detected emptyings (default: the last 24 h), newest first."""
    doc = _call(
        url, "/collections", region=region, device_id=device_id, limit=limit,
        **{"from": from_, "to": to},
    )  # fmt: skip
    rows = [
        (
            _time(c["time"]),
            c["device_id"],
            c["region"],
            c["fill_before_pct"],
            c["fill_after_pct"],
            c["litres"],
        )
        for c in doc["items"]
    ]
    cols = ("time", "device", "region", "before %", "after %", "litres")
    _show(doc, as_json, lambda d: _table(f"Collections ({len(rows)})", cols, rows))


@main.command()
@_common
@_region
@_range
def rvm(url: str, as_json: bool, region: str | None, from_: str | None, to: str | None) -> None:
    """What the reverse vending machines took (default: the last 7 days)."""
    doc = _call(url, "/rvm/summary", region=region, **{"from": from_, "to": to})
    materials = ", ".join(f"{m} {n}" for m, n in doc["containers_by_material"].items())
    rows = [
        (d["device_id"], d["region"], d["containers"], d["transactions"], d["rejected"],
         d["refund_minor"])
        for d in doc["devices"]
    ]  # fmt: skip
    cols = ("machine", "region", "containers", "transactions", "rejected", "refund (minor)")
    title = (
        f"RVMs {_time(doc['from'])} – {_time(doc['to'])}: {doc['containers']} containers "
        f"({materials or 'none'}), {doc['transactions']} transactions, {doc['rejected']} "
        f"rejected, refunds {doc['refund_minor']}"
    )
    _show(doc, as_json, lambda d: _table(title, cols, rows))


@main.command()
@_common
@click.option("--region", required=True, help="the region to plan (its depot)")
@click.option("--horizon", default=None, help="also bins forecast full within this (e.g. 6h)")
@click.option("--trucks", type=click.IntRange(1, 100), default=None, help="trucks available")
@click.option("--geojson", is_flag=True, help="print the plan as GeoJSON (for map tools)")
def plan(
    url: str,
    as_json: bool,
    region: str,
    horizon: str | None,
    trucks: int | None,
    geojson: bool,
) -> None:
    """The collection plan: routes from the region's depot, in order, with ETAs."""
    fmt = "geojson" if geojson else None
    doc = _call(url, "/collection-plan", region=region, horizon=horizon, trucks=trucks, format=fmt)
    _show(doc, as_json or geojson, _plan_text)


def _plan_text(doc: Any) -> str:
    ratio = doc.get("improvement_ratio")
    lines = [
        f"Collection plan {doc.get('region')}: {doc.get('bins_served')}/{doc.get('bins_due')} "
        f"bins due served, {doc.get('distance_km')} km, solver {doc.get('solver')}"
        + (f" ({ratio:.3f}× shorter than the fallback)" if ratio else "")
    ]
    for r in doc.get("routes", []):
        lines.append(
            f"  truck {r.get('truck')}: {len(r.get('stops', []))} stops, "
            f"{r.get('distance_km')} km, {r.get('load_l')} l"
        )
        for s in r.get("stops", []):
            lines.append(
                f"    {s.get('seq')}. {s.get('device_id')} {s.get('fill_pct')}% "
                f"eta {_time(s.get('eta'))}"
            )
    for u in doc.get("unassigned", []):
        lines.append(f"  unassigned {u.get('device_id')}: {u.get('reason')} ({u.get('detail')})")
    return "\n".join(lines)


@main.group(invoke_without_command=True)
@_common
@_region
@click.pass_context
def devices(ctx: click.Context, url: str, as_json: bool, region: str | None) -> None:
    """The fleet: registry and current state (bare: list the devices); broker credentials."""
    ctx.obj = {"url": url, "json": as_json}
    if ctx.invoked_subcommand is not None:
        return
    doc = _call(url, "/devices", region=region)
    rows = [
        (
            d["device_id"],
            d["kind"],
            d["region"],
            d["site"],
            d["fill_pct"],
            {True: "yes", False: "no", None: "?"}[d["online"]],
            _time(d["last_seen"]),
            d["battery_pct"],
            d["completeness_pct_today"],
            d["alerts"],
        )
        for d in doc["items"]
    ]
    cols = ("device", "kind", "region", "site", "fill %", "online", "last seen", "battery %",
            "complete %", "alerts")  # fmt: skip
    _show(doc, as_json, lambda d: _table(f"Devices ({len(rows)})", cols, rows))


@devices.command("history")
@click.argument("device_id")
@_common
@_range
@click.option("--every", default=None, help="interval (e.g. 15m, 1h; default 15m)")
def device_history(
    device_id: str, url: str, as_json: bool, from_: str | None, to: str | None, every: str | None
) -> None:
    """A device's fill level over time (from InfluxDB), anomalies marked."""
    doc = _call(url, f"/devices/{device_id}/history", every=every, **{"from": from_, "to": to})
    rows = [
        (_time(p["time"]), p["fill_pct"], p["min_pct"], p["max_pct"], p["readings"],
         p["anomalies"])
        for p in doc["points"]
    ]  # fmt: skip
    cols = ("time", "mean %", "min %", "max %", "readings", "anomalies")
    title = f"{device_id} ({doc['measurement']}, every {doc['every']})"
    _show(doc, as_json, lambda d: _table(title, cols, rows))


# Broker provisioning (issue 12): files for the broker, not the API — see operators/provision.
for _command in PROVISION_COMMANDS:
    devices.add_command(_command)
main.add_command(tokens)
