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
from collections.abc import Iterable, Iterator, Sequence
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

ShowKind = Literal["full", "spike", "emptied", "late"]
#: Readings (oldest first, one per 15 min, the last one now) of the showcase bins.
READINGS: dict[ShowKind, tuple[float, ...]] = {
    "full": (52.0, 58.0, 64.0, 70.0, 76.0, 82.0, 88.0, 93.0),  # 24 %/h: `full` fires at 88
    "spike": (30.0, 32.0, 34.0, 36.0, 78.0, 38.0, 40.0, 42.0),  # 78 is a glitch: a `spike`
    # Emptied by the last reading: a collection now, so "today's collections" is never empty,
    # whatever the hour (the simulated day's crews work in daylight).
    "emptied": (20.0, 23.0, 26.0, 29.0, 32.0, 35.0, 38.0, 5.0),
    "late": (52.0, 58.0, 64.0, 70.0, 76.0, 82.0, 88.0, 93.0),  # like full, published later
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


def write_fleet(
    var: Path, *, ecoboxes: int, rvms: int, regions: Sequence[str], seed: int, late: bool = False
) -> Fleet:
    """The simulator's fleet file, and a registry with one full bin, one bin with a spike and
    one just emptied added near the centre of each region's bins; with ``late``, also one bin in
    the first region that nothing feeds (a test turns it full while the page watches)."""
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
        kinds: list[ShowKind] = ["full", "spike", "emptied"]
        if late and region == regions[0]:
            kinds.append("late")
        for i, kind in enumerate(kinds):
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


def start_fleet_run(
    mqtt_url: str, fleet: Fleet, *, seed: int, duration_s: float
) -> subprocess.Popen[bytes]:
    """``taza-sim run``: the simulated fleet publishes the last 24 h in ``duration_s``."""
    log = fleet.sim_fleet.with_name("run.jsonl")
    opts = flags(broker=mqtt_url, fleet=fleet.sim_fleet, seed=seed, log=log)
    opts += flags(speed=f"{86400 / duration_s:g}", duration=f"{duration_s:g}s")
    out = fleet.sim_fleet.with_name("sim.log").open("wb")
    with out:
        return subprocess.Popen(
            [*tool("taza-sim"), "run", *opts, "--client-prefix", f"sim-page-{seed}", "--quiet"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_fleet_run(run: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    try:
        rc = run.wait(timeout)
    except subprocess.TimeoutExpired:
        run.kill()
        run.wait()
        raise AssertionError(f"taza-sim run did not finish within {timeout:.0f} s") from None
    if rc != 0:
        raise AssertionError(f"taza-sim run exited {rc}: see {log}")


def feed(mqtt_url: str, fleet: Fleet, *, seed: int, duration_s: float) -> None:
    """The whole simulated day, then the showcase bins (but ``late``): a state that holds still."""
    run = start_fleet_run(mqtt_url, fleet, seed=seed, duration_s=duration_s)
    wait_fleet_run(run, fleet.sim_fleet.with_name("sim.log"), duration_s + 120)
    publish(mqtt_url, [b for b in fleet.showcase if b.kind != "late"], f"page-showcase-{seed}")


def publish(mqtt_url: str, bins: Iterable[Showcase], client_id: str) -> int:
    """The bins' readings, the last one now; returns how many the broker acknowledged."""
    url = urlsplit(mqtt_url)
    pub = Publisher(url.hostname or "127.0.0.1", url.port or 1883, client_id)
    n = 0
    try:
        now_ms = int(time.time() * 1000)
        for bin_ in bins:
            messages = bin_.messages(now_ms)
            pub.publish(messages)
            n += len(messages)
        pub.wait_all_acked(30)
    finally:
        pub.close()
    return n


def api(base: str, path: str) -> Any:
    """GET an /api/v1 document; anything but 200 is an error naming the path."""
    status, body = http_get(base + path, timeout=30)
    if status != 200:
        raise AssertionError(f"GET {path}: HTTP {status} {body[:500]}")
    return json.loads(body)


def wait_full(base: str, device_ids: Iterable[str], timeout: float = 60) -> None:
    """Until the API reports these bins' ``full`` alerts: the fleet stage has seen them."""
    want = set(device_ids)

    def firing() -> bool:
        items = api(base, "/api/v1/alerts?alert=full")["items"]
        return want <= {a["device_id"] for a in items}

    wait_until(firing, timeout, f"the full alerts of {sorted(want)}", interval=0.5)


@contextmanager
def stack(
    var: Path, *, ecoboxes: int, rvms: int, regions: Sequence[str], seed: int, duration_s: float
) -> Iterator[str]:
    """mosquitto + influxd + taza-ingest, the showcase bins fed and the simulated fleet
    running (so its devices are online); yields taza-ingest's base URL while the fleet runs
    and waits for the run to end on exit."""
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
                "TAZA_PLAN_TIME_LIMIT_S": "2",
            },
            free_port(),
        ).start()
        t0 = time.monotonic()
        run = start_fleet_run(mosquitto.url, fleet, seed=seed, duration_s=duration_s)
        try:
            publish(mosquitto.url, fleet.showcase, f"page-showcase-{seed}")
            wait_full(ingest.url, [b.device_id for b in fleet.showcase if b.kind == "full"])
            # most of the simulated day first: fill levels, collections, a plan worth drawing
            time.sleep(max(0.0, 0.5 * duration_s - (time.monotonic() - t0)))
            for region in regions:  # solved now, the page gets the plan from the API's cache
                api(ingest.url, f"/api/v1/collection-plan?region={region}&format=geojson")
            if run.poll() is not None:
                raise AssertionError("the fleet run ended before the pictures: raise --duration")
            yield ingest.url
            wait_fleet_run(run, fleet.sim_fleet.with_name("sim.log"), duration_s + 120)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
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
                page.add_style_tag(content=".leaflet-tooltip { display: none; }")  # the click's
                page.wait_for_timeout(500)  # let the chart and the map settle
                path = out_dir / name
                page.screenshot(path=str(path), full_page=True)
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
    ap.add_argument("--duration", type=float, default=40.0, help="real seconds of fleet run")
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
