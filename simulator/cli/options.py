"""What the ``taza-sim`` commands share, declared once: conventions, options, errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import click

from devices import FRACTIONS, BrokerURL, DeviceInfo, ExitCode
from simulator.clock import parse_duration
from simulator.fleet import (
    DEFAULT_ECOBOX_INTERVAL,
    DEFAULT_RVM_INTERVAL,
    ECOBOX_FRACTION_MIX,
    ECOBOX_SITE_MIX,
    REGIONS,
    SITES,
    generate,
    parse_mix,
    parse_regions,
)

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT_SETTINGS: dict[str, Any] = {
    "help_option_names": ["-h", "--help"],
    "max_content_width": 100,
}
"""Both taza commands: ``-h`` as well as ``--help``, and help wide enough not to cut lines."""

BROKER_ENV = ["TAZA_SIM_BROKER", "TAZA_MQTT_URL"]


def fail(message: str, code: ExitCode) -> NoReturn:
    """The command ran and could not do its job: say why (as click does), exit with ``code``."""
    click.echo(f"Error: {message}", err=True)
    raise SystemExit(code)


@contextmanager
def usage_errors() -> Iterator[None]:
    """A ``ValueError`` from parsing what the user typed is a usage error (exit 2)."""
    try:
        yield
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """``60s``, ``10m``, ``2h``, ``7d`` → seconds."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def fraction(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise click.BadParameter("must be between 0 and 1 (a fraction, e.g. 0.02 = 2 %)")
    return value


def broker(ctx: click.Context, param: click.Parameter, value: str) -> BrokerURL:
    try:
        return BrokerURL.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def apply(*options: Callable[[F], F]) -> Callable[[F], F]:
    """Several option decorators as one, in the order they are listed in ``--help``."""

    def decorate(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


broker_option = click.option(
    "--broker",
    envvar=BROKER_ENV,
    default="mqtt://127.0.0.1:1883",
    show_default=True,
    callback=broker,
    help="MQTT broker URL mqtt://[user:password@]host[:port] or mqtts://... (TLS, 8883) "
    "(env TAZA_SIM_BROKER, TAZA_MQTT_URL).",
)


def json_option(what: str) -> Callable[[F], F]:
    return click.option("--json", "as_json", is_flag=True, help=f"Print {what} as JSON on stdout.")


def quiet_option(what: str) -> Callable[[F], F]:
    return click.option("--quiet", "-q", is_flag=True, help=f"No {what} on stderr.")


def client_prefix_option(default: str, what: str) -> Callable[[F], F]:
    return click.option(
        "--client-prefix", default=default, show_default=True, help=f"MQTT client ids are {what}."
    )


def write_log_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--log",
        "log_path",
        type=click.Path(dir_okay=False, writable=True),
        help=help_text,
    )


fleet_options = apply(
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
        help=f"Comma-separated regions (city centres built in): {', '.join(sorted(REGIONS))}.",
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
        help=f"Eco-box waste fractions and weights ({', '.join(sorted(FRACTIONS))}).",
    ),
)
"""Options shared by ``run`` and ``fleet``: which devices exist."""


def generate_fleet(kw: dict[str, Any]) -> list[DeviceInfo]:
    """The fleet the :data:`fleet_options` describe; a bad value is a usage error."""
    with usage_errors():
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
