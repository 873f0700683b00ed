"""Who may do what: the API's tokens, and a short check of the broker's production profile.

API tokens are made with ``taza tokens add`` (as a city does) into the demo's tokens file, which
taza-ingest runs with (``TAZA_API_TOKENS_FILE``); the report then asks the API without a token,
with the crew token outside and inside its region. The broker check starts a second Mosquitto
with the shipped production profile (TLS, per-device accounts from ``taza devices add``, a dev
CA from ``taza devices tls``, the ACLs and the guard plugin) and tries what an attacker would.
"""

from __future__ import annotations

import contextlib
import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devstack.demo.console import Console
from devstack.demo.supervisor import DemoError, Supervisor, failure, tool
from devstack.ingest_process import http_get
from devstack.mqtt_clients import NOT_AUTHORIZED, REFUSED, Client, loop_until_lost
from devstack.servers import Mosquitto

INGEST_ACCOUNT = "ingest.demo"


@dataclass
class Tokens:
    """The demo's two API tokens (demo secrets: printed, on loopback only)."""

    file: Path
    operator: str
    crew: str
    crew_name: str
    crew_region: str


def make_tokens(sup: Supervisor, env: dict[str, str], file: Path, crew_region: str) -> Tokens:
    """``taza tokens add`` twice: an operator and a crew of ``crew_region``."""
    crew_name = f"crew-{crew_region}"
    made: list[str] = []
    for name, role in (("demo-operator", ["--role", "operator"]),
                       (crew_name, ["--role", "crew", "--region", crew_region])):  # fmt: skip
        argv = [*tool("taza"), "tokens", "add", name, *role, "--file", str(file)]
        rc, out = sup.run_tool("tokens", argv, timeout=30, env=env)
        if rc != 0 or not out.strip().startswith("taza_"):
            raise failure(f"taza tokens add {name} failed (exit {rc})", sup.var / "tokens.log")
        made.append(out.strip())
    with contextlib.suppress(OSError):
        (sup.var / "tokens.out").unlink()  # the last token; the demo keeps none but the file
    return Tokens(file, made[0], made[1], crew_name, crew_region)


def api_check(out: Console, http: str, tokens: Tokens, other_region: str | None) -> bool:
    """The API as each caller sees it; PASS lines. True when every answer was the documented one."""
    crew, region = tokens.crew_name, tokens.crew_region
    cases: list[tuple[str, str, str | None, int, str]] = [
        ("no token", "/api/v1/fill-levels", None, 401, "token_missing"),
        (f"{crew}, its region", f"/api/v1/fill-levels?region={region}", tokens.crew, 200, ""),
        (f"{crew}, operator endpoint", "/api/v1/devices", tokens.crew, 403, "role_forbidden"),
        ("operator", "/api/v1/whoami", tokens.operator, 200, ""),
    ]
    if other_region is not None:
        cases.insert(
            2,
            (
                f"{crew}, region {other_region}",
                f"/api/v1/fill-levels?region={other_region}",
                tokens.crew,
                403,
                "region_forbidden",
            ),
        )
    ok = True
    for who, path, token, want, reason in cases:
        status, body = http_get(f"{http}{path}", timeout=10, token=token)
        got = ""
        with contextlib.suppress(ValueError, AttributeError):
            doc = json.loads(body)
            got = str(doc.get("reason") or doc.get("role") or "") if isinstance(doc, dict) else ""
        passed = status == want and (not reason or got == reason)
        ok &= passed
        shown = f"{status} {got}".rstrip() if status != 200 or got else f"{status}"
        out.line(
            f"  {'PASS' if passed else 'FAIL'}  {who:<30} GET {path:<37} → {shown}"
            + ("" if passed else f"  (expected {want} {reason})")
        )
    return ok


def broker_check(sup: Supervisor, env: dict[str, str], fleet: Path, out: Console) -> bool:
    """A production-profile broker for two devices of the demo's fleet, and what it refuses."""
    root = sup.var / "broker-production"
    broker_dir = root / "taza"
    root.mkdir(parents=True, exist_ok=True)
    a, b = _two_devices(fleet, root / "fleet.csv")
    t0 = time.monotonic()
    argv = [*tool("taza"), "devices", "add", "--fleet", str(root / "fleet.csv")]
    argv += ["--account", INGEST_ACCOUNT, "--dir", str(broker_dir), "--json"]
    rc, text = sup.run_tool("devices-add", argv, timeout=60, env=env)
    (sup.var / "devices-add.out").unlink(missing_ok=True)  # the secrets are shown once
    if rc != 0:
        raise failure(f"taza devices add failed (exit {rc})", sup.var / "devices-add.log")
    secrets = {x["username"]: x["password"] for x in json.loads(text)["accounts"]}
    tls = [*tool("taza"), "devices", "tls", "--host", "127.0.0.1", "--dir", str(broker_dir)]
    rc, _ = sup.run_tool("devices-tls", tls, timeout=60, env=env)
    if rc != 0:
        raise failure(f"taza devices tls failed (exit {rc})", sup.var / "devices-tls.log")
    broker = Mosquitto(root / "mosquitto", profile="production", broker_dir=broker_dir)
    sup.servers["mosquitto-production"] = broker
    broker.start()
    sup.record(broker.pid, "mosquitto-production")
    out.line(
        f"  broker      {broker.url:<28} TLS only, dev CA by `taza devices tls`, ready in "
        f"{time.monotonic() - t0:3.1f} s"
    )
    out.line(f"  accounts    {a}, {b}, {INGEST_ACCOUNT} (`taza devices add`, ACLs, guard plugin)")
    made: list[Client] = []

    def connect(user: str | None, password: str | None) -> tuple[Client, int]:
        c = Client(broker, user, password)
        made.append(c)
        return c, c.connect()

    ok = True

    def check(passed: bool, text: str) -> None:
        nonlocal ok
        ok &= passed
        out.line(f"  {'PASS' if passed else 'FAIL'}  {text}")

    try:
        _, code = connect(None, None)
        check(code == REFUSED, f"anonymous connection refused (CONNACK {code:#04x} not authorized)")
        _, code = connect(a, "not-the-secret")
        check(code == REFUSED, f"{a} with a wrong password refused (CONNACK {code:#04x})")
        ingest, code = connect(INGEST_ACCOUNT, secrets[INGEST_ACCOUNT])
        device, code_a = connect(a, secrets[a])
        if code or code_a:
            raise DemoError(f"production broker refused {INGEST_ACCOUNT} or {a}: {code}/{code_a}")
        ingest.subscribe("taza/v1/#")
        own = _topic(fleet, a)
        forged = _topic(fleet, b)
        mine = device.publish(own, b'{"demo": "own"}')
        fake = device.publish(forged, b'{"demo": "forged"}')
        got = [t for t, _, _ in ingest.received()]
        check(
            mine == 0 and fake == NOT_AUTHORIZED and got == [own],
            f"{a} publishing as {b}: PUBACK {fake:#04x} not authorized; the ingest account got "
            f"only {a}'s own message ({len(got)} received)",
        )
        granted = device.subscribe(f"taza/v1/_feedback/{b}", f"taza/v1/_feedback/{a}")
        check(
            granted == [NOT_AUTHORIZED, 1],
            f"{a} may read its own feedback topic, not {b}'s (SUBACK {granted})",
        )
        check(_plain_text_fails(broker, a, secrets[a]), "plain MQTT to the TLS listener fails")
    finally:
        for c in made:
            with contextlib.suppress(Exception):
                c.close()
        broker.stop()
    return ok


def _two_devices(fleet: Path, to: Path) -> tuple[str, str]:
    with fleet.open() as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r["kind"] == "ecobox"][:2]
        fields = reader.fieldnames or []
    with to.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return rows[0]["device_id"], rows[1]["device_id"]


def _topic(fleet: Path, device: str) -> str:
    with fleet.open() as f:
        for r in csv.DictReader(f):
            if r["device_id"] == device:
                return f"taza/v1/{r['region']}/{r['kind']}/{device}/fill"
    raise DemoError(f"{device} is not in {fleet}")


def _plain_text_fails(broker: Mosquitto, user: str, password: str) -> bool:
    plain = paho.Client(CallbackAPIVersion.VERSION2, client_id="demo-plain", protocol=paho.MQTTv5)
    plain.username_pw_set(user, password)
    try:
        loop_until_lost(plain, broker.host, broker.port)
    except (ConnectionError, OSError):
        return not plain.is_connected()
    return False
