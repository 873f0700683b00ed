"""``python -m devstack.demo`` (``make demo``): the command line, the order of the steps, the
exit status.

Starts Mosquitto and InfluxDB 1.x on 127.0.0.1 (data under ``var/demo``), writes a fleet file,
starts ``taza-ingest run`` on it, runs ``taza-sim run`` against the broker, and ends with the
``taza-sim verify`` report, the fullest bins per region, the crew view (alerts received over
MQTT during the run, what is firing now, collections detected, anomalies flagged), the
device feedback one faulty device got, the dead-letter summary, a flooding device throttled
by the rate limit, the API refusing callers without the right token, a production-profile
broker refusing what an attacker tries, and where to look next. Everything is a child
process the demo stops itself, in order, also on Ctrl-C. docs/demo.md describes it. It needs
no checkout (except for the broker security check, whose guard plugin is built from
deploy/): the servers are driven by :mod:`devstack.servers` (as in the integration tests)
with the mosquitto.conf shipped in devstack; ``--var`` defaults to ``var/demo`` below the
current directory.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from devices import ExitCode
from devstack.demo import report
from devstack.demo.console import Console, rel
from devstack.demo.stack import Options, Stack
from devstack.demo.supervisor import Signals, Supervisor
from simulator.clock import parse_duration
from simulator.fleet import parse_regions

SIM_DAY_S = 86_400.0


def run(stack: Stack) -> int:
    """Every step in order; verify's exit status (0: nothing lost, 1: something was)."""
    o = stack.o
    out = stack.out
    out.line(
        f"taza demo: {o.ecoboxes} eco-boxes + {o.rvms} RVMs in {', '.join(o.regions)}; "
        f"{o.duration_s * o.speed / 3600:.0f} simulated hours in {o.duration_s:.0f} s "
        f"(×{o.speed:g})"
    )
    stack.sup.prepare_dir()
    out.line(f"  everything goes to {rel(stack.var)}/ (emptied at every start)")
    out.line()
    stack.start_servers()
    stack.write_fleet()
    stack.start_ingest()
    stack.start_crew()
    stack.run_fleet()
    stack.wait_stored()
    verdict = report.verify(stack)
    report.fullest_bins(stack)
    report.crew_view(stack)
    report.collections_and_anomalies(stack)
    planned = report.collection_plans(stack)
    report.feedback(stack)
    stack.stop_crew()
    by_reason = report.deadletter(stack)
    secure = report.rate_limit(stack, by_reason)
    secure &= report.access(stack)
    secure &= report.broker_security(stack)
    report.next_steps(stack)
    if o.keep_running:
        stack.keep_running()
    ok = verdict == ExitCode.OK and planned and secure
    return ExitCode.OK if ok else ExitCode.FAILURE


# ----- command line ---------------------------------------------------------------------------


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if seconds < 5:
        raise click.BadParameter("at least 5s")
    return seconds


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--short", is_flag=True, help="CI size: 60 eco-boxes, 6 RVMs, a 10 s run (about 30 s)."
)
@click.option(
    "--duration",
    callback=_duration,
    help="Real length of the fleet run (60s, 5m); it always simulates the last 24 hours unless "
    "--speed says otherwise.  [default: 60s; --short: 10s]",
)
@click.option(
    "--ecoboxes",
    type=click.IntRange(1),
    help="Eco-boxes (street bins with fill sensors).  [default: 300; --short: 60]",
)
@click.option(
    "--rvms",
    type=click.IntRange(0),
    help="Reverse vending machines.  [default: 30; --short: 6]",
)
@click.option(
    "--regions",
    default="almaty,astana",
    show_default=True,
    help="Comma-separated regions (built-in city centres: `taza-sim fleet --help`).",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=1),
    help="Simulated seconds per real second.  [default: 86400 / duration, one simulated day: "
    "×1440 for 60 s]",
)
@click.option("--seed", type=int, default=7, show_default=True, help="Fleet and stream seed.")
@click.option(
    "--keep-running",
    is_flag=True,
    help="After the report, leave the servers and taza-ingest up until Ctrl-C, to explore.",
)
@click.option(
    "--var",
    "var",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var") / "demo",
    show_default="var/demo",
    help="Directory for the servers' data, the logs, the fleet file and the ground-truth log; "
    "emptied at every start (only if the demo made it).",
)
def main(
    short: bool,
    duration: float | None,
    ecoboxes: int | None,
    rvms: int | None,
    regions: str,
    speed: float | None,
    seed: int,
    keep_running: bool,
    var: Path,
) -> None:
    """The taza demo: a simulated fleet through a real broker and taza-ingest into InfluxDB.

    Starts Mosquitto (from mosquitto.conf) and InfluxDB 1.x on 127.0.0.1 (the standard ports
    1883 / 8086 / 8080 when free, others when not, printed), writes a fleet file, starts
    taza-ingest on it and runs the fleet, with a few malformed and duplicated messages on
    purpose and one device flooding, showing live progress. Then it prints the verify report
    (published vs stored, lost, duplicated, correctly rejected), the fullest bins per region,
    alerts, collection plans, device feedback, the dead-letter summary, the rate limit, the
    API tokens' checks, a production-broker security check and where to look next. Server
    and service logs go to files in the --var directory.

    \b
    Examples:
      make demo                               # the full demo, about 90 s
      make demo DEMO_ARGS=--short             # CI size, about 30 s
      make demo DEMO_ARGS=--keep-running      # explore afterwards; Ctrl-C ends it
      .venv/bin/python -m devstack.demo --duration 5m --ecoboxes 2000 --rvms 100

    \b
    Exit status: 0 when verify finds nothing lost, partial or wrongly accepted and
    everything stopped cleanly; 1 otherwise (with the log tail of the part that failed);
    130 on Ctrl-C (with --keep-running, Ctrl-C after the report is the normal end: 0).
    Through `make demo` the shell shows make's status: 130 after any Ctrl-C (make ends by
    the signal too), 2 when the demo failed. More: docs/demo.md.
    """
    if duration is None:
        duration = 10.0 if short else 60.0
    try:
        region_list = parse_regions(regions)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--regions") from None
    opts = Options(
        var=var,
        ecoboxes=ecoboxes if ecoboxes is not None else (60 if short else 300),
        rvms=rvms if rvms is not None else (6 if short else 30),
        regions=region_list,
        duration_s=duration,
        speed=speed if speed is not None else SIM_DAY_S / duration,
        seed=seed,
        keep_running=keep_running,
    )
    if opts.speed * opts.duration_s > 6 * SIM_DAY_S:
        raise click.BadParameter(
            "--speed × --duration spans more than 6 simulated days; taza-ingest rejects readings "
            "older than 7 days (the contract's ts window)",
            param_hint="--speed",
        )
    console = Console(sys.stdout)
    signals = Signals(console)
    signals.install()
    started = time.monotonic()
    supervisor = Supervisor(opts.var, console, signals)
    stack = Stack(opts, console, supervisor)
    code: int = ExitCode.FAILURE
    clean = False
    try:
        try:
            code = run(stack)
        except KeyboardInterrupt:
            signals.stopping = True
            console.line()
            console.line("interrupted: stopping taza-sim, taza-ingest, mosquitto and influxd ...")
            code = ExitCode.INTERRUPTED
        except (RuntimeError, OSError) as exc:  # DemoError, harness errors, network
            signals.stopping = True
            console.line()
            console.line(f"FAILED: {exc}")
            code = ExitCode.FAILURE
    finally:
        stack.stop_crew()
        clean = supervisor.stop_all()
    elapsed = time.monotonic() - started
    if code == ExitCode.OK and not clean:
        code = ExitCode.FAILURE
    console.line()
    if code == ExitCode.OK:
        console.line(f"OK: nothing lost; everything stopped cleanly ({elapsed:.0f} s in all)")
    elif code == ExitCode.INTERRUPTED:
        console.line(
            f"stopped {'cleanly' if clean else 'with errors (above)'} after {elapsed:.0f} s; "
            f"logs in {rel(supervisor.var)}/"
        )
    else:
        where = f"; logs in {rel(supervisor.var)}/" if supervisor.owns_dir else ""
        console.line(f"demo FAILED after {elapsed:.0f} s (details above){where}")
    sys.exit(code)


if __name__ == "__main__":
    main()
