"""``python -m devstack.screenshot``: the fleet page (``GET /``) photographed in Debian's Chromium.

Starts mosquitto, influxd and taza-ingest on 127.0.0.1, feeds them a simulated fleet
(``taza-sim run``) plus a few *showcase* bins whose readings make the page's features visible
for sure (a bin that turns full, so an alert fires and a route is planned; a bin with a spike,
so the history chart marks an anomaly), then saves ``docs/fleet-page.png`` (laptop) and
``docs/fleet-page-phone.png``. ``tests/test_page.py`` uses the same feed and browser set-up,
so the pictures show what the test checks.

Chromium is Debian's (``apt-get install -y chromium``), driven by Playwright; never
``playwright install``, which downloads a browser of its own.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from devstack.demo.supervisor import flags, tool
from devstack.ingest_process import IngestProcess, http_get, wait_until
from devstack.publisher import Publisher, fill_payload
from devstack.servers import InfluxDB1, Mosquitto, free_port

if TYPE_CHECKING:  # playwright is a dev dependency: imported only where a browser starts
    from playwright.sync_api import Browser, Playwright, ViewportSize

CHROMIUM = Path("/usr/bin/chromium")
INSTALL_CHROMIUM = "apt-get install -y chromium   (or: make setup)"
#: Without the background-networking flags Chromium calls Google's hosts at every start.
CHROMIUM_ARGS = [
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
LAPTOP: ViewportSize = {"width": 1440, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
DB = "taza"
STEP_MS = 15 * 60 * 1000

ShowKind = Literal["full", "spike"]
#: Readings (oldest first, one per 15 min, the last one now) of the showcase bins.
READINGS: dict[ShowKind, tuple[float, ...]] = {
    "full": (52.0, 58.0, 64.0, 70.0, 76.0, 82.0, 88.0, 93.0),  # 24 %/h: `full` fires at 88
    "spike": (30.0, 32.0, 34.0, 36.0, 78.0, 38.0, 40.0, 42.0),  # 78 is a glitch: a `spike`
}


class NoChromium(RuntimeError):
    """Debian's chromium is not installed."""


def launch_chromium(pw: Playwright) -> Browser:
    if not CHROMIUM.exists():
        raise NoChromium(f"{CHROMIUM} is missing: {INSTALL_CHROMIUM}")
    return pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def is_loopback(url: str) -> bool:
    """data: and blob: URLs never leave the machine; http(s) only to 127.0.0.1."""
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    return parts.hostname == "127.0.0.1"


@dataclass(frozen=True)
class Showcase:
    device_id: str
    region: str
    kind: ShowKind

    @property
    def readings(self) -> tuple[float, ...]:
        return READINGS[self.kind]

    def messages(self, now_ms: int) -> list[tuple[str, bytes]]:
        n = len(self.readings)
        topic = f"taza/v1/{self.region}/ecobox/{self.device_id}/fill"
        return [
            (topic, fill_payload(i, now_ms - (n - 1 - i) * STEP_MS, pct))
            for i, pct in enumerate(self.readings)
        ]


@dataclass(frozen=True)
class Fleet:
    sim_fleet: Path  # what taza-sim drives
    registry: Path  # what taza-ingest knows: the same plus the showcase bins
    showcase: tuple[Showcase, ...]


def write_fleet(var: Path, *, ecoboxes: int, rvms: int, regions: Sequence[str], seed: int) -> Fleet:
    """The simulator's fleet file, and a registry with one full bin per region and one bin
    with a spike added near the centre of each region's bins."""
    var.mkdir(parents=True, exist_ok=True)
    sim_fleet = var / "fleet.csv"
    opts = flags(ecoboxes=ecoboxes, rvms=rvms, regions=",".join(regions), seed=seed)
    subprocess.run(
        [*tool("taza-sim"), "fleet", *opts, "--out", str(sim_fleet)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    with sim_fleet.open(newline="") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames or ())
        rows = list(reader)
    showcase: list[Showcase] = []
    extra: list[dict[str, str]] = []
    for region in regions:
        bins = [r for r in rows if r["region"] == region and r["kind"] == "ecobox"]
        lat = sum(float(r["lat"]) for r in bins) / len(bins)
        lon = sum(float(r["lon"]) for r in bins) / len(bins)
        for i, kind in enumerate(READINGS):
            device_id = f"eb-{region}-{kind}"
            showcase.append(Showcase(device_id, region, kind))
            row = dict(bins[0])
            row.update(
                device_id=device_id,
                lat=f"{lat + 0.006 * (i + 1):.6f}",
                lon=f"{lon - 0.008 * (i + 1):.6f}",
                site="commercial",
                report_interval_s="900",
            )
            extra.append(row)
    registry = var / "registry.csv"
    with registry.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows([*rows, *extra])
    return Fleet(sim_fleet, registry, tuple(showcase))


def feed(mqtt_url: str, fleet: Fleet, *, seed: int, duration_s: float) -> int:
    """Run the simulated fleet (the last 24 h in ``duration_s``), then the showcase readings.
    Returns how many messages the broker acknowledged."""
    log = fleet.sim_fleet.with_name("run.jsonl")
    opts = flags(broker=mqtt_url, fleet=fleet.sim_fleet, seed=seed, log=log)
    opts += flags(speed=f"{86400 / duration_s:g}", duration=f"{duration_s:g}s")
    subprocess.run(
        [*tool("taza-sim"), "run", *opts, "--client-prefix", f"sim-page-{seed}", "--quiet"],
        check=True,
        capture_output=True,
        timeout=duration_s + 120,
    )
    sent = sum(1 for _ in log.open())
    url = urlsplit(mqtt_url)
    pub = Publisher(url.hostname or "127.0.0.1", url.port or 1883, f"page-showcase-{seed}")
    try:
        now_ms = int(time.time() * 1000)
        for bin_ in fleet.showcase:
            pub.publish(bin_.messages(now_ms))
        pub.wait_all_acked(30)
    finally:
        pub.close()
    return sent + sum(len(b.readings) for b in fleet.showcase)


def api(base: str, path: str) -> Any:
    status, body = http_get(base + path, timeout=30)
    if status != 200:
        raise AssertionError(f"GET {path}: HTTP {status} {body[:500]}")
    return json.loads(body)


def wait_showcase(base: str, fleet: Fleet, timeout: float = 60) -> None:
    """Until the API reports the showcase bins' ``full`` alerts: the stage has seen the feed."""
    want = {b.device_id for b in fleet.showcase if b.kind == "full"}

    def firing() -> bool:
        doc = api(base, "/api/v1/alerts")
        items = doc if isinstance(doc, list) else doc.get("items", [])
        return want <= {a["device_id"] for a in items if a["alert"] == "full"}

    wait_until(firing, timeout, f"the full alerts of {sorted(want)}", interval=0.5)


@contextmanager
def stack(
    var: Path, *, ecoboxes: int, rvms: int, regions: Sequence[str], seed: int, duration_s: float
) -> Iterator[str]:
    """mosquitto + influxd + taza-ingest, fed; yields taza-ingest's base URL."""
    if var.exists():
        shutil.rmtree(var)
    with Mosquitto(var / "mosquitto") as mosquitto, InfluxDB1(var / "influxdb") as influxd:
        influxd.create_database(DB)
        fleet = write_fleet(var, ecoboxes=ecoboxes, rvms=rvms, regions=regions, seed=seed)
        ingest = IngestProcess(
            var / "ingest",
            {
                "TAZA_MQTT_URL": mosquitto.url,
                "TAZA_MQTT_CLIENT_ID": "taza-ingest-screenshot",
                "TAZA_INFLUX_API": "v1",
                "TAZA_INFLUX_URL": influxd.url,
                "TAZA_INFLUX_DB": DB,
                "TAZA_REGISTRY": str(fleet.registry),
            },
            free_port(),
        ).start()
        try:
            feed(mosquitto.url, fleet, seed=seed, duration_s=duration_s)
            wait_showcase(ingest.url, fleet)
            yield ingest.url
        finally:
            ingest.stop()


def photograph(base: str, out_dir: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            for name, viewport in (("fleet-page.png", LAPTOP), ("fleet-page-phone.png", PHONE)):
                page = browser.new_page(viewport=viewport)
                page.goto(base + "/")
                page.wait_for_selector("body[data-plan-loaded]", timeout=60_000)
                region = page.locator(".card").first.get_attribute("data-region")
                spike = f"eb-{region}-spike"
                page.locator(f'path.dev[data-device-id="{spike}"]').dispatch_event("click")
                page.wait_for_selector("#chart canvas", timeout=15_000)
                page.wait_for_timeout(500)  # let the chart and the map settle
                path = out_dir / name
                page.screenshot(path=str(path), full_page=name != "fleet-page.png")
                saved.append(path)
                page.close()
        finally:
            browser.close()
    return saved


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devstack.screenshot", description=__doc__)
    ap.add_argument("--out-dir", type=Path, default=Path("docs"))
    ap.add_argument("--var", type=Path, default=Path("var/screenshot"))
    ap.add_argument("--ecoboxes", type=int, default=120)
    ap.add_argument("--rvms", type=int, default=10)
    ap.add_argument("--regions", default="almaty,astana")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--duration", type=float, default=15.0, help="real seconds of fleet run")
    ap.add_argument(
        "--keep-running", action="store_true", help="after the pictures, serve until Ctrl-C"
    )
    args = ap.parse_args(argv)
    try:
        with stack(
            args.var,
            ecoboxes=args.ecoboxes,
            rvms=args.rvms,
            regions=args.regions.split(","),
            seed=args.seed,
            duration_s=args.duration,
        ) as base:
            for path in photograph(base, args.out_dir):
                print(f"saved {path}")
            if args.keep_running:
                print(f"the page: {base}/   (Ctrl-C ends)")
                while True:
                    time.sleep(3600)
    except NoChromium as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
