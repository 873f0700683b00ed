"""The fleet page (``GET /``) in a real browser: Debian's Chromium driven by Playwright, against a
running taza-ingest (real mosquitto + influxd) fed by ``taza-sim run`` and a few showcase bins
(devstack.screenshot: one turns full, one has a spike, one turns full while the page watches).

What an operator relies on: the page works with no internet (every request stays on
127.0.0.1, no console error), it shows every device the API knows, the alerts the API reports
(and new ones without a reload), the collection plan's routes, today's collections and a
device's history with its anomaly marked — on a laptop and on a phone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import pytest
from playwright.sync_api import Browser, Page, Playwright, Request, Response, Route, sync_playwright

from devstack.ingest_process import IngestProcess, wait_until
from devstack.screenshot import (
    LAPTOP,
    PHONE,
    Fleet,
    NoChromium,
    api,
    feed,
    is_loopback,
    launch_chromium,
    publish,
    wait_full,
    write_fleet,
)
from devstack.servers import InfluxDB1, Mosquitto, free_port
from tests.plan_env import shift_around_now

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SEED = 5
REGIONS = ["almaty", "astana"]


@dataclass
class Stack:
    url: str
    mqtt_url: str
    fleet: Fleet
    ingest: IngestProcess


@pytest.fixture(scope="module")
def stack(
    module_broker: Mosquitto, influxd: InfluxDB1, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    mosquitto = module_broker
    var = tmp_path_factory.mktemp("page")
    db = "page_test"
    influxd.create_database(db)
    fleet = write_fleet(var, ecoboxes=40, rvms=4, regions=REGIONS, seed=SEED, late=True)
    ingest = IngestProcess(
        var / "ingest",
        {
            "TAZA_MQTT_URL": mosquitto.url,
            "TAZA_MQTT_CLIENT_ID": "taza-test-page",
            "TAZA_INFLUX_API": "v1",
            "TAZA_INFLUX_URL": influxd.url,
            "TAZA_INFLUX_DB": db,
            "TAZA_REGISTRY": str(fleet.registry),
            "TAZA_PLAN_TIME_LIMIT_S": "1",  # the page asks for a plan per region: keep it short
            **shift_around_now(),
        },
        free_port(),
    ).start()
    try:
        feed(mosquitto.url, fleet, seed=SEED, duration_s=6)
        wait_full(ingest.url, [b.device_id for b in fleet.showcase if b.kind == "full"])
        yield Stack(ingest.url, mosquitto.url, fleet, ingest)
    except BaseException:
        print(ingest.log_tail(80))
        raise
    finally:
        ingest.stop()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    try:
        b = launch_chromium(playwright)
    except NoChromium as exc:
        pytest.fail(str(exc), pytrace=False)
    yield b
    b.close()


@dataclass
class Loaded:
    """A page and what happened while it ran."""

    page: Page
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions
    foreign: list[str] = field(default_factory=list)  # requests for anything off 127.0.0.1
    api: dict[str, Any] = field(default_factory=dict)  # path → last JSON the page received


def open_page(browser: Browser, url: str, viewport: Any = LAPTOP) -> Loaded:
    page = browser.new_page(viewport=viewport)
    seen = Loaded(page)
    page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen.errors.append(f"uncaught: {e}"))

    def guard(route: Route, request: Request) -> None:
        if is_loopback(request.url):
            route.continue_()
        else:
            seen.foreign.append(request.url)
            route.abort("blockedbyclient")

    def keep(response: Response) -> None:
        path = urlsplit(response.url).path
        if path.startswith("/api/v1/") and response.ok:
            seen.api[path] = response.json()

    page.route("**/*", guard)
    page.on("response", keep)
    page.goto(url)
    page.wait_for_selector("body[data-loaded][data-plan-loaded]", timeout=60_000)
    return seen


def received(seen: Loaded, path: str, within_ms: int = 10_000) -> Any:
    """The last JSON the page received from ``path``. Its response event can reach Python
    after the page has moved on (once failed the collections test), so wait a little."""
    waited = 0
    while path not in seen.api and waited < within_ms:
        seen.page.wait_for_timeout(50)  # Playwright dispatches pending events meanwhile
        waited += 50
    return seen.api.get(path)


@pytest.fixture
def laptop(browser: Browser, stack: Stack) -> Iterator[Loaded]:
    seen = open_page(browser, stack.url + "/")
    yield seen
    seen.page.close()


def shown_alerts(page: Page) -> set[tuple[str, str]]:
    rows = page.locator("#alerts tbody tr")
    return {
        (
            rows.nth(i).get_attribute("data-device-id") or "",
            rows.nth(i).get_attribute("data-alert") or "",
        )
        for i in range(rows.count())
    }


def api_alerts(base: str) -> set[tuple[str, str]]:
    return {(a["device_id"], a["alert"]) for a in api(base, "/api/v1/alerts")["items"]}


# -- the tests ----------------------------------------------------------------------------------


def test_page_loads_offline_with_no_console_errors(laptop: Loaded) -> None:
    page = laptop.page
    assert page.title() == "taza · fleet"
    assert page.evaluate("typeof L === 'object' && typeof uPlot === 'function'"), "vendored libs"
    assert laptop.errors == []
    assert laptop.foreign == []
    assert not page.locator("#status.error").count(), page.inner_text("#status")


def test_request_guard_catches_a_tile_server(browser: Browser, stack: Stack) -> None:
    """The optional tile layer (``?tiles=``) is the one thing that may leave the machine: the
    guard sees it — so an empty ``foreign`` list above means nothing else did."""
    tiles = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    seen = open_page(browser, stack.url + "/?" + urlencode({"tiles": tiles}))
    try:
        seen.page.wait_for_timeout(500)
        assert seen.foreign, "the tile layer asked for no tile"
        assert all(u.startswith("https://tile.openstreetmap.org/") for u in seen.foreign)
    finally:
        seen.page.close()


def test_one_marker_per_device_coloured_by_fill(laptop: Loaded, stack: Stack) -> None:
    devices = api(stack.url, "/api/v1/devices")["items"]
    placed = {d["device_id"] for d in devices if d["lat"] is not None}
    assert len(placed) == len(devices) == 40 + 4 + 3 * len(REGIONS) + 1
    markers = laptop.page.locator("path.dev")
    assert markers.count() == len(devices)
    ids = {markers.nth(i).get_attribute("data-device-id") for i in range(markers.count())}
    assert ids == placed
    full = laptop.page.locator('path.dev[data-device-id="eb-almaty-full"]')
    assert full.get_attribute("fill") == "#d64541", "a full bin is red"
    rvm = laptop.page.locator("path.dev-rvm")
    assert rvm.count() == sum(d["kind"] == "rvm" for d in devices) == 4


def test_alerts_listed_as_the_api_reports(laptop: Loaded, stack: Stack) -> None:
    page = laptop.page
    wanted = api_alerts(stack.url)
    assert {("eb-almaty-full", "full"), ("eb-astana-full", "full")} <= wanted
    # the page polls every 5 s: it catches up with the API within two polls
    wait_until(lambda: shown_alerts(page) == api_alerts(stack.url), 15, "alerts as the API")
    assert page.inner_text("#alert-count") == str(len(shown_alerts(page)))


def test_new_alert_appears_without_reload(laptop: Loaded, stack: Stack) -> None:
    page = laptop.page
    late = next(b for b in stack.fleet.showcase if b.kind == "late")
    assert (late.device_id, "full") not in shown_alerts(page)
    publish(stack.mqtt_url, [late], "page-test-late")
    wait_until(lambda: (late.device_id, "full") in shown_alerts(page), 20, "the new full alert")
    assert laptop.errors == []


def test_region_totals_count_full_and_offline(laptop: Loaded, stack: Stack) -> None:
    devices = api(stack.url, "/api/v1/devices")["items"]
    fill = {f["device_id"]: f["fill_pct"] for f in api(stack.url, "/api/v1/fill-levels")["items"]}
    page = laptop.page
    for region in REGIONS:
        mine = [d for d in devices if d["region"] == region]
        full = sum(1 for d in mine if d["kind"] != "rvm" and fill.get(d["device_id"], 0) >= 80)
        offline = sum(1 for d in mine if d["online"] is False)
        bins = sum(1 for d in mine if d["kind"] != "rvm")
        card = page.locator(f'.card[data-region="{region}"]')
        text = card.inner_text()
        assert re.search(rf"full bins\s+{full} / {bins}", text), text
        assert re.search(rf"offline\s+{offline} / {len(mine)}", text), text
        assert full >= 1


def test_plan_routes_drawn(laptop: Loaded, stack: Stack) -> None:
    routes = 0
    for region in REGIONS:
        plan = api(stack.url, f"/api/v1/collection-plan?region={region}&format=geojson")
        routes += sum(1 for f in plan["features"] if f["geometry"]["type"] == "LineString")
    assert routes >= 1, "the full showcase bins are due: at least one route"
    assert laptop.page.locator("path.route").count() == routes
    assert laptop.page.locator("#plan .route i").count() == routes


def test_history_chart_marks_the_spike(laptop: Loaded, stack: Stack) -> None:
    page = laptop.page
    with page.expect_response(lambda r: "/history" in r.url) as answer:
        page.locator('path.dev[data-device-id="eb-almaty-spike"]').dispatch_event("click")
    doc = answer.value.json()
    page.wait_for_selector("#chart canvas")
    assert [a["anomaly"] for a in doc["anomalies"]] == ["spike"]
    assert doc["anomalies"][0]["value"] == 78.0
    chart = page.locator("#chart")
    assert chart.get_attribute("data-points") == str(len(doc["points"])) != "0"
    assert chart.get_attribute("data-marked") == "1", "one red point on the chart"
    assert "1 reading flagged as anomaly" in page.inner_text("#history-note")
    assert "eb-almaty-spike" in page.inner_text("#history-device")
    frm = datetime.now(UTC) - timedelta(hours=24)
    again = api(
        stack.url,
        f"/api/v1/devices/{quote('eb-almaty-spike')}/history?"
        + urlencode({"from": frm.isoformat().replace("+00:00", "Z")}),
    )
    assert len(again["anomalies"]) == 1


def test_todays_collections_listed(laptop: Loaded, stack: Stack) -> None:
    got = received(laptop, "/api/v1/collections")
    assert got is not None, "the page asked for no collections"
    assert {"eb-almaty-emptied", "eb-astana-emptied"} <= {c["device_id"] for c in got["items"]}, (
        "the showcase bins emptied a moment ago are today's, whatever the hour"
    )
    assert laptop.page.locator("#collections tbody tr").count() == len(got["items"])


def test_usable_on_a_phone(browser: Browser, stack: Stack) -> None:
    seen = open_page(browser, stack.url + "/", PHONE)
    page = seen.page
    try:
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page scrolls sideways ({width} px)"
        box = page.locator("#map").bounding_box()
        assert box is not None
        assert box["width"] >= PHONE["width"] - 40
        assert box["height"] >= 300
        assert page.locator("#alerts tbody tr").count() >= 1
        assert page.locator("path.dev").count() >= 1
        assert seen.errors == []
        assert seen.foreign == []
    finally:
        page.close()
