"""The deployment kit (deploy/) checked by the tools a city's IT will run it with.

systemd-analyze (Debian's ``systemd``) verifies the real unit file; promtool (Debian's
``prometheus``) checks the scrape config and the rules and runs the rules' unit tests; and the
real service started from nothing must expose every metric the rules use — a rule on a
missing series never fires, which is worse than no rule — and a real Prometheus with the
shipped config scrapes it and evaluates every rule without error or false alarm. A missing
tool fails the test with the package to install (``make system`` installs them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from devices import Reason
from devstack.ingest_process import http_get, wait_until
from devstack.metrics import series
from devstack.servers import free_port
from ingest.config import load_settings
from ingest.metrics import taza_version
from ingest.service import CANCEL_GRACE_S, HARD_STOP_MARGIN_S
from ingest.tokens import Role, TokenFile
from operators.provision import profile, store
from tests.conftest import REPO, MakeIngest

DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "systemd" / "taza-ingest.service"
PROMETHEUS = DEPLOY / "prometheus"
RULES = PROMETHEUS / "taza-rules.yml"
INSTALLED_BIN = "/opt/taza/venv/bin/taza-ingest"
MAX_EXPOSURE = 2.0  # systemd-analyze security: 0 (locked down) … 10 (unprotected)


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: apt-get install {package} (make system installs it)")
    return path


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


# -- systemd ------------------------------------------------------------------------------------


def unit_directives(text: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file, repeated keys in order (systemd's own reading)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;[" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def seconds(value: str) -> float:
    """A systemd time span as used here: ``60s``, ``2min``, ``90``."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min|m)?", value)
    assert m, f"unexpected time span {value!r}"
    return float(m[1]) * (60 if m[2] in ("min", "m") else 1)


def unit_for_verify(tmp_path: Path, text: str | None = None) -> Path:
    """The real unit with only ExecStart pointed at this venv's taza-ingest, since
    systemd-analyze verify insists that the binary exists."""
    text = UNIT.read_text() if text is None else text
    venv_bin = Path(sys.executable).parent / "taza-ingest"
    assert venv_bin.is_file(), f"{venv_bin} missing: make venv"
    assert text.count(f"ExecStart={INSTALLED_BIN} ") == 1, "ExecStart is not the /opt/taza venv"
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(f"ExecStart={INSTALLED_BIN} ", f"ExecStart={venv_bin} "))
    return copy


def verify(unit: Path) -> str:
    done = run(tool("systemd-analyze", "systemd"), "verify", str(unit))
    return (done.stdout + done.stderr).strip() + ("" if done.returncode == 0 else " (exit≠0)")


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    assert verify(unit_for_verify(tmp_path)) == ""


def test_systemd_analyze_verify_would_catch_a_mistake_in_the_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt hardening option is reported, not ignored."""
    broken = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict")
    assert "ProtectSytem" in verify(unit_for_verify(tmp_path, broken))


DEBIAN_MOSQUITTO_UNIT = Path("/lib/systemd/system/mosquitto.service")
MOSQUITTO_DROPIN = DEPLOY / "systemd" / "mosquitto.service.d" / "taza.conf"


def test_mosquitto_dropin_verifies_on_debians_unit(tmp_path: Path) -> None:
    """The broker runs as Debian's mosquitto.service with our drop-in (a profile path and
    a file limit for max_connections), read by systemd-analyze from beside the unit."""
    if not DEBIAN_MOSQUITTO_UNIT.is_file():
        pytest.fail(f"{DEBIAN_MOSQUITTO_UNIT} missing: apt-get install mosquitto")
    unit = tmp_path / DEBIAN_MOSQUITTO_UNIT.name
    shutil.copy(DEBIAN_MOSQUITTO_UNIT, unit)
    dropins = tmp_path / "mosquitto.service.d"
    dropins.mkdir()
    shutil.copy(MOSQUITTO_DROPIN, dropins / MOSQUITTO_DROPIN.name)
    assert verify(unit) == ""
    (dropins / "typo.conf").write_text("[Service]\nLimitNOFILEX=1\n")
    assert "LimitNOFILEX" in verify(unit)  # the drop-in directory is really read
    d = unit_directives(MOSQUITTO_DROPIN.read_text())
    exported = f"{profile.SHIPPED_DIR}/{store.CONF}"  # where `taza devices export` writes it
    assert d["ExecStart"] == ["", f"/usr/sbin/mosquitto -c {exported}"]
    assert int(d["LimitNOFILE"][0]) > 20000  # the profile's max_connections


def test_systemd_unit_is_locked_down(tmp_path: Path) -> None:
    done = run(
        tool("systemd-analyze", "systemd"),
        "security",
        "--offline=yes",
        "--no-pager",
        str(unit_for_verify(tmp_path)),
    )
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", done.stdout)
    assert m, done.stdout + done.stderr
    assert float(m[1]) <= MAX_EXPOSURE, done.stdout


def test_systemd_unit_keeps_what_the_service_needs() -> None:
    """The hardening leaves taza-ingest what it uses, and stopping outlasts its drain."""
    d = unit_directives(UNIT.read_text())
    families = set(d["RestrictAddressFamilies"][0].split())
    assert families == {"AF_INET", "AF_INET6", "AF_UNIX"}  # broker, database, HTTP, pool pipes
    state = d["StateDirectory"][0]
    assert f"TAZA_DATA_DIR=%S/{state}" in d["Environment"]  # the spool survives restarts
    assert d.get("User", ["root"])[0] not in ("root", "0")  # an unprivileged user
    assert d["CapabilityBoundingSet"] == [""]
    assert "@system-service" in d["SystemCallFilter"]
    assert d["KillMode"] == ["mixed"]  # SIGTERM to the service, which stops its pool itself
    assert d["RestartPreventExitStatus"] == ["2"]  # an invalid configuration: no restart loop
    assert "ExecReload" not in d  # settings are read once; no SIGHUP handler
    assert "ProcSubset" not in d  # process_* metrics read /proc/stat
    shipped = load_settings(DEPLOY / "taza-ingest.toml").drain_timeout_s
    default = load_settings().drain_timeout_s
    hard_stop = max(shipped, default) + CANCEL_GRACE_S + HARD_STOP_MARGIN_S
    assert seconds(d["TimeoutStopSec"][0]) > hard_stop


def env_file(path: Path) -> dict[str, str]:
    """systemd EnvironmentFile lines (KEY=VALUE, # comments), as systemd would pass them."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"not KEY=VALUE: {line!r}"
            out[key.strip()] = value.strip()
    return out


INSTALL_PATHS = re.compile(r"/(?:etc/taza|var/lib/taza-ingest)(/[\w./-]+)?")


def relocated(text: str, root: Path) -> str:
    """``text`` with the install's paths moved under ``root``, each file and directory
    created (settings that name a file check that it exists)."""

    def move(m: re.Match[str]) -> str:
        path = root / m[0].lstrip("/")
        if m[1] is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        return str(path)

    return INSTALL_PATHS.sub(move, text)


def test_shipped_settings_examples_are_valid(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The unit's Environment=, then deploy/ingest.env over it (systemd's order), then
    deploy/taza-ingest.toml named by TAZA_CONFIG: a valid configuration, no secret shown."""
    unit_env = unit_directives(UNIT.read_text())["Environment"]
    env = dict(e.replace("%S", "/var/lib").split("=", 1) for e in unit_env)
    env.update(env_file(DEPLOY / "ingest.env"))
    assert env.pop("TAZA_CONFIG") == "/etc/taza/ingest.toml"
    toml = tmp_path / "ingest.toml"
    toml.write_text(relocated((DEPLOY / "taza-ingest.toml").read_text(), tmp_path))
    for key in [k for k in os.environ if k.startswith("TAZA_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, relocated(value, tmp_path))
    settings = load_settings(toml)
    assert settings.data_dir == tmp_path / "var/lib/taza-ingest"
    assert settings.log_format == "json"
    assert settings.broker.tls
    assert settings.mqtt_ca_file == tmp_path / "etc/taza/tls/ca.crt"
    assert settings.influx_url.startswith("https://")
    assert settings.http_addr.startswith("127.0.0.1:")
    assert settings.registry == tmp_path / "etc/taza/fleet.csv"
    assert "CHANGE-ME" not in str(settings.summary())  # the start-up line shows no secret


# -- Prometheus ---------------------------------------------------------------------------------


TOKEN_FILE = "/etc/prometheus/taza-ingest.token"


def test_promtool_checks_the_scrape_config_and_its_rules(tmp_path: Path) -> None:
    """The shipped prometheus.yml beside its rules, the token file it names made in tmp
    (promtool insists that it exists)."""
    config = (PROMETHEUS / "prometheus.yml").read_text()
    assert config.count(TOKEN_FILE) == 1
    token = tmp_path / "taza-ingest.token"
    token.write_text("taza_00000000_" + "x" * 43 + "\n")
    (tmp_path / "prometheus.yml").write_text(config.replace(TOKEN_FILE, str(token)))
    shutil.copy(RULES, tmp_path / RULES.name)
    done = run(tool("promtool", "prometheus"), "check", "config", str(tmp_path / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout  # found and checked with it
    jobs = [j["job_name"] for j in yaml.safe_load(config)["scrape_configs"]]
    assert "taza-ingest" in jobs  # the job the rules' up{job="taza-ingest"} and process_* name


def test_promtool_checks_the_rules() -> None:
    done = run(tool("promtool", "prometheus"), "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    """Each alert fires on the series taza-ingest exposes, at the time it should, and not
    on its look-alikes (deploy/prometheus/tests/*.yml)."""
    tests = sorted((PROMETHEUS / "tests").glob("*.yml"))
    assert tests
    done = run(tool("promtool", "prometheus"), "test", "rules", *map(str, tests))
    assert done.returncode == 0, done.stdout + done.stderr


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


_PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
_PROMQL_WORDS |= {"group_left", "group_right", "inf", "nan"}
_CLAUSES = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions,
    keywords, label names (in ``{}``, ``by (…)``, ``on (…)``), strings or numbers."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(_CLAUSES, " ", expr)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", expr):
        if m[2] is None and m[1].lower() not in _PROMQL_WORDS:
            names.add(m[1])
    return names


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        'sum by (job, instance) (rate(taza_a_total{reason!~"x|y"}[5m])) / on (job) '
        "group_left(kind) taza_b > 2e9 and up == 0 or absent(process_c{job='q'})"
    )
    assert promql_metric_names(expr) == {"taza_a_total", "taza_b", "up", "process_c"}


def operator_token(tmp_path: Path) -> tuple[Path, str]:
    """A tokens file holding one operator token (what `taza tokens add` writes), and it."""
    path = tmp_path / "api-tokens.json"
    store = TokenFile.load_or_empty(path)
    _, secret = store.add("prometheus", Role.operator, None)
    store.save(path)
    return path, secret


def scrape(url: str, token: str) -> str:
    """GET with the bearer token, as Prometheus' ``authorization`` block sends it."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with opener.open(request, timeout=5) as response:
        body: str = response.read().decode()
        return body


SCRAPE_SERIES = {"up"}  # made by Prometheus for each target, not by the service


@pytest.mark.integration
def test_every_metric_the_rules_use_is_exposed_by_the_real_service_from_start(
    tmp_path: Path, mosquitto: Any, influxd: Any, influx_db: str, make_ingest: MakeIngest
) -> None:
    """Configured as in production (API tokens: the rules watch them too), scraped at once."""
    tokens, secret = operator_token(tmp_path)
    ingest = make_ingest(
        mosquitto.url, influxd.url, TAZA_INFLUX_DB=influx_db, TAZA_API_TOKENS_FILE=str(tokens)
    ).start()
    page = scrape(ingest.url + "/metrics", secret)
    families = list(text_string_to_metric_families(page))
    exposed = {s.name for f in families for s in f.samples}

    used = {name for rule in rules() for name in promql_metric_names(rule["expr"])}
    assert len(used) > 20
    missing = used - exposed - SCRAPE_SERIES
    assert not missing, f"rules use metrics /metrics does not have: {sorted(missing)}"

    tests = [yaml.safe_load(p.read_text()) for p in (PROMETHEUS / "tests").glob("*.yml")]
    inputs = {
        s["series"].split("{")[0]
        for t in tests
        for case in t["tests"]
        for s in case["input_series"]
    }
    assert not inputs - exposed - SCRAPE_SERIES, "rule tests feed series the service lacks"

    declared_empty = {f.name for f in families if not f.samples}
    assert not declared_empty, f"declared but absent until first used: {declared_empty}"
    assert series(page)['taza_fleet_events_total{event="alert"}'] == 0

    m = series(page)
    assert m["taza_ready"] == 1
    assert m["taza_spool_max_bytes"] == load_settings().spool_max_bytes
    assert m["process_resident_memory_bytes"] > 0
    assert m["process_start_time_seconds"] > 1.7e9
    version = [k for k in m if k.startswith("taza_build_info{")]
    assert len(version) == 1, version
    assert f'version="{taza_version()}"' in version[0]
    for reason in Reason:
        assert m[f'taza_messages_rejected_total{{reason="{reason.value}"}}'] == 0
    for kind in ("unavailable", "refused"):
        assert m[f'taza_write_errors_total{{kind="{kind}"}}'] == 0
    stages = {"intake", "pipeline", "delivery", "replay", "fleet-history", "fleet-clock"}
    for stage in stages:
        assert m[f'taza_stage_stuck{{stage="{stage}"}}'] == 0
        assert m[f'taza_stage_holding{{stage="{stage}"}}'] == 0


EXPECTED_WITHOUT_DEVICES = {"TazaNoMessages"}  # true of a service no device publishes to


@pytest.mark.integration
def test_real_prometheus_scrapes_the_service_with_the_shipped_config_and_rules(
    tmp_path: Path, mosquitto: Any, influxd: Any, influx_db: str, make_ingest: MakeIngest
) -> None:
    """Debian's prometheus, on loopback, with deploy/prometheus/ (target, token file and
    intervals put to the test's): it scrapes the real service — which requires an API token,
    as in production — with an operator token from a tokens file, evaluates every rule without
    error, and a healthy service raises no alert."""
    tokens, secret = operator_token(tmp_path)
    ingest = make_ingest(
        mosquitto.url, influxd.url, TAZA_INFLUX_DB=influx_db, TAZA_API_TOKENS_FILE=str(tokens)
    ).start()
    assert http_get(ingest.url + "/metrics")[0] == 401  # the scrape needs the token
    token = tmp_path / "taza-ingest.token"
    token.write_text(secret + "\n")  # as `taza tokens add ... > FILE` writes it
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config.pop("alerting")
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "taza-ingest")
    job["static_configs"][0]["targets"] = [f"127.0.0.1:{ingest.http_port}"]
    job["authorization"]["credentials_file"] = str(token)
    config["scrape_configs"] = [job]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(RULES, tmp_path / RULES.name)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v1"
    log = (tmp_path / "prometheus.log").open("wb")
    prom = subprocess.Popen(
        [
            tool("prometheus", "prometheus"),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def get(path: str) -> Any:
            status, body = http_get(api + path)
            assert status == 200, f"{path}: {status} {body[:300]}"
            return json.loads(body)["data"]

        def scraped() -> bool:
            if prom.poll() is not None:
                raise AssertionError((tmp_path / "prometheus.log").read_text()[-2000:])
            if http_get(api + "/targets")[0] != 200:
                return False
            return [t["health"] for t in get("/targets")["activeTargets"]] == ["up"]

        wait_until(scraped, 30, "prometheus scraping taza-ingest")
        assert get("/query?query=taza_ready")["result"][0]["value"][1] == "1"
        wait_until(
            lambda: all(r.get("lastEvaluation", "0001").startswith("2") for r in _rules(get)),
            20,
            "every rule evaluated",
        )
        time.sleep(3)  # a few evaluations over several scrapes
        evaluated = _rules(get)
        assert {r["name"] for r in evaluated} == {r["alert"] for r in rules()}
        errors = {r["name"]: r["lastError"] for r in evaluated if r["health"] != "ok"}
        assert not errors, errors
        active = {r["name"]: r["state"] for r in evaluated if r["state"] != "inactive"}
        assert set(active) <= EXPECTED_WITHOUT_DEVICES, active
    finally:
        prom.terminate()
        prom.wait(10)
        log.close()


def _rules(get: Any) -> list[dict[str, Any]]:
    return [rule for group in get("/rules")["groups"] for rule in group["rules"]]
