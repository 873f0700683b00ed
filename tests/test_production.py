"""Production mode (``TAZA_PRODUCTION=true``): taza-ingest refuses to start, exit 2 with every
reason listed, when the broker is reached in plain text or anonymously, the API has no tokens,
or InfluxDB is plain http — and says so without printing a secret. Off (the default), the
development set-up starts as before.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devices import ExitCode
from ingest.config import load_settings
from ingest.errors import ConfigError

TAZA_INGEST = Path(sys.executable).parent / "taza-ingest"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    made = {}
    for name in ("tokens.json", "client.pem", "client.key"):
        (tmp_path / name).write_text("x")
        made[name] = str(tmp_path / name)
    return made


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("TAZA_"):
            monkeypatch.delenv(key)


def safe(files: dict[str, str]) -> dict[str, str]:
    return {
        "TAZA_PRODUCTION": "true",
        "TAZA_MQTT_URL": "mqtts://ingest:s3cret-pw@broker.example:8883",
        "TAZA_API_TOKENS_FILE": files["tokens.json"],
        "TAZA_INFLUX_URL": "https://influx.example:8086",
    }


def load(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    load_settings()


def test_a_safe_production_configuration_starts(
    monkeypatch: pytest.MonkeyPatch, files: dict[str, str]
) -> None:
    load(monkeypatch, safe(files))


def test_a_client_certificate_is_an_identity_too(
    monkeypatch: pytest.MonkeyPatch, files: dict[str, str]
) -> None:
    env = safe(files)
    env["TAZA_MQTT_URL"] = "mqtts://broker.example:8883"
    env["TAZA_MQTT_CERT_FILE"] = files["client.pem"]
    env["TAZA_MQTT_KEY_FILE"] = files["client.key"]
    load(monkeypatch, env)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"TAZA_MQTT_URL": "mqtt://ingest:s3cret-pw@broker.example:1883"}, "is not mqtts://"),
        ({"TAZA_MQTT_URL": "mqtts://broker.example:8883"}, "anonymous broker access"),
        ({"TAZA_API_TOKENS_FILE": ""}, "the API is open"),
        ({"TAZA_INFLUX_URL": "http://influx.example:8086"}, "TAZA_INFLUX_URL is plain http"),
        ({"TAZA_INFLUX_URL": "http://127.0.0.1:8086"}, "TAZA_INFLUX_URL is plain http"),
    ],
)
def test_each_unsafe_setting_is_refused(
    monkeypatch: pytest.MonkeyPatch, files: dict[str, str], change: dict[str, str], says: str
) -> None:
    env = {**safe(files), **change}
    env = {k: v for k, v in env.items() if v}
    with pytest.raises(ConfigError) as caught:
        load(monkeypatch, env)
    message = str(caught.value)
    assert "TAZA_PRODUCTION" in message
    assert "refusing to start in production mode" in message
    assert says in message
    assert "s3cret-pw" not in message


def test_development_default_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    load(monkeypatch, {"TAZA_MQTT_URL": "mqtt://127.0.0.1:1883"})  # nothing of the above


def test_taza_ingest_exits_2_listing_every_reason(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAZA_")}
    env.update(
        TAZA_PRODUCTION="true",
        TAZA_MQTT_URL="mqtt://ingest:s3cret-pw@127.0.0.1:1",
        TAZA_DATA_DIR=str(tmp_path / "data"),
    )
    done = subprocess.run(
        [str(TAZA_INGEST), "run"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == ExitCode.USAGE, done.stderr
    for says in ("is not mqtts://", "the API is open", "TAZA_INFLUX_URL is plain http"):
        assert says in done.stderr
    assert "anonymous" not in done.stderr  # it has a user: that one is fine
    assert "s3cret-pw" not in done.stderr + done.stdout
    assert not (tmp_path / "data").exists(), "refused before touching anything"
