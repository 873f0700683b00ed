"""One MQTT URL parser (devices.BrokerURL) for taza-ingest and taza-sim, with the same rules."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from devices import BrokerURL, BrokerURLError, ExitCode
from devstack.servers import free_port
from ingest.config import load_settings
from ingest.errors import ConfigError
from simulator.cli import main as sim


@pytest.mark.parametrize(
    ("url", "host", "port", "tls", "user", "password"),
    [
        ("mqtt://broker.example", "broker.example", 1883, False, None, None),
        ("mqtts://broker.example", "broker.example", 8883, True, None, None),
        ("mqtt://u:p%40ss@h:1884", "h", 1884, False, "u", "p@ss"),
        ("mqtts://u:secret@h:9999", "h", 9999, True, "u", "secret"),
        ("mqtt://u@h", "h", 1883, False, "u", None),
        ("mqtt://[::1]:1884", "::1", 1884, False, None, None),
        ("mqtts://[2001:db8::7]", "2001:db8::7", 8883, True, None, None),
        ("127.0.0.1:1999", "127.0.0.1", 1999, False, None, None),
        ("MQTT://Host", "host", 1883, False, None, None),
        ("mqtt://h/", "h", 1883, False, None, None),
    ],
)
def test_accepted_forms_and_default_ports(
    url: str, host: str, port: int, tls: bool, user: str | None, password: str | None
) -> None:
    b = BrokerURL.parse(url)
    assert (b.host, b.port, b.tls, b.username, b.password) == (host, port, tls, user, password)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://h", "scheme must be mqtt:// or mqtts://"),
        ("ws://h:9001", "scheme must be mqtt:// or mqtts://"),
        ("mqtt://", "no host"),
        ("", "empty broker URL"),
        ("mqtt://h:70000", "port '70000'"),
        ("mqtt://h:abc", "port 'abc'"),
        ("mqtt://h:0", "port 0"),
        ("mqtt://h/topic", "no path, query or fragment"),
        ("mqtt://h?x=1", "no path, query or fragment"),
        ("mqtt://::1:1883", "IPv6 address in brackets"),
        ("mqtt://[::1", "broker URL"),
        ("mqtt://:pw@h", "password without a user"),
    ],
)
def test_refused_with_a_message_naming_the_part(url: str, says: str) -> None:
    with pytest.raises(BrokerURLError, match=re.escape(says)) as info:
        BrokerURL.parse(url)
    assert isinstance(info.value, ValueError), "pydantic and click report ValueErrors cleanly"


def test_password_never_shown() -> None:
    b = BrokerURL.parse("mqtts://taza:hunter2@[::1]:8883")
    for shown in (str(b), repr(b), b.redacted()):
        assert "hunter2" not in shown
    assert b.redacted() == "mqtts://taza:***@[::1]:8883"


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("mqtts://{host}:{port}", True),
        ("mqtt://u:p@{host}:{port}", True),
        ("http://{host}:{port}", False),
        ("mqtt://{host}:{port}/x", False),
    ],
)
def test_service_and_simulator_agree(url: str, ok: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Today's bug: the service took mqtts://, the simulator refused it. Same verdict now."""
    url = url.format(host="127.0.0.1", port=free_port())  # nothing listens there
    monkeypatch.setenv("TAZA_MQTT_URL", url)
    try:
        service_ok = load_settings().broker == BrokerURL.parse(url)
    except ConfigError:
        service_ok = False
    # A usable URL gets as far as connecting (broker unreachable), an unusable one is a
    # usage error before that.
    result = CliRunner().invoke(sim, ["load", "--broker", url, "--count", "1", "-q"])
    assert result.exit_code in (ExitCode.BROKER_UNREACHABLE, ExitCode.USAGE), result.output
    assert service_ok is ok
    assert (result.exit_code == ExitCode.BROKER_UNREACHABLE) is ok, result.output
