"""``taza-sim``: the fleet simulator's command line, one module per command.

Shared options and conventions live in :mod:`simulator.cli.options`; exit statuses are
:class:`devices.ExitCode`, the same names ``taza-ingest`` uses.
"""

from __future__ import annotations

import click

from simulator.cli import fleet, load, run, verify
from simulator.cli.options import CONTEXT_SETTINGS


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="taza-telemetry", prog_name="taza-sim")
def main() -> None:
    """taza's fleet simulator: realistic eco-boxes and reverse vending machines over MQTT.

    Every subcommand has -h/--help. The model, its defaults and their sources:
    docs/simulator.md. Exit statuses (devices.ExitCode): 0 OK, 1 failure, 2 bad command line,
    3 verify found a mismatch, 4 verify impossible, 5 broker unreachable, 130 interrupted.
    """


main.add_command(fleet.command, "fleet")
main.add_command(run.command, "run")
main.add_command(load.command, "load")
main.add_command(verify.command, "verify")

__all__ = ["main"]
