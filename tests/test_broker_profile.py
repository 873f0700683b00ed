"""The shipped broker profile (mosquitto.conf, production block) enforces who may do what.

Every test runs a real mosquitto generated from the shipped file by devstack.servers (ports and
paths replaced, nothing hand-written), with accounts made by `taza devices add` and
certificates by `taza devices tls`, and talks to it as the devices, crews and taza-ingest do:
MQTT 5 over TLS with certificate verification.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from click.testing import CliRunner
from paho.mqtt.enums import CallbackAPIVersion

from devstack.ingest_process import http_get, wait_until
from devstack.mqtt_clients import NOT_AUTHORIZED, REFUSED, Client, loop_until_lost
from devstack.servers import SHIPPED_MOSQUITTO_CONF, InfluxDB1, Mosquitto
from operators.cli import main as taza
from operators.provision import profile

pytestmark = pytest.mark.integration

FLEET = """\
device_id,kind,region,lat,lon,capacity_l,fraction,site,report_interval_s
eb-1,ecobox,almaty,43.2,76.9,240,plastic,residential,60
eb-2,ecobox,almaty,43.3,76.9,240,plastic,residential,60
eb-9,ecobox,astana,51.1,71.4,240,plastic,residential,60
"""
ACCOUNTS = ("ingest.main", "crew.almaty", "crew.astana.night", "operator.ops")


@dataclass
class Fleet:
    dir: Path
    fleet: Path
    secrets: dict[str, str]

    def cli(self, *args: str) -> dict[str, Any]:
        result = CliRunner().invoke(taza, ["devices", *args, "--dir", str(self.dir), "--json"])
        assert result.exit_code == 0, result.output
        doc: dict[str, Any] = json.loads(result.stdout)
        return doc


def provision(root: Path) -> Fleet:
    """`taza devices add` for the fleet file and the accounts, `taza devices tls` for the
    broker's certificate: what a city runs before it starts the broker."""
    root.mkdir(parents=True, exist_ok=True)
    fleet_file = root / "fleet.csv"
    fleet_file.write_text(FLEET)
    f = Fleet(root / "broker", fleet_file, {})
    accounts = [x for a in ACCOUNTS for x in ("--account", a)]
    doc = f.cli("add", "--fleet", str(fleet_file), *accounts)
    f.secrets = {a["username"]: a["password"] for a in doc["accounts"]}
    f.cli("tls", "--host", "localhost", "--host", "127.0.0.1")
    return f


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    return provision(tmp_path_factory.mktemp("broker-profile"))


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, fleet: Fleet) -> Iterator[Mosquitto]:
    """One production broker for the tests that change no account."""
    with Mosquitto(
        tmp_path_factory.mktemp("prod-mosquitto"), profile="production", broker_dir=fleet.dir
    ) as m:
        yield m


@pytest.fixture
def connect(broker: Mosquitto, fleet: Fleet) -> Iterator[Callable[[str], Client]]:
    made: list[Client] = []

    def make(user: str) -> Client:
        client = Client(broker, user, fleet.secrets[user])
        assert client.connect() == 0, f"{user} refused"
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def test_the_production_profile_is_tls_only_and_authenticated() -> None:
    conf = profile.render(SHIPPED_MOSQUITTO_CONF.read_text(), "production")
    active = [line.split() for line in conf.splitlines() if line and not line.startswith("#")]
    settings = {w[0]: w[1:] for w in active}
    assert [w for w in active if w[0] == "listener"] == [["listener", "8883"]]
    assert settings["allow_anonymous"] == ["false"]
    assert {"certfile", "keyfile", "password_file", "acl_file"} <= settings.keys()
    for key in (
        "max_packet_size", "max_queued_messages", "max_queued_bytes", "max_inflight_messages",
        "max_keepalive", "persistence", "autosave_interval",
    ):  # fmt: skip
        assert key in settings, f"the production profile sets no {key}"
    dev = profile.render(SHIPPED_MOSQUITTO_CONF.read_text(), "development")
    assert "listener 1883 127.0.0.1" in dev
    assert "allow_anonymous true" in dev
    assert "8883" not in [
        w for line in dev.splitlines() if not line.startswith("#") for w in line.split()
    ]


def test_anonymous_and_wrong_password_are_refused(broker: Mosquitto, fleet: Fleet) -> None:
    assert Client(broker, None, None).connect() == REFUSED
    assert Client(broker, "eb-1", "not-the-secret").connect() == REFUSED
    assert Client(broker, "eb-unknown", fleet.secrets["eb-1"]).connect() == REFUSED
    right = Client(broker, "eb-1", fleet.secrets["eb-1"])
    assert right.connect() == 0, "a password hashed by taza devices add ($7$) is accepted"
    right.close()


def test_device_cannot_publish_as_another_device(connect: Callable[[str], Client]) -> None:
    ingest = connect("ingest.main")
    assert ingest.subscribe("taza/v1/#") == [1]
    eb1 = connect("eb-1")
    assert eb1.publish("taza/v1/almaty/ecobox/eb-1/fill", b"mine") == 0
    assert eb1.publish("taza/v1/almaty/ecobox/eb-2/fill", b"forged") == NOT_AUTHORIZED
    assert eb1.publish("taza/v1/astana/rvm/eb-9/deposit", b"forged") == NOT_AUTHORIZED
    assert eb1.publish("taza/v1/almaty/ecobox/eb-1/debug", b"no such channel") == NOT_AUTHORIZED
    assert [(t, p) for t, p, _ in ingest.received()] == [
        ("taza/v1/almaty/ecobox/eb-1/fill", b"mine")
    ]


def test_client_id_is_not_identity(broker: Mosquitto, fleet: Fleet) -> None:
    """A device that names its session after another device gets no more rights."""
    c = Client(broker, "eb-1", fleet.secrets["eb-1"])
    c.c._client_id = b"eb-2"  # what a device chooses freely
    assert c.connect() == 0
    assert c.publish("taza/v1/almaty/ecobox/eb-2/fill", b"forged") == NOT_AUTHORIZED
    c.close()


def test_device_reads_nothing_but_its_own_feedback(connect: Callable[[str], Client]) -> None:
    eb1 = connect("eb-1")
    granted = eb1.subscribe(
        "#", "taza/v1/+/+/eb-2/#", "taza/v1/_feedback/eb-2", "taza/v1/alerts/#",
        "taza/v1/_feedback/+", "taza/v1/_feedback/eb-1",
    )  # fmt: skip
    assert granted == [NOT_AUTHORIZED] * 5 + [1], "the SUBACK refuses all but its own feedback"
    ingest, eb2 = connect("ingest.main"), connect("eb-2")
    assert eb2.publish("taza/v1/almaty/ecobox/eb-2/fill", b"eb-2's reading") == 0
    assert ingest.publish("taza/v1/_feedback/eb-2", b"for eb-2") == 0
    assert ingest.publish("taza/v1/alerts/almaty/eb-2/full", b"alert") == 0
    assert ingest.publish("taza/v1/_feedback/eb-1", b"for eb-1") == 0
    assert [(t, p) for t, p, _ in eb1.received()] == [("taza/v1/_feedback/eb-1", b"for eb-1")]


def test_device_cannot_publish_alerts_or_feedback(connect: Callable[[str], Client]) -> None:
    eb1 = connect("eb-1")
    assert eb1.publish("taza/v1/alerts/almaty/eb-1/full", b"fake alert") == NOT_AUTHORIZED
    assert eb1.publish("taza/v1/_feedback/eb-2", b"fake feedback") == NOT_AUTHORIZED
    assert eb1.publish("taza/v1/_deadletter/bad_json", b"x") == NOT_AUTHORIZED


def test_device_may_retain_only_its_state(connect: Callable[[str], Client]) -> None:
    eb1 = connect("eb-1")
    assert eb1.publish("taza/v1/almaty/ecobox/eb-1/state", b"online", retain=True) == 0
    for channel in ("fill", "status"):
        topic = f"taza/v1/almaty/ecobox/eb-1/{channel}"
        assert eb1.publish(topic, b"stale forever", retain=True) == NOT_AUTHORIZED
    assert eb1.publish("taza/v1/almaty/ecobox/eb-1/fill", b"live") == 0, "not retained: fine"
    ingest = connect("ingest.main")
    assert ingest.publish("taza/v1/alerts/almaty/eb-1/full", b"firing", retain=True) == 0
    late = connect("operator.ops")  # a new subscriber sees only what may be retained
    late.subscribe("taza/v1/#")
    retained = {(t, p) for t, p, r in late.received() if r}
    assert ("taza/v1/almaty/ecobox/eb-1/state", b"online") in retained
    assert ("taza/v1/alerts/almaty/eb-1/full", b"firing") in retained
    assert not [t for t, _ in retained if t.endswith(("/fill", "/status"))]
    assert ingest.publish("taza/v1/alerts/almaty/eb-1/full", b"", retain=True) == 0  # clear


def test_crew_reads_only_its_regions_alerts(connect: Callable[[str], Client]) -> None:
    crew = connect("crew.almaty")
    granted = crew.subscribe(
        "taza/v1/alerts/#", "taza/v1/#", "taza/v1/alerts/astana/#", "taza/v1/alerts/almaty/#"
    )
    assert granted == [NOT_AUTHORIZED] * 3 + [1], "only within its own region's alerts"
    other = connect("crew.astana.night")  # a named crew account: region from the name
    assert other.subscribe("taza/v1/alerts/almaty/#", "taza/v1/alerts/astana/+/full") == [
        NOT_AUTHORIZED,
        1,
    ]
    ingest = connect("ingest.main")
    assert ingest.publish("taza/v1/alerts/almaty/eb-1/full", b"almaty") == 0
    assert ingest.publish("taza/v1/alerts/astana/eb-9/full", b"astana") == 0
    eb1 = connect("eb-1")
    assert eb1.publish("taza/v1/almaty/ecobox/eb-1/fill", b"telemetry") == 0
    got = [(t, p) for t, p, _ in crew.received()]
    assert got == [("taza/v1/alerts/almaty/eb-1/full", b"almaty")]
    assert crew.publish("taza/v1/alerts/almaty/eb-1/full", b"fake") == NOT_AUTHORIZED
    assert crew.publish("taza/v1/almaty/ecobox/crew.almaty/fill", b"x") == NOT_AUTHORIZED


def test_ingest_reads_telemetry_and_writes_alerts_and_feedback(
    connect: Callable[[str], Client],
) -> None:
    ingest = connect("ingest.main")
    ingest.subscribe("taza/v1/#")
    eb9 = connect("eb-9")
    assert eb9.publish("taza/v1/astana/ecobox/eb-9/status", b"s") == 0
    assert ingest.publish("taza/v1/alerts/astana/eb-9/full", b"a") == 0
    assert ingest.publish("taza/v1/_feedback/eb-9", b"f") == 0
    assert ingest.publish("taza/v1/almaty/ecobox/ingest.main/fill", b"x") == NOT_AUTHORIZED
    assert ingest.publish("taza/v1/almaty/ecobox/eb-1/fill", b"as eb-1") == NOT_AUTHORIZED
    assert ("taza/v1/astana/ecobox/eb-9/status", b"s") in [(t, p) for t, p, _ in ingest.received()]


def test_operator_reads_everything_and_writes_nothing(connect: Callable[[str], Client]) -> None:
    ops = connect("operator.ops")
    ops.subscribe("taza/v1/#")
    eb2 = connect("eb-2")
    assert eb2.publish("taza/v1/almaty/ecobox/eb-2/fill", b"r") == 0
    assert ("taza/v1/almaty/ecobox/eb-2/fill", b"r") in [(t, p) for t, p, _ in ops.received()]
    assert ops.publish("taza/v1/alerts/almaty/eb-2/full", b"x") == NOT_AUTHORIZED
    assert ops.publish("taza/v1/almaty/ecobox/eb-2/fill", b"x") == NOT_AUTHORIZED


def test_plain_text_to_the_tls_listener_fails(broker: Mosquitto, fleet: Fleet) -> None:
    plain = paho.Client(CallbackAPIVersion.VERSION2, client_id="plain", protocol=paho.MQTTv5)
    plain.username_pw_set("eb-1", fleet.secrets["eb-1"])
    with pytest.raises((ConnectionError, OSError)):
        loop_until_lost(plain, broker.host, broker.port)
    assert not plain.is_connected()


def test_a_server_certificate_from_another_ca_is_refused(
    broker: Mosquitto, fleet: Fleet, tmp_path: Path
) -> None:
    other = Fleet(tmp_path / "other", fleet.fleet, {})
    other.cli("tls")  # another CA, never signed the broker's certificate
    client = Client(broker, "eb-1", fleet.secrets["eb-1"], ca=other.dir / "tls" / "ca.crt")
    with pytest.raises(ssl.SSLCertVerificationError):
        client.c.connect(broker.host, broker.port)


def _pid_file(broker: Mosquitto, where: Path) -> Path:
    where.write_text(f"{broker.pid}\n")
    return where


def test_revoked_device_is_refused_without_a_restart(
    tmp_path: Path, make_mosquitto: Callable[..., Mosquitto]
) -> None:
    f = provision(tmp_path)
    broker = make_mosquitto(profile="production", broker_dir=f.dir)
    pid = broker.pid
    pid_file = _pid_file(broker, tmp_path / "mosquitto.pid")
    connected = Client(broker, "eb-1", f.secrets["eb-1"])
    assert connected.connect() == 0

    doc = f.cli("revoke", "eb-1", "--pid-file", str(pid_file))
    assert doc["revoked"] == ["eb-1"]
    assert doc["reloaded_pid"] == pid
    assert connected.disconnected.wait(10), "the connected device is cut off at the reload"
    connected.c.loop_stop()
    assert Client(broker, "eb-1", f.secrets["eb-1"]).connect() == REFUSED
    assert broker.running
    assert broker.pid == pid, "the broker was reloaded, not restarted"

    other = Client(broker, "eb-2", f.secrets["eb-2"])
    assert other.connect() == 0, "other devices are not touched"
    other.close()


def test_rotate_and_add_apply_at_the_reload(
    tmp_path: Path, make_mosquitto: Callable[..., Mosquitto]
) -> None:
    f = provision(tmp_path)
    broker = make_mosquitto(profile="production", broker_dir=f.dir)
    pid = broker.pid
    (new,) = f.cli("rotate", "eb-2")["accounts"]
    f.fleet.write_text(FLEET + "eb-3,ecobox,almaty,43.4,76.9,240,glass,residential,60\n")
    (added,) = f.cli("add", "eb-3", "--fleet", str(f.fleet))["accounts"]
    broker.reload()
    assert Client(broker, "eb-2", f.secrets["eb-2"]).connect() == REFUSED, "the old secret is dead"
    for user, secret in (("eb-2", new["password"]), ("eb-3", added["password"])):
        c = Client(broker, user, secret)
        assert c.connect() == 0
        assert c.publish(f"taza/v1/almaty/ecobox/{user}/fill", b"r") == 0
        c.close()
    assert broker.pid == pid, "reloaded, not restarted"


# -- the service over mqtts:// ------------------------------------------------------------


def _fill(device: str, seq: int) -> bytes:
    ts = int(time.time() * 1000)
    return json.dumps({"ts": ts, "seq": seq, "fill_pct": 40.0}).encode()


def _deadletters(data_dir: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for f in sorted((data_dir / "deadletter").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]


def test_service_over_mqtts_stores_only_what_the_broker_lets_in(
    broker: Mosquitto,
    fleet: Fleet,
    connect: Callable[[str], Client],
    influxd: InfluxDB1,
    influx_db: str,
    make_ingest: Callable[..., Any],
) -> None:
    url = f"mqtts://ingest.main:{fleet.secrets['ingest.main']}@localhost:{broker.port}"
    ingest = make_ingest(
        url, influxd.url, TAZA_INFLUX_DB=influx_db, TAZA_MQTT_CA_FILE=str(broker.ca_file),
        TAZA_REGISTRY=str(fleet.fleet),
    ).start()  # fmt: skip
    assert fleet.secrets["ingest.main"] not in ingest.log_tail(200), "no secret in the log"
    eb1 = connect("eb-1")
    assert eb1.publish("taza/v1/almaty/ecobox/eb-1/fill", _fill("eb-1", 1)) == 0
    assert eb1.publish("taza/v1/almaty/ecobox/eb-2/fill", _fill("eb-2", 1)) == NOT_AUTHORIZED

    # Just under the broker's max_packet_size: the broker delivers it, the service refuses it
    # with a reason and keeps it (over TAZA_MAX_PAYLOAD_BYTES).
    limit = int(_setting("max_packet_size"))
    topic = "taza/v1/almaty/ecobox/eb-1/fill"
    under = b"x" * (limit - len(topic) - 64)
    assert eb1.publish(topic, under) == 0
    wait_until(
        lambda: any(d.get("reason") == "too_large" for d in _deadletters(ingest.data_dir)),
        20, "the just-under-limit payload dead-lettered",
    )  # fmt: skip

    # Over it: the broker drops the connection; the message never reaches the service.
    big = Client(broker, "eb-1", fleet.secrets["eb-1"])
    assert big.connect() == 0
    big.c.publish(topic, b"y" * (limit + 1), qos=1)
    assert big.disconnected.wait(10), "the broker disconnects a client sending a larger packet"
    big.c.loop_stop()

    wait_until(lambda: influxd.count("fill", influx_db) >= 1, 20, "eb-1's reading stored")
    time.sleep(1.0)  # anything the broker let through has arrived by now
    rows = influxd.query('SELECT * FROM "fill"', influx_db)
    assert [r["device_id"] for r in rows] == ["eb-1"], "the forged eb-2 reading is not stored"
    dead = [d for d in _deadletters(ingest.data_dir) if d.get("topic") == topic]
    assert [d["reason"] for d in dead] == ["too_large"], "the oversized one never came"
    assert ingest.metrics().get("taza_mqtt_connected") == 1.0
    assert ingest.stop() == 0


def test_service_refuses_a_broker_certificate_that_does_not_verify(
    broker: Mosquitto, fleet: Fleet, influxd: InfluxDB1, tmp_path: Path,
    make_ingest: Callable[..., Any],
) -> None:  # fmt: skip
    other = Fleet(tmp_path / "other", fleet.fleet, {})
    other.cli("tls")
    url = f"mqtts://ingest.main:{fleet.secrets['ingest.main']}@localhost:{broker.port}"
    ingest = make_ingest(url, influxd.url, TAZA_MQTT_CA_FILE=str(other.dir / "tls" / "ca.crt"))
    ingest.start(wait_ready=False)
    wait_until(
        lambda: "CERTIFICATE_VERIFY_FAILED" in ingest.log_tail(200)
        or "certificate verify failed" in ingest.log_tail(200),
        20, "a TLS verification failure in the service's log",
    )  # fmt: skip
    assert http_get(ingest.url + "/readyz")[0] == 503
    assert fleet.secrets["ingest.main"] not in ingest.log_tail(200)
    ingest.stop()


def _setting(key: str) -> str:
    conf = profile.render(SHIPPED_MOSQUITTO_CONF.read_text(), "production")
    for line in conf.splitlines():
        words = line.split()
        if words and words[0] == key:
            return words[1]
    raise AssertionError(f"no {key} in the production profile")


def test_tls_handshake_needs_no_client_certificate(broker: Mosquitto) -> None:
    """Devices authenticate with a password here; the TLS handshake alone succeeds."""
    ctx = ssl.create_default_context(cafile=str(broker.ca_file))
    with (
        socket.create_connection((broker.host, broker.port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls_sock,
    ):
        assert tls_sock.version() in ("TLSv1.2", "TLSv1.3")


def test_mutual_tls_takes_the_certificate_cn_as_the_user_name(
    tmp_path: Path, make_mosquitto: Callable[..., Mosquitto]
) -> None:
    """The production block's optional mutual-TLS listener, switched on as documented."""
    f = provision(tmp_path)
    f.cli("tls", "--client", "eb-1")
    broker = make_mosquitto(profile="production", broker_dir=f.dir, mtls=True)
    assert broker.mtls_port is not None
    key = f.dir / "tls" / "clients" / "eb-1"
    # no user name, no password: the certificate says who
    mtls = Client(broker, None, None, port=broker.mtls_port, cert=key)
    assert mtls.connect() == 0
    assert mtls.publish("taza/v1/almaty/ecobox/eb-1/fill", b"r") == 0
    assert mtls.publish("taza/v1/almaty/ecobox/eb-2/fill", b"forged") == NOT_AUTHORIZED
    assert mtls.publish("taza/v1/almaty/ecobox/eb-1/fill", b"r", retain=True) == NOT_AUTHORIZED
    mtls.close()

    without = Client(broker, "eb-1", f.secrets["eb-1"], port=broker.mtls_port)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        loop_until_lost(without.c, broker.host, broker.mtls_port)
