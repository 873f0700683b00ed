"""The real servers behave as the rest of the suite assumes (and the harness catches it if not)."""

from __future__ import annotations

import queue
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devstack.servers import (
    HTTPStatusError,
    InfluxDB1,
    MissingBinary,
    Mosquitto,
    Server,
    ServerError,
    VictoriaMetrics,
)
from tests.conftest import ServerFactory

pytestmark = pytest.mark.integration

TIMEOUT = 10.0


class Client:
    """A paho-mqtt 2.x MQTT 5 client whose events land in queues a test can wait on."""

    def __init__(self, broker: Mosquitto, client_id: str, session_expiry: int = 0) -> None:
        self.broker = broker
        self.session_expiry = session_expiry
        self.connacks: queue.Queue[tuple[bool, int]] = queue.Queue()
        self.subacks: queue.Queue[list[int]] = queue.Queue()
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.paho = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.paho.on_connect = self._on_connect
        self.paho.on_subscribe = self._on_subscribe
        self.paho.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason_code, properties):  # type: ignore[no-untyped-def]
        self.connacks.put((bool(flags.session_present), reason_code.value))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):  # type: ignore[no-untyped-def]
        self.subacks.put([rc.value for rc in reason_codes])

    def _on_message(self, client, userdata, message):  # type: ignore[no-untyped-def]
        self.messages.put(message)

    def connect(self) -> bool:
        """Connect without a clean start; returns the broker's session-present flag."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry
        self.paho.connect(
            self.broker.host, self.broker.port, keepalive=30, clean_start=False, properties=props
        )
        self.paho.loop_start()
        session_present, rc = self.connacks.get(timeout=TIMEOUT)
        assert rc == 0, f"CONNACK reason code {rc}"
        return session_present

    def subscribe(self, topic: str) -> None:
        self.paho.subscribe(topic, qos=1)
        assert self.subacks.get(timeout=TIMEOUT) == [1], "subscription not granted at QoS 1"

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.paho.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=TIMEOUT)
        assert info.is_published(), "no PUBACK"

    def receive(self, n: int) -> list[mqtt.MQTTMessage]:
        return [self.messages.get(timeout=TIMEOUT) for _ in range(n)]

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


@contextmanager
def client(broker: Mosquitto, client_id: str, session_expiry: int = 0) -> Iterator[Client]:
    c = Client(broker, client_id, session_expiry)
    try:
        yield c
    finally:
        c.close()


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- mosquitto ---------------------------------------------------------------------------------


def test_mosquitto_delivers_qos1_between_two_clients(mosquitto: Mosquitto) -> None:
    topic = f"taza/v1/almaty/ecobox/{_unique('e')}/fill"
    with client(mosquitto, _unique("sub")) as sub, client(mosquitto, _unique("pub")) as pub:
        sub.connect()
        sub.subscribe(topic)
        pub.connect()
        sent = [f'{{"seq":{i},"fill_pct":{i}.5}}'.encode() for i in range(20)]
        for payload in sent:
            pub.publish(topic, payload)
        got = sub.receive(len(sent))
    assert [m.payload for m in got] == sent
    assert {(m.topic, m.qos) for m in got} == {(topic, 1)}


def test_persistent_session_and_retained_state_survive_broker_restart(
    make_mosquitto: ServerFactory[Mosquitto],
) -> None:
    """What taza-ingest relies on: messages for a disconnected persistent session, and the
    devices' retained `state`, are on disk when the broker comes back."""
    broker = make_mosquitto()
    port, pid = broker.port, broker.pid
    state_topic = "taza/v1/almaty/ecobox/e-1/state"
    with client(broker, "ingest-like", session_expiry=300) as sub:
        assert sub.connect() is False
        sub.subscribe("taza/v1/+/+/+/+")
    with client(broker, "device-e-1") as dev:
        dev.connect()
        dev.publish("taza/v1/almaty/ecobox/e-1/fill", b'{"seq":1,"fill_pct":40.0}')
        dev.publish(state_topic, b"online", retain=True)

    broker.restart()
    assert broker.port == port
    assert broker.pid != pid
    assert broker.db_path.is_file()

    with client(broker, "ingest-like", session_expiry=300) as sub:
        assert sub.connect() is True, "the broker forgot the session across the restart"
        queued = sorted(m.payload for m in sub.receive(2))
    assert queued == sorted([b'{"seq":1,"fill_pct":40.0}', b"online"])
    with client(broker, _unique("crew")) as crew:
        crew.connect()
        crew.subscribe(state_topic)
        (retained,) = crew.receive(1)
    assert (retained.payload, retained.retain) == (b"online", True)


def test_mosquitto_broken_persistence_fails_loudly(
    make_mosquitto: ServerFactory[Mosquitto],
) -> None:
    """The NOTES pitfall: a broker that cannot save must not pass as a working one."""
    broker = make_mosquitto()
    broker.db_path.mkdir()  # saving the database now fails
    with pytest.raises(ServerError, match="Error"):
        broker.stop()


def _connack_within(port: int, timeout: float) -> bool:
    """Send a raw MQTT 3.1.1 CONNECT and report whether a CONNACK arrives in time."""
    client_id = b"freeze-probe"
    variable = b"\x00\x04MQTT\x04\x02\x00\x3c"
    payload = len(client_id).to_bytes(2, "big") + client_id
    body = variable + payload
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(bytes([0x10, len(body)]) + body)
        s.settimeout(timeout)
        try:
            return s.recv(4)[:1] == b"\x20"
        except TimeoutError:
            return False


def test_frozen_broker_accepts_tcp_but_answers_nothing_until_thawed(
    make_mosquitto: ServerFactory[Mosquitto],
) -> None:
    broker = make_mosquitto()
    assert _connack_within(broker.port, TIMEOUT)
    broker.freeze()
    try:
        assert broker.running
        assert not _connack_within(broker.port, 0.5)
    finally:
        broker.thaw()
    assert _connack_within(broker.port, TIMEOUT)


# -- influxd -----------------------------------------------------------------------------------


def test_influxd_stores_line_protocol_and_returns_it_by_influxql(
    influxd: InfluxDB1, influx_db: str
) -> None:
    ts = 1_700_000_000_000_000_000
    device = r"a\ b\,c\=d"  # line protocol for 'a b,c=d'
    firmware = r'"x \"q\" \\ ü"'  # line protocol for 'x "q" \ ü'
    lines = [
        f"fill,region=almaty,device_id={device} fill_pct=12.5,seq=7i,fw={firmware} {ts}",
        f"fill,region=almaty,device_id=plain fill_pct=100,seq=8i {ts + 1}",
        f"state,region=almaty,device_id=plain online=true {ts + 2}",
    ]
    influxd.write(lines, influx_db)

    rows = influxd.query("SELECT * FROM fill ORDER BY time", influx_db)
    assert rows == [
        {
            "time": ts,
            "device_id": "a b,c=d",
            "fill_pct": 12.5,
            "fw": 'x "q" \\ ü',
            "region": "almaty",
            "seq": 7,
        },
        {
            "time": ts + 1,
            "device_id": "plain",
            "fill_pct": 100,
            "fw": None,
            "region": "almaty",
            "seq": 8,
        },
    ]
    assert influxd.count("fill", influx_db) == 2
    assert influxd.count("fill", influx_db, field="fw") == 1
    grouped = influxd.query("SELECT count(seq) FROM fill GROUP BY device_id", influx_db)
    assert sorted((r["device_id"], r["count"]) for r in grouped) == [("a b,c=d", 1), ("plain", 1)]
    assert influxd.query("SELECT online FROM state", influx_db)[0]["online"] is True


def test_influxd_rejections_carry_status_and_reason(influxd: InfluxDB1, influx_db: str) -> None:
    """The ingest writer decides retry vs dead-letter from exactly these answers."""
    with pytest.raises(HTTPStatusError) as missing:
        influxd.write("fill fill_pct=1", "no_such_db_" + uuid.uuid4().hex[:6])
    assert missing.value.status == 404
    assert "database not found" in missing.value.body

    influxd.write("fill,device_id=x fill_pct=1 1", influx_db)
    with pytest.raises(HTTPStatusError) as conflict:
        influxd.write('fill,device_id=x fill_pct="full" 2', influx_db)
    assert conflict.value.status == 400
    assert "field type conflict" in conflict.value.body
    assert influxd.count("fill", influx_db) == 1


def test_influxd_keeps_acknowledged_writes_across_crash_and_restart(
    make_influxd: ServerFactory[InfluxDB1],
) -> None:
    db = make_influxd()
    port = db.port
    db.create_database("taza")
    db.write([f"fill,device_id=d{i} fill_pct={i} {i + 1}" for i in range(100)], "taza")
    db.kill()
    assert not db.running
    db.start()
    assert db.port == port
    assert db.count("fill", "taza") == 100
    db.restart()
    assert db.count("fill", "taza") == 100


# -- victoria-metrics --------------------------------------------------------------------------


def test_victoria_accepts_influxdb_client_v2_writes(victoria: VictoriaMetrics) -> None:
    device = _unique("vm")
    now_ns = time.time_ns()
    with InfluxDBClient(url=victoria.url, token="x", org="x") as influx:
        influx.write_api(write_options=SYNCHRONOUS).write(
            bucket="b",
            record=[
                f"fill,region=almaty,device_id={device} fill_pct=42.5,seq=7i {now_ns}",
                f"fill,region=almaty,device_id={device} fill_pct=43.5,seq=8i {now_ns + 10**6}",
            ],
        )
    victoria.force_flush()

    series = victoria.export(f'{{__name__="fill_fill_pct",device_id="{device}"}}')
    assert len(series) == 1
    assert series[0]["metric"] == {
        "__name__": "fill_fill_pct",
        "region": "almaty",
        "device_id": device,
    }
    assert series[0]["values"] == [42.5, 43.5]
    assert series[0]["timestamps"] == [now_ns // 10**6, now_ns // 10**6 + 1]
    assert victoria.sample_count(f'{{__name__=~"fill_.*",device_id="{device}"}}') == 4
    assert victoria.metric("vm_rows_ignored_total") == 0


# -- the harness itself ------------------------------------------------------------------------


def test_missing_binary_names_the_install_command(tmp_path: Path) -> None:
    class Ghost(Server):
        name = "ghost"
        binary = "taza-no-such-server"

    with pytest.raises(MissingBinary) as err:
        Ghost(tmp_path).start()
    message = str(err.value)
    assert "taza-no-such-server" in message
    assert "apt-get install -y mosquitto mosquitto-clients influxdb victoria-metrics" in message
    assert "make setup" in message
