"""Operator API tokens against the real stack: mosquitto → taza-ingest → influxd, with a tokens
file made by ``taza tokens add`` — and the fleet page behind them in Debian's Chromium.

What a city relies on: no token or a wrong one gets 401 with a JSON reason; a crew token sees
its region's alerts, fill levels and plan and nothing else (403 elsewhere); an operator token
sees everything; a token revoked with ``taza tokens revoke`` is refused at once by the running
service; the ``taza`` CLI sends ``TAZA_API_TOKEN``; the page asks for a token, keeps it for the
tab and shows what a 401/403 means; no token ever reaches the service's log or /metrics.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from playwright.sync_api import Browser, Page, sync_playwright

from devices.message import Kind
from devices.registry import DeviceInfo, Registry
from devices.topics import format_topic
from devstack.ingest_process import IngestProcess, wait_until
from devstack.publisher import Publisher, fill_payload
from devstack.screenshot import LAPTOP, NoChromium, is_loopback, launch_chromium
from devstack.servers import InfluxDB1, Mosquitto, free_port
from operators.cli import main as taza
from tests.plan_env import shift_around_now

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

TAZA = Path(sys.executable).parent / "taza"
# device → (region, fill readings every 10 min, the last one now): one full bin per region
BINS = {
    "eb-al-full": ("almaty", [84.0, 88.0, 91.0, 93.0, 95.0]),
    "eb-al-low": ("almaty", [20.0, 22.0, 24.0, 26.0, 28.0]),
    "eb-as-full": ("astana", [85.0, 89.0, 92.0, 94.0, 96.0]),
    "eb-as-low": ("astana", [30.0, 31.0, 32.0, 33.0, 34.0]),
}
FLEET = Registry(
    [
        DeviceInfo(d, Kind.ECOBOX, r, 43.2 if r == "almaty" else 51.1, 76.9 if r == "almaty"
                   else 71.4, 1100.0, "plastic", "park", 600)
        for d, (r, _) in BINS.items()
    ]
)  # fmt: skip


def tokens_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``taza tokens`` command, as an operator runs it."""
    assert TAZA.exists(), f"{TAZA} is not installed: run make venv"
    return subprocess.run(
        [str(TAZA), "tokens", *args], capture_output=True, text=True, timeout=60, check=False
    )


def add_token(file: Path, name: str, *opts: str) -> str:
    done = tokens_cli("add", name, *opts, "--file", str(file))
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert token.startswith("taza_"), done.stdout
    assert token not in done.stderr
    return token


def get(base: str, path: str, token: str | None = None) -> tuple[int, Any, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(base + path, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=30) as resp:
            body = resp.read()
            status, hdrs = resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        body, status, hdrs = exc.read(), exc.code, dict(exc.headers)
    try:
        doc = json.loads(body)
    except ValueError:
        doc = body.decode(errors="replace")
    return status, doc, hdrs


@dataclass
class Stack:
    url: str
    ingest: IngestProcess
    tokens_file: Path
    operator: str
    crew: str  # almaty
    used: list[str]  # every token made, for the no-leak check


@pytest.fixture(scope="module")
def stack(
    module_broker: Mosquitto, influxd: InfluxDB1, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    var = tmp_path_factory.mktemp("auth")
    tokens_file = var / "tokens.json"
    operator = add_token(tokens_file, "ops-1", "--role", "operator")
    crew = add_token(tokens_file, "crew-almaty", "--role", "crew", "--region", "almaty")
    FLEET.save(var / "fleet.csv")
    db = "auth_test"
    influxd.create_database(db)
    ingest = IngestProcess(
        var / "ingest",
        {
            "TAZA_MQTT_URL": module_broker.url,
            "TAZA_MQTT_CLIENT_ID": "taza-test-auth",
            "TAZA_INFLUX_URL": influxd.url,
            "TAZA_INFLUX_DB": db,
            "TAZA_REGISTRY": str(var / "fleet.csv"),
            "TAZA_API_TOKENS_FILE": str(tokens_file),
            "TAZA_PLAN_TIME_LIMIT_S": "1",
            **shift_around_now(),
            "TAZA_LOG_LEVEL": "debug",  # the most the log can say: still no token
        },
        free_port(),
    ).start()  # /readyz: public by default
    try:
        pub = Publisher("127.0.0.1", module_broker.port, "taza-test-auth-pub")
        now = int(time.time() * 1000)
        for device_id, (region, levels) in BINS.items():
            n = len(levels)
            pub.publish(
                (
                    format_topic(region, "ecobox", device_id, "fill"),
                    fill_payload(i, now - (n - 1 - i) * 600_000, pct),
                )
                for i, pct in enumerate(levels)
            )
        pub.wait_all_acked(30)
        pub.close()

        def both_full() -> bool:
            status, doc, _ = get(ingest.url, "/api/v1/alerts?alert=full", operator)
            return status == 200 and {a["device_id"] for a in doc["items"]} == {
                "eb-al-full",
                "eb-as-full",
            }

        wait_until(both_full, 60, "a full alert in each region")
        yield Stack(ingest.url, ingest, tokens_file, operator, crew, [operator, crew])
    finally:
        ingest.stop()


# -- the API ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/v1/fill-levels", "/api/v1/alerts", "/api/v1/devices", "/metrics"]
)
def test_no_token_is_401_with_a_json_reason(stack: Stack, path: str) -> None:
    status, doc, headers = get(stack.url, path)
    assert status == 401
    assert doc["reason"] == "token_missing"
    assert "Bearer" in doc["detail"]
    assert headers["www-authenticate"].startswith("Bearer")


def test_wrong_tokens_are_401_token_invalid(stack: Stack) -> None:
    last = stack.operator[-1]
    forged = [
        stack.operator[:-1] + ("A" if last != "A" else "B"),  # one character off
        "taza_0badc0de_" + "x" * 43,  # well-formed, unknown id
        "hunter2",  # not even the shape of a token
    ]
    for token in forged:
        status, doc, headers = get(stack.url, "/api/v1/fill-levels", token)
        assert status == 401, token
        assert doc["reason"] == "token_invalid"
        assert "www-authenticate" in headers
        assert token not in json.dumps(doc)
    stack.used.extend(forged)


def test_health_is_public_by_default_for_probes(stack: Stack) -> None:
    assert get(stack.url, "/healthz")[0] == 200
    assert get(stack.url, "/readyz")[0] == 200


def test_crew_sees_only_its_regions_alerts_fill_levels_and_plan(stack: Stack) -> None:
    status, doc, _ = get(stack.url, "/api/v1/fill-levels", stack.crew)
    assert status == 200
    assert {i["device_id"] for i in doc["items"]} == {"eb-al-full", "eb-al-low"}
    status, doc, _ = get(stack.url, "/api/v1/fill-levels?region=almaty", stack.crew)
    assert {i["device_id"] for i in doc["items"]} == {"eb-al-full", "eb-al-low"}
    status, doc, _ = get(stack.url, "/api/v1/alerts", stack.crew)
    assert status == 200
    assert {a["region"] for a in doc["items"]} == {"almaty"}
    assert "eb-al-full" in {a["device_id"] for a in doc["items"]}
    status, doc, _ = get(stack.url, "/api/v1/collection-plan?region=almaty", stack.crew)
    assert status == 200, doc
    assert doc["region"] == "almaty"
    assert "eb-al-full" in {s["device_id"] for r in doc["routes"] for s in r["stops"]}, doc


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/fill-levels?region=astana",
        "/api/v1/alerts?region=astana",
        "/api/v1/alerts/history?region=astana",
        "/api/v1/collection-plan?region=astana",
    ],
)
def test_crew_outside_its_region_is_403(stack: Stack, path: str) -> None:
    status, doc, _ = get(stack.url, path, stack.crew)
    assert status == 403
    assert doc["reason"] == "region_forbidden"
    assert doc["param"] == "region"
    assert "almaty" in doc["detail"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/devices",
        "/api/v1/devices/eb-al-full/history",
        "/api/v1/collections",
        "/api/v1/rvm/summary",
        "/metrics",
    ],
)
def test_crew_may_not_read_the_rest(stack: Stack, path: str) -> None:
    status, doc, _ = get(stack.url, path, stack.crew)
    assert status == 403
    assert doc["reason"] == "role_forbidden"


def test_whoami_names_the_token(stack: Stack) -> None:
    assert get(stack.url, "/api/v1/whoami", stack.crew)[1] == {
        "name": "crew-almaty",
        "role": "crew",
        "region": "almaty",
    }
    assert get(stack.url, "/api/v1/whoami", stack.operator)[1] == {
        "name": "ops-1",
        "role": "operator",
        "region": None,
    }
    assert get(stack.url, "/api/v1/whoami")[0] == 401


def test_operator_sees_everything(stack: Stack) -> None:
    status, doc, _ = get(stack.url, "/api/v1/fill-levels", stack.operator)
    assert status == 200
    assert {i["device_id"] for i in doc["items"]} == set(BINS)
    status, doc, _ = get(stack.url, "/api/v1/alerts?alert=full", stack.operator)
    assert {a["region"] for a in doc["items"]} == {"almaty", "astana"}
    status, doc, _ = get(stack.url, "/api/v1/devices", stack.operator)
    assert status == 200
    assert {d["device_id"] for d in doc["items"]} == set(BINS)
    status, doc, _ = get(stack.url, "/api/v1/devices/eb-as-full/history", stack.operator)
    assert status == 200
    assert sum(p["readings"] for p in doc["points"]) == len(BINS["eb-as-full"][1])
    for path in ("/api/v1/collections", "/api/v1/rvm/summary", "/api/v1/alerts/history"):
        assert get(stack.url, path, stack.operator)[0] == 200, path
    status, text, _ = get(stack.url, "/metrics", stack.operator)
    assert status == 200
    assert "taza_api_auth_failures_total" in text


def test_a_revoked_token_is_refused_by_the_running_service(stack: Stack) -> None:
    pid = stack.ingest.proc.pid if stack.ingest.proc else None
    token = add_token(stack.tokens_file, "crew-temp", "--role", "crew", "--region", "astana")
    stack.used.append(token)
    status, doc, _ = get(stack.url, "/api/v1/fill-levels", token)
    assert status == 200, doc
    assert {i["device_id"] for i in doc["items"]} == {"eb-as-full", "eb-as-low"}
    listed = tokens_cli("list", "--json", "--file", str(stack.tokens_file))
    assert token not in listed.stdout
    assert "crew-temp" in listed.stdout
    done = tokens_cli("revoke", "crew-temp", "--file", str(stack.tokens_file))
    assert done.returncode == 0, done.stderr
    status, doc, _ = get(stack.url, "/api/v1/fill-levels", token)
    assert status == 401
    assert doc["reason"] == "token_invalid"
    assert stack.ingest.proc is not None
    assert stack.ingest.proc.pid == pid
    assert stack.ingest.proc.poll() is None
    assert get(stack.url, "/api/v1/fill-levels", stack.operator)[0] == 200


def test_the_cli_sends_the_token_from_the_environment(stack: Stack) -> None:
    runner = CliRunner()
    args = ["fill-levels", "--json", "--url", stack.url]
    ok = runner.invoke(taza, args, env={"TAZA_API_TOKEN": stack.operator})
    assert ok.exit_code == 0, ok.output
    assert {i["device_id"] for i in json.loads(ok.stdout)["items"]} == set(BINS)
    crew = runner.invoke(taza, args, env={"TAZA_API_TOKEN": stack.crew})
    assert {i["device_id"] for i in json.loads(crew.stdout)["items"]} == {
        "eb-al-full",
        "eb-al-low",
    }
    refused = runner.invoke(
        taza, ["devices", "--url", stack.url], env={"TAZA_API_TOKEN": stack.crew}
    )
    assert refused.exit_code == 1
    assert "403 role_forbidden" in refused.stderr
    missing = runner.invoke(taza, args, env={"TAZA_API_TOKEN": ""})
    assert missing.exit_code == 1
    assert "401 token_missing" in missing.stderr
    for result in (ok, crew, refused, missing):
        assert stack.operator not in result.stderr
        assert stack.crew not in result.stderr


def test_openapi_is_accurate_with_tokens(stack: Stack) -> None:
    """schemathesis with an operator token, all checks: among them ``ignored_auth`` (the
    declared scheme must really refuse a request without it) and undocumented statuses."""
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert exe, "schemathesis is a dev dependency: pip install -e '.[dev]'"
    out = subprocess.run(
        [exe, "run", f"{stack.url}/api/v1/openapi.json", "--checks", "all", "--workers", "1",
         "--max-examples", "10", "--max-time", "40", "--no-color", "--request-timeout", "10",
         "--seed", "1", "-H", f"Authorization: Bearer {stack.operator}"],
        capture_output=True, text=True, timeout=180,
        env={**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    operations = len(get(stack.url, "/api/v1/openapi.json")[1]["paths"])
    assert f"{operations} selected / {operations} total" in out.stdout, out.stdout[-3000:]


# -- the page -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        try:
            b = launch_chromium(pw)
        except NoChromium as exc:
            pytest.fail(str(exc), pytrace=False)
        yield b
        b.close()


def open_page(browser: Browser, url: str) -> tuple[Page, list[str], list[str]]:
    """The page, its console errors (but a refused request's own line) and foreign requests."""
    page = browser.new_page(viewport=LAPTOP)
    errors: list[str] = []
    foreign: list[str] = []

    def console(m: Any) -> None:
        if m.type == "error" and not any(f"status of {s}" in m.text for s in (401, 403)):
            errors.append(m.text)

    page.on("console", console)
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    page.route(
        "**/*",
        lambda route, req: (
            route.continue_()
            if is_loopback(req.url)
            else (foreign.append(req.url), route.abort("blockedbyclient"))
        ),
    )
    page.goto(url + "/")
    return page, errors, foreign


def markers(page: Page) -> int:
    return page.locator("path.dev").count()


def test_page_asks_for_a_token_then_shows_the_fleet(browser: Browser, stack: Stack) -> None:
    page, errors, foreign = open_page(browser, stack.url)
    page.wait_for_selector("#auth:not([hidden])", timeout=30_000)
    assert "needs an API token" in page.locator("#auth-message").inner_text()
    assert markers(page) == 0
    page.fill("#auth-token", stack.operator)
    page.click("#auth button[type=submit]")
    page.wait_for_function(f"document.querySelectorAll('path.dev').length === {len(BINS)}")
    assert page.locator("#auth").is_hidden()
    page.wait_for_selector("#alerts tbody tr[data-alert=full]")
    assert page.evaluate("sessionStorage.getItem('taza.token')") == stack.operator
    page.reload()  # kept for the tab: no prompt again
    page.wait_for_function(f"document.querySelectorAll('path.dev').length === {len(BINS)}")
    assert page.locator("#auth").is_hidden()
    assert errors == []
    assert foreign == []
    page.close()


def test_page_says_when_a_token_is_refused(browser: Browser, stack: Stack) -> None:
    page, errors, _ = open_page(browser, stack.url)
    page.wait_for_selector("#auth:not([hidden])", timeout=30_000)
    page.fill("#auth-token", "taza_0badc0de_" + "z" * 43)
    page.click("#auth button[type=submit]")
    page.wait_for_selector("#auth[data-reason=token_invalid]:not([hidden])")
    assert "refused this token" in page.locator("#auth-message").inner_text()
    assert markers(page) == 0
    assert errors == []
    page.close()


def test_page_with_a_crew_token_shows_its_region(browser: Browser, stack: Stack) -> None:
    """A crew's page: its region's bins (from /fill-levels), alerts and plan, and no panel
    asking what the token may not read (no 403 in the status line)."""
    page, errors, foreign = open_page(browser, stack.url)
    page.wait_for_selector("#auth:not([hidden])", timeout=30_000)
    page.fill("#auth-token", stack.crew)
    page.click("#auth button[type=submit]")
    page.wait_for_selector("body[data-plan-loaded]", timeout=60_000)
    page.wait_for_function("document.querySelectorAll('path.dev').length === 2")
    shown = {page.locator("path.dev").nth(i).get_attribute("data-device-id") for i in range(2)}
    assert shown == {"eb-al-full", "eb-al-low"}
    page.wait_for_selector("#alerts tbody tr[data-alert=full]")
    rows = page.locator("#alerts tbody tr")
    assert {rows.nth(i).get_attribute("data-device-id") for i in range(rows.count())} == {
        "eb-al-full"
    }
    page.wait_for_selector("path.route", timeout=30_000)  # its region's plan, drawn
    assert "403" not in page.locator("#status").inner_text()
    assert errors == []
    assert foreign == []
    page.close()


def test_page_explains_a_403(browser: Browser, stack: Stack) -> None:
    """A crew clicking a bin asks for its history, an operator endpoint: the panel says why
    there is no chart."""
    page, errors, _ = open_page(browser, stack.url)
    page.wait_for_selector("#auth:not([hidden])", timeout=30_000)
    page.fill("#auth-token", stack.crew)
    page.click("#auth button[type=submit]")
    page.wait_for_function("document.querySelectorAll('path.dev').length === 2")
    page.locator('path.dev[data-device-id="eb-al-full"]').dispatch_event("click")
    page.wait_for_function("document.getElementById('history-note').textContent.includes('403')")
    note = page.locator("#history-note").inner_text()
    assert "role_forbidden: this token may not see it" in note
    assert errors == []
    page.close()


# -- last: nothing above leaked a token ---------------------------------------------------------


def test_no_token_in_the_log_or_metrics(stack: Stack) -> None:
    _, text, _ = get(stack.url, "/metrics", stack.operator)
    log = stack.ingest.log_path.read_text(errors="replace")
    assert "api_tokens_loaded" in log  # the log does talk about tokens...
    for token in stack.used:
        assert token not in log  # ...never shows one
        assert token not in text
    secret_parts = [t.split("_", 2)[2] for t in stack.used if t.count("_") >= 2]
    assert all(s not in log for s in secret_parts)
    assert os.stat(stack.tokens_file).st_mode & 0o077 == 0
