"""The API app in-process (no network server): a real ``Fleet`` fed decoded messages, real
routing, validation and serialisation. What is checked is what an operator relies on: which
bins are listed, in which order, with which fields; how bad parameters and missing parts answer.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from devices import decode
from devices.limits import Limits
from devices.message import Kind
from devices.registry import DeviceInfo, Registry
from ingest.api import ApiContext, build_app
from ingest.api.influx import InfluxReader
from ingest.config import load_settings
from ingest.errors import ConfigError
from ingest.fleet import Fleet
from ingest.metrics import Metrics

NOW = datetime.now(UTC).replace(microsecond=0)
LIMITS = Limits(max_age=timedelta(days=30))
FILL_FIELDS = {
    "device_id", "fill_pct", "forecast_full_at", "fill_rate_pct_per_h", "last_seen",
    "lat", "lon", "site", "fraction", "capacity_l",
}  # fmt: skip


def box(device_id: str, region: str, fraction: str, lat: float = 43.2) -> DeviceInfo:
    return DeviceInfo(device_id, Kind.ECOBOX, region, lat, 76.9, 1100.0, fraction, "park", 900)


REGISTRY = Registry(
    [
        box("eb-1", "almaty", "plastic"),
        box("eb-2", "almaty", "paper"),
        box("eb-3", "astana", "plastic", 51.1),
        box("eb-quiet", "astana", "glass", 51.2),
        DeviceInfo("rvm-1", Kind.RVM, "almaty", 43.3, 76.95, None, None, "mall", 900),
    ]
)


def feed(fleet: Fleet, device_id: str, levels: list[float], start: datetime) -> None:
    """Fill readings every 15 min, decoded by the contract exactly as the service does."""
    d = REGISTRY[device_id]
    for seq, pct in enumerate(levels):
        ts = start + timedelta(minutes=15 * seq)
        payload = json.dumps({"ts": int(ts.timestamp() * 1000), "seq": seq, "fill_pct": pct})
        topic = f"taza/v1/{d.region}/ecobox/{device_id}/fill"
        fleet.apply(decode(topic, payload.encode(), ts + timedelta(seconds=1), LIMITS), d)


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    f = Fleet()
    start = NOW - timedelta(hours=6)
    feed(f, "eb-1", [10 + 2.5 * i for i in range(20)], start)  # rising steadily to 57.5
    feed(f, "eb-2", [90.0, 91.0, 92.0, 92.5], start)  # full
    feed(f, "eb-3", [30.0, 31.0, 31.5], start)
    return f


def client(fleet: Fleet | None, **kw: object) -> TestClient:
    ctx = ApiContext(
        Metrics(),
        lambda: (True, {"subscribed": True}),
        lambda: (True, {}),
        fleet=fleet,
        registry=REGISTRY,
        **kw,  # type: ignore[arg-type]
    )
    return TestClient(build_app(ctx))


@pytest.fixture(scope="module")
def api(fleet: Fleet) -> Iterator[TestClient]:
    with client(fleet) as c:
        yield c


def test_fill_levels_fullest_first_with_exactly_the_documented_fields(api: TestClient) -> None:
    r = api.get("/api/v1/fill-levels")
    assert r.status_code == 200
    items = r.json()["items"]
    assert [i["device_id"] for i in items] == ["eb-2", "eb-1", "eb-3"]
    assert all(set(i) == FILL_FIELDS for i in items)
    assert items[0]["fill_pct"] == 92.5
    eb1 = items[1]
    assert eb1["fill_pct"] == 57.5
    assert eb1["fraction"] == "plastic"
    assert eb1["capacity_l"] == 1100.0
    assert eb1["site"] == "park"
    assert eb1["fill_rate_pct_per_h"] == pytest.approx(10.0, rel=0.15)  # 2.5 % per 15 min
    full_at = datetime.fromisoformat(eb1["forecast_full_at"])
    last = datetime.fromisoformat(eb1["last_seen"])
    assert timedelta(hours=1) < full_at - last < timedelta(hours=3)  # 22.5 points at ~10 %/h
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", eb1["last_seen"])


def test_fill_level_filters(api: TestClient) -> None:
    def ids(**params: object) -> list[str]:
        r = api.get("/api/v1/fill-levels", params=params)
        assert r.status_code == 200, r.text
        return [i["device_id"] for i in r.json()["items"]]

    assert ids(region="astana") == ["eb-3"]
    assert ids(min_pct=50) == ["eb-2", "eb-1"]
    assert ids(min_pct=57.5) == ["eb-2", "eb-1"], "at or above"
    assert ids(fraction="plastic") == ["eb-1", "eb-3"]
    assert ids(region="almaty", fraction="paper") == ["eb-2"]
    assert ids(region="shymkent") == []


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"min_pct": "150"}, "min_pct"),
        ({"min_pct": "lots"}, "min_pct"),
        ({"region": "Almaty"}, "region"),
        ({"fraction": "plstic"}, "fraction"),
    ],
)
def test_bad_parameters_are_422_naming_the_parameter(
    api: TestClient, params: dict[str, str], param: str
) -> None:
    r = api.get("/api/v1/fill-levels", params=params)
    assert r.status_code == 422
    body = r.json()
    assert body["reason"] == "bad_parameter"
    assert body["param"] == param
    assert param in body["detail"]


def test_devices_lists_registry_and_state(api: TestClient) -> None:
    items = {d["device_id"]: d for d in api.get("/api/v1/devices").json()["items"]}
    assert sorted(items) == sorted(REGISTRY)
    assert items["eb-2"]["fill_pct"] == 92.5
    assert items["eb-2"]["online"] is True
    assert items["eb-quiet"]["online"] is None
    assert items["eb-quiet"]["last_seen"] is None
    assert items["rvm-1"]["kind"] == "rvm"
    assert items["rvm-1"]["fill_pct"] is None
    astana = api.get("/api/v1/devices", params={"region": "astana"}).json()["items"]
    assert {d["device_id"] for d in astana} == {"eb-3", "eb-quiet"}


def test_current_alerts_match_the_fleet(api: TestClient, fleet: Fleet) -> None:
    firing = {(t.source.device_id, t.alert) for t in fleet.firing()}
    assert ("eb-2", "full") in firing
    got = api.get("/api/v1/alerts").json()["items"]
    assert {(a["device_id"], a["alert"]) for a in got} == firing
    full = api.get("/api/v1/alerts", params={"alert": "full"}).json()["items"]
    assert [(a["device_id"], a["severity"], a["state"]) for a in full] == [
        ("eb-2", "major", "firing")
    ]
    assert api.get("/api/v1/alerts", params={"region": "astana", "alert": "full"}).json() == {
        "items": []
    }


def test_unknown_device_history_is_404(api: TestClient) -> None:
    r = api.get("/api/v1/devices/eb-nope/history")
    assert r.status_code == 404
    assert r.json()["reason"] == "unknown_device"


def test_history_with_the_v2_writer_is_501_with_the_reason(fleet: Fleet) -> None:
    with client(fleet, history_unsupported="history needs InfluxDB 1.x") as c:
        for path in ("/devices/eb-1/history", "/alerts/history", "/collections", "/rvm/summary"):
            r = c.get("/api/v1" + path)
            assert r.status_code == 501, path
            assert r.json()["reason"] == "history_unsupported"


def test_history_with_the_database_down_is_503(fleet: Fleet) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reader = InfluxReader(f"http://127.0.0.1:{port}", "taza", timeout_s=2)
    with client(fleet, influx=reader) as c:
        r = c.get("/api/v1/collections")
        assert r.status_code == 503
        assert r.json()["reason"] == "database_unavailable"


def test_times_are_rfc3339_and_a_backwards_range_is_empty(fleet: Fleet) -> None:
    with client(fleet, influx=InfluxReader("http://127.0.0.1:9", "taza", timeout_s=2)) as c:
        backwards = {"from": "2026-05-02T00:00:00Z", "to": "2026-05-01T00:00:00Z"}
        r = c.get("/api/v1/collections", params=backwards)
        assert r.status_code == 200
        assert r.json() == {"items": [], "truncated": False}
        for bad in ("2026-05-02T00:00:00", "1777636770250", "0.5", "2026-02-30T00:00:00Z"):
            r = c.get("/api/v1/collections", params={"from": bad})
            assert (r.status_code, r.json()["param"]) == (422, "from"), bad
        for every in ("5 minutes", "790134d", "0s"):
            r = c.get("/api/v1/devices/eb-1/history", params={"every": every})
            assert (r.status_code, r.json()["param"]) == (422, "every"), every


def test_state_endpoints_without_fleet_state_are_503() -> None:
    with client(None) as c:
        r = c.get("/api/v1/fill-levels")
        assert r.status_code == 503
        assert r.json()["reason"] == "no_fleet"


def test_ops_endpoints_unchanged(api: TestClient) -> None:
    assert api.get("/readyz").json() == {"ready": True, "subscribed": True}
    assert api.get("/healthz").json() == {"healthy": True, "stages": {}}
    m = api.get("/metrics")
    assert m.status_code == 200
    assert m.headers["content-type"].startswith("text/plain")


def test_openapi_documents_every_endpoint(api: TestClient) -> None:
    doc = api.get("/api/v1/openapi.json").json()
    assert set(doc["paths"]) == {
        "/api/v1/devices",
        "/api/v1/devices/{device_id}/history",
        "/api/v1/fill-levels",
        "/api/v1/alerts",
        "/api/v1/alerts/history",
        "/api/v1/collections",
        "/api/v1/rvm/summary",
        "/api/v1/collection-plan",
        "/api/v1/whoami",
    }
    fill = doc["components"]["schemas"]["FillLevel"]
    assert set(fill["properties"]) == FILL_FIELDS


def test_swagger_page_loads_nothing_from_outside(api: TestClient) -> None:
    page = api.get("/api/v1/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)""", page.text) + re.findall(
        r"url: ?'([^']+)'", page.text
    )
    assert urls, page.text
    assert not [u for u in urls if "://" in u], "no CDN: the page must work offline"
    for u in urls:
        r = api.get(u)
        assert r.status_code == 200, u
    assert api.get("/api/v1/docs/static/LICENSE").status_code == 200


def test_fleet_page_is_served_or_a_placeholder(fleet: Fleet, tmp_path: Path) -> None:
    with client(fleet, web_dir=tmp_path / "absent") as c:
        r = c.get("/")
        assert r.status_code == 200
        assert "/api/v1/docs" in r.text
    (tmp_path / "index.html").write_text("<!doctype html><title>fleet</title>")
    (tmp_path / "app.js").write_text("console.log(1)")
    with client(fleet, web_dir=tmp_path) as c:
        assert c.get("/").text == "<!doctype html><title>fleet</title>"
        assert c.get("/static/app.js").text == "console.log(1)"
        assert c.get("/static/missing.js").status_code == 404


def test_unknown_path_is_json_404(api: TestClient) -> None:
    r = api.get("/api/v1/nothing")
    assert r.status_code == 404
    assert r.json()["reason"] == "not_found"


def test_a_bug_in_a_route_is_a_json_500_not_a_crash(tmp_path: Path) -> None:
    class Broken:
        def states(self) -> Iterator[object]:
            raise RuntimeError("boom")

    ctx = ApiContext(Metrics(), lambda: (True, {}), lambda: (True, {}), fleet=Broken())  # type: ignore[arg-type]
    with TestClient(build_app(ctx), raise_server_exceptions=False) as c:
        r = c.get("/api/v1/fill-levels")
        assert r.status_code == 500
        assert r.json()["reason"] == "internal_error"
        assert c.get("/readyz").status_code == 200, "the app still answers"


def test_the_tile_url_setting_reaches_the_page_escaped(fleet: Fleet) -> None:
    """TAZA_PAGE_TILE_URL gives deployments with internet a base map; without it the page
    asks nothing of the outside world."""
    with client(fleet) as c:
        assert '<body data-tiles=""' in c.get("/").text
    url = 'https://tiles.example/{z}/{x}/{y}.png?k="a"&b'
    with client(fleet, tile_url=url) as c:
        page = c.get("/").text
    assert '<body data-tiles="https://tiles.example/{z}/{x}/{y}.png?k=&quot;a&quot;&amp;b"' in page


def test_the_tile_url_setting_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAZA_PAGE_TILE_URL", "javascript:alert(1)")
    with pytest.raises(ConfigError, match="TAZA_PAGE_TILE_URL"):
        load_settings(None)
