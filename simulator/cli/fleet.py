"""``taza-sim fleet``: write a fleet file, the registry taza-ingest reads."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from devices import DeviceInfo, Registry, RegistryError
from simulator.cli.options import fleet_options, generate_fleet, json_option


def summarise(devices: Sequence[DeviceInfo], out: str) -> dict[str, Any]:
    """What was written, counted the ways an operator checks a fleet file."""
    intervals = [d.report_interval_s for d in devices]
    by_kind_region: dict[str, Counter[str]] = {}
    for d in devices:
        by_kind_region.setdefault(str(d.kind), Counter())[d.region] += 1
    return {
        "out": out,
        "devices": len(devices),
        "by_kind": {k: sum(c.values()) for k, c in by_kind_region.items()},
        "by_kind_and_region": {k: dict(sorted(c.items())) for k, c in by_kind_region.items()},
        "by_fraction": dict(sorted(Counter(d.fraction for d in devices if d.fraction).items())),
        "by_site": dict(sorted(Counter(d.site for d in devices if d.site).items())),
        "report_interval_s": {"min": min(intervals), "max": max(intervals)} if intervals else None,
    }


def render(summary: dict[str, Any]) -> str:
    """The summary for people: one line per kind, then the tags the devices carry."""
    lines = [f"wrote {summary['out']}: {summary['devices']} devices"]
    for kind, regions in summary["by_kind_and_region"].items():
        where = ", ".join(f"{region} {n}" for region, n in regions.items())
        lines.append(f"  {kind:<8} {summary['by_kind'][kind]:>6}   {where}")
    for title, key in (("fractions", "by_fraction"), ("sites", "by_site")):
        if summary[key]:
            lines.append(f"  {title:<9} " + ", ".join(f"{k} {n}" for k, n in summary[key].items()))
    span = summary["report_interval_s"]
    if span:
        lines.append(f"  report interval {span['min']}–{span['max']} s")
    return "\n".join(lines)


@click.command(short_help="Write a fleet file (the registry taza-ingest reads).")
@fleet_options
@click.option(
    "--out",
    "-o",
    default="-",
    show_default=True,
    help="Fleet file to write: .json → JSON array, otherwise CSV; '-' → CSV on stdout.",
)
@json_option("the summary (devices by kind, region, fraction, site)")
def command(out: str, as_json: bool, **kw: Any) -> None:
    """Generate a fleet and write it as the registry file taza-ingest reads.

    Columns: device_id, kind, region, lat, lon, capacity_l, fraction, site, report_interval_s.
    Devices are scattered around each region's centre; ids look like eb-almaty-0001 and
    rvm-astana-001. The file is written by devices.Registry itself, so taza-ingest reads it
    back unchanged. A summary goes to stderr (--json: to stdout, as JSON).

    \b
    Example:
      taza-sim fleet --ecoboxes 300 --rvms 30 --regions almaty,astana --seed 7 --out fleet.csv
    """
    if out == "-" and as_json:
        raise click.UsageError(
            "--json prints the summary on stdout, where --out - writes the fleet"
        )
    registry = Registry(generate_fleet(kw))
    if out == "-":
        sys.stdout.write(registry.dumps("csv"))
        return
    try:
        registry.save(out)
        written = Registry.load(out)
    except OSError as exc:
        raise click.FileError(out, str(exc)) from None
    except RegistryError as exc:  # a bug here, not the user's: say so plainly
        raise click.ClickException(f"the written fleet file does not load: {exc}") from None
    summary = summarise(list(written.values()), str(Path(out)))
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(render(summary), err=True)
