"""Operator API tokens in-process: the app over a real ``Fleet`` with a real tokens file.

What an operator and a city rely on: the file holds no token in clear; a revoked token stops
working on the next request, without a restart; a file that breaks refuses everyone rather
than keep revoked tokens; the OpenAPI document declares the bearer scheme and 401/403 exactly
when they are enforced; /metrics and the health checks follow their settings.
The real-server counterpart is tests/test_api_auth.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from ingest.api import ApiContext, build_app
from ingest.api.auth import Authenticator
from ingest.fleet import Fleet
from ingest.metrics import Metrics
from ingest.tokens import Role, TokenFile, TokenFileError
from tests.test_api_units import NOW, REGISTRY, feed


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    f = Fleet()
    feed(f, "eb-1", [40.0, 42.0, 44.0], NOW - timedelta(hours=1))  # almaty
    feed(f, "eb-3", [30.0, 31.0, 32.0], NOW - timedelta(hours=1))  # astana
    return f


@pytest.fixture
def tokens(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    path = tmp_path / "tokens.json"
    store = TokenFile()
    made = {
        "operator": store.add("ops", Role.operator, None)[1],
        "almaty": store.add("crew-almaty", Role.crew, "almaty")[1],
    }
    store.save(path)
    return path, made


def app(state: Fleet, path: Path | None, **kw: bool) -> TestClient:
    metrics = Metrics()
    ctx = ApiContext(
        metrics,
        lambda: (True, {"subscribed": True}),
        lambda: (True, {}),
        fleet=state,
        registry=REGISTRY,
        auth=None if path is None else Authenticator(path, metrics.registry),
        **kw,  # type: ignore[arg-type]
    )
    return TestClient(build_app(ctx))


@pytest.fixture
def secured(fleet: Fleet, tokens: tuple[Path, dict[str, str]]) -> Iterator[TestClient]:
    with app(fleet, tokens[0]) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_file_keeps_hashes_only_and_private(tokens: tuple[Path, dict[str, str]]) -> None:
    path, made = tokens
    text = path.read_text()
    for token in made.values():
        assert token not in text
        assert token.split("_", 2)[2] not in text  # not even the secret part
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    entries = json.loads(text)["tokens"]
    assert {e["name"]: (e["role"], e["region"]) for e in entries} == {
        "ops": ("operator", None),
        "crew-almaty": ("crew", "almaty"),
    }


def test_a_token_is_recognised_and_a_changed_one_is_not(
    tokens: tuple[Path, dict[str, str]],
) -> None:
    store = TokenFile.load(tokens[0])
    token = tokens[1]["operator"]
    found = store.find(token)
    assert found is not None
    assert found.name == "ops"
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert store.find(flipped) is None
    assert store.find("taza_00000000_" + "x" * 43) is None
    assert store.find("") is None
    assert store.find("Bearer " + token) is None


def test_revoked_token_is_refused_on_the_next_request_without_restart(
    secured: TestClient, tokens: tuple[Path, dict[str, str]]
) -> None:
    path, made = tokens
    assert secured.get("/api/v1/alerts", headers=bearer(made["almaty"])).status_code == 200
    store = TokenFile.load(path)
    store.revoke("crew-almaty")
    store.save(path)
    r = secured.get("/api/v1/alerts", headers=bearer(made["almaty"]))
    assert r.status_code == 401
    assert r.json()["reason"] == "token_invalid"
    assert secured.get("/api/v1/alerts", headers=bearer(made["operator"])).status_code == 200
    _, new = store.add("crew-2", Role.crew, "astana")
    store.save(path)
    assert secured.get("/api/v1/alerts", headers=bearer(new)).status_code == 200


def test_a_broken_file_refuses_everyone_until_it_is_fixed(
    secured: TestClient, tokens: tuple[Path, dict[str, str]]
) -> None:
    path, made = tokens
    good = path.read_bytes()
    path.write_text("{ not json")
    r = secured.get("/api/v1/fill-levels", headers=bearer(made["operator"]))
    assert r.status_code == 503
    assert r.json()["reason"] == "tokens_unavailable"
    assert made["operator"] not in r.text
    os.unlink(path)
    assert secured.get("/api/v1/fill-levels", headers=bearer(made["operator"])).status_code == 503
    path.write_bytes(good)
    assert secured.get("/api/v1/fill-levels", headers=bearer(made["operator"])).status_code == 200


def test_a_missing_or_malformed_file_at_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Authenticator(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text('{"version": 1, "tokens": [{"id": "x"}]}')
    with pytest.raises(TokenFileError, match="not a valid tokens file"):
        Authenticator(tmp_path / "bad.json")


def test_openapi_declares_bearer_and_401_403_only_when_enforced(
    fleet: Fleet,
    tokens: tuple[Path, dict[str, str]],
) -> None:
    with app(fleet, tokens[0]) as c:
        doc = c.get("/api/v1/openapi.json").json()  # public: it holds no data
    assert doc["components"]["securitySchemes"]["token"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["token"]["description"],
    }
    for path, item in doc["paths"].items():
        op = item["get"]
        assert op["security"] == [{"token": []}], path
        assert {"401", "403"} <= set(op["responses"]), path
        assert op["responses"]["401"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorOut"
        }
    with app(fleet, None) as c:
        open_doc = c.get("/api/v1/openapi.json").json()
        me = c.get("/api/v1/whoami").json()
    assert me == {"name": "anonymous", "role": "operator", "region": None}
    assert "securitySchemes" not in open_doc.get("components", {})
    for item in open_doc["paths"].values():
        assert "security" not in item["get"]
        assert "401" not in item["get"]["responses"]


def test_operations_endpoints_follow_their_settings(
    fleet: Fleet,
    tokens: tuple[Path, dict[str, str]],
) -> None:
    path, made = tokens
    with app(fleet, path, metrics_public=False, health_public=True) as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers=bearer(made["almaty"])).status_code == 403
        assert c.get("/metrics", headers=bearer(made["operator"])).status_code == 200
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 200
    with app(fleet, path, metrics_public=True, health_public=False) as c:
        assert c.get("/metrics").status_code == 200
        assert c.get("/healthz").status_code == 401
        assert c.get("/readyz").status_code == 401
        assert c.get("/readyz", headers=bearer(made["operator"])).status_code == 200


def test_refusals_are_counted_by_reason_and_the_token_is_never_a_label(
    fleet: Fleet,
    tokens: tuple[Path, dict[str, str]],
) -> None:
    path, made = tokens
    metrics = Metrics()
    ctx = ApiContext(
        metrics,
        lambda: (True, {}),
        lambda: (True, {}),
        fleet=fleet,
        registry=REGISTRY,
        auth=Authenticator(path, metrics.registry),
    )
    with TestClient(build_app(ctx)) as c:
        c.get("/api/v1/alerts")
        c.get("/api/v1/alerts", headers=bearer("taza_0123abcd_" + "y" * 43))
        c.get("/api/v1/devices", headers=bearer(made["almaty"]))
        c.get("/api/v1/alerts", params={"region": "astana"}, headers=bearer(made["almaty"]))
    text = generate_latest(metrics.registry).decode()
    for reason in ("token_missing", "token_invalid", "role_forbidden", "region_forbidden"):
        assert f'taza_api_auth_failures_total{{reason="{reason}"}} 1.0' in text
    assert all(t not in text for t in made.values())
