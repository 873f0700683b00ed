"""The MQTT intake: unit tests with a fake paho client (the socket bridge between paho and
asyncio, acknowledgements tagged by connection), and end to end the default topic filter
(everything under ``taza/v1/`` is seen; taza's own output never comes back in)."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from devices import INTAKE_FILTER, Ignored, Reason, Rejected, parse_topic
from devstack.ingest_process import wait_until
from devstack.publisher import Publisher
from ingest.batch import Incoming
from ingest.errors import BrokerRefused
from ingest.metrics import Metrics
from ingest.mqtt import IntakeOptions, MqttIntake
from tests.conftest import MakeIngest

OK = MQTTErrorCode.MQTT_ERR_SUCCESS


class FakeClient:
    """Speaks paho's external-loop interface over a real socketpair. The test plays the
    broker by writing one byte per event: C(onnack), R(efused), S(uback), M(essage), D(rop)."""

    def __init__(self) -> None:
        self.connects = 0
        self.connected = False
        self.sock: socket.socket | None = None
        self.broker: socket.socket | None = None
        self.acked: list[int] = []
        self.writes = 0
        self.subscriptions: list[str] = []
        self.connect_props: Any = None
        self._mid = 0
        self.on_connect: Any = None
        self.on_disconnect: Any = None
        self.on_subscribe: Any = None
        self.on_message: Any = None
        self.on_socket_open: Any = None
        self.on_socket_close: Any = None
        self.on_socket_register_write: Any = None
        self.on_socket_unregister_write: Any = None

    # called by the intake ------------------------------------------------------------
    def connect(self, host: str, port: int, **kwargs: Any) -> int:
        self.sock, self.broker = socket.socketpair()
        self.sock.setblocking(False)
        self.connects += 1
        self.connect_props = kwargs.get("properties")
        self.on_socket_open(self, None, self.sock)
        return 0

    def socket(self) -> socket.socket | None:
        return self.sock

    def is_connected(self) -> bool:
        return self.connected

    def subscribe(self, topic: str, options: Any = None) -> tuple[MQTTErrorCode, int]:
        self.subscriptions.append(topic)
        return OK, 99

    def ack(self, mid: int, qos: int) -> None:
        self.acked.append(mid)
        self.on_socket_register_write(self, None, self.sock)

    def want_write(self) -> bool:
        return False

    def loop_write(self) -> MQTTErrorCode:
        self.writes += 1
        self.on_socket_unregister_write(self, None, self.sock)
        return OK

    def loop_misc(self) -> MQTTErrorCode:
        return OK

    def disconnect(self) -> None:
        self.connected = False

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        return None

    def loop_read(self) -> MQTTErrorCode:
        assert self.sock is not None
        try:
            event = self.sock.recv(1)
        except BlockingIOError:
            return OK
        if event == b"C":
            self.connected = True
            flags = paho.ConnectFlags(session_present=False)
            self.on_connect(self, None, flags, ReasonCode(PacketTypes.CONNACK, "Success"), None)
        elif event == b"R":
            rc = ReasonCode(PacketTypes.CONNACK, "Bad user name or password")
            self.on_connect(self, None, paho.ConnectFlags(False), rc, None)
        elif event == b"S":
            granted = [ReasonCode(PacketTypes.SUBACK, "Granted QoS 1")]
            self.on_subscribe(self, None, 99, granted, None)
        elif event == b"M":
            self._mid += 1
            msg = paho.MQTTMessage(self._mid, b"taza/v1/a/ecobox/d1/fill")
            msg.payload = b"{}"
            msg.qos = 1
            self.on_message(self, None, msg)
        elif event in (b"D", b""):
            sock, self.sock = self.sock, None
            self.connected = False
            self.on_socket_close(self, None, sock)
            rc = ReasonCode(PacketTypes.DISCONNECT, "Unspecified error")
            self.on_disconnect(self, None, paho.DisconnectFlags(False), rc, None)
        return OK

    # called by the test (the broker's side) ------------------------------------------
    def send(self, events: bytes) -> None:
        assert self.broker is not None
        self.broker.sendall(events)


async def until(pred: Any, what: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def _intake(queue_size: int = 100) -> tuple[MqttIntake, FakeClient, asyncio.Queue[Incoming | None]]:
    fake = FakeClient()
    queue: asyncio.Queue[Incoming | None] = asyncio.Queue(queue_size)
    options = IntakeOptions(
        host="broker",
        port=1883,
        client_id="c",
        subscription="taza/v1/#",
        receive_maximum=123,
        reconnect_min_s=0.01,
        reconnect_max_s=0.02,
    )
    return MqttIntake(options, Metrics(), queue, client_factory=lambda o: fake), fake, queue


async def _connected(intake: MqttIntake, fake: FakeClient) -> None:
    await until(lambda: fake.broker is not None, "connect")
    fake.send(b"CS")
    await until(lambda: intake.subscribed, "SUBACK")


async def test_acks_go_only_to_the_connection_their_message_came_on() -> None:
    intake, fake, queue = _intake()
    task = asyncio.create_task(intake.run())
    await _connected(intake, fake)
    assert fake.subscriptions == ["taza/v1/#"]
    assert fake.connect_props.ReceiveMaximum == 123
    fake.send(b"MM")  # two PUBLISHes in one socket wakeup
    old = [await queue.get(), await queue.get()]
    assert [m.mid for m in old if m] == [1, 2]
    fake.send(b"D")
    await until(lambda: fake.connects == 2, "reconnect")
    await _connected(intake, fake)
    fake.send(b"M")
    new = await queue.get()
    assert new is not None
    assert {m.generation for m in old if m} != {new.generation}
    intake.acknowledger.ack([(m.mid, m.generation) for m in [*old, new] if m])
    assert fake.acked == [new.mid], "acks of the dropped connection are void, never resent"
    assert intake.unacked == 0
    assert intake.metrics.registry.get_sample_value("taza_messages_acked_total") == 1
    await intake.close()
    await asyncio.wait_for(task, 2)


async def test_a_pending_ack_is_written_when_the_socket_is_writable_then_unregistered() -> None:
    intake, fake, queue = _intake()
    task = asyncio.create_task(intake.run())
    await _connected(intake, fake)
    fake.send(b"M")
    msg = await queue.get()
    assert msg is not None
    intake.acknowledger.ack([(msg.mid, msg.generation)])
    await until(lambda: fake.writes == 1, "loop_write from the event loop's writer callback")
    await asyncio.sleep(0.05)
    assert fake.writes == 1, "the writer is removed once paho has nothing more to send"
    await intake.close()
    await asyncio.wait_for(task, 2)


async def test_full_queue_drops_and_counts_and_stop_accepting_leaves_messages_unacked() -> None:
    intake, fake, queue = _intake(queue_size=2)
    task = asyncio.create_task(intake.run())
    await _connected(intake, fake)
    fake.send(b"MMM")
    await until(lambda: intake.dropped == 1, "the third message dropped")
    assert (queue.qsize(), intake.unacked) == (2, 2)
    intake.stop_accepting()
    fake.send(b"M")
    await asyncio.sleep(0.05)
    assert queue.qsize() == 2
    assert intake.metrics.registry.get_sample_value("taza_messages_received_total") == 3
    await intake.close()
    await asyncio.wait_for(task, 2)


async def test_permanent_connack_refusal_raises_broker_refused() -> None:
    intake, fake, _ = _intake()
    task = asyncio.create_task(intake.run())
    await until(lambda: fake.broker is not None, "connect")
    fake.send(b"R")
    with pytest.raises(BrokerRefused, match="bad user name or password"):
        await asyncio.wait_for(task, 2)


# -- topic shape -------------------------------------------------------------------------


def test_default_filter_is_everything_under_v1_and_own_namespaces_are_ignored() -> None:
    assert INTAKE_FILTER == "taza/v1/#"
    for own in (
        "taza/v1/alerts/almaty/eb-1/full",
        "taza/v1/_deadletter/bad_topic",
        "taza/v1/_feedback/almaty/eb-1",
    ):
        with pytest.raises(Ignored):
            parse_topic(own)
    with pytest.raises(Rejected) as err:
        parse_topic("taza/v1/almaty/ecobox/eb-0042/fill/extra")
    assert err.value.reason is Reason.BAD_TOPIC


def _dead_letters(data_dir: Any) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for f in sorted((data_dir / "deadletter").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]


@pytest.mark.integration
def test_wrongly_shaped_topic_under_v1_is_dead_lettered_bad_topic(
    mosquitto: Any, influxd: Any, influx_db: str, make_ingest: MakeIngest
) -> None:
    ingest = make_ingest(mosquitto.url, influxd.url, TAZA_INFLUX_DB=influx_db).start()
    pub = Publisher(mosquitto.host, mosquitto.port, f"pub-{influx_db}")
    topic = "taza/v1/almaty/ecobox/eb-0042/fill/extra"
    pub.infos.append(pub.client.publish(topic, b'{"ts": 1, "seq": 1, "fill_pct": 5}', qos=1))
    pub.wait_all_acked()
    wait_until(lambda: len(_dead_letters(ingest.data_dir)) == 1, 20, "the dead letter")
    [record] = _dead_letters(ingest.data_dir)
    assert (record["topic"], record["reason"]) == (topic, "bad_topic")
    m = ingest.metrics()
    assert m['taza_messages_rejected_total{reason="bad_topic"}'] == 1
    pub.close()
    assert ingest.stop() == 0


@pytest.mark.integration
@pytest.mark.parametrize("share_group", [None, "taza-echo"], ids=["no-local", "share-group"])
def test_republished_dead_letters_do_not_loop_under_a_taza_hash_filter(
    make_mosquitto: Any,
    influxd: Any,
    influx_db: str,
    make_ingest: MakeIngest,
    share_group: str | None,
) -> None:
    """One bad message, one dead letter. A plain subscription uses No Local, so the copies
    taza republishes never come back; a share group cannot (MQTT 5 forbids it), so each copy
    comes back once and is ignored as a reserved topic."""
    # A broker of its own: taza/# also receives the retained alert topics that other tests'
    # fleet stages leave on the session broker, which would count as received here.
    mosquitto = make_mosquitto()
    extra = {"TAZA_MQTT_SHARE_GROUP": share_group} if share_group else {}
    ingest = make_ingest(
        mosquitto.url,
        influxd.url,
        TAZA_INFLUX_DB=influx_db,
        TAZA_MQTT_TOPIC="taza/#",
        TAZA_DEADLETTER_REPUBLISH="true",
        **extra,
    ).start()
    pub = Publisher(mosquitto.host, mosquitto.port, f"pub-{influx_db}")
    bad = [
        ("taza/v1/almaty/ecobox/eb-0042/fill/extra", b"{}"),
        ("taza/v2/almaty/ecobox/eb-1/fill", b"{}"),
        ("taza/v1/almaty/ecobox/eb-1/fill", b"not json"),
    ]
    for topic, payload in bad:
        pub.infos.append(pub.client.publish(topic, payload, qos=1))
    pub.wait_all_acked()
    wait_until(lambda: len(_dead_letters(ingest.data_dir)) >= len(bad), 20, "the dead letters")
    # In a share group the device feedback (taza/v1/_feedback/eb-0042 and .../eb-1; taza/v2 names
    # no device) comes back too, and is ignored the same way.
    echoes = len(bad) + 2 if share_group else 0
    wait_until(
        lambda: ingest.metrics()["taza_messages_received_total"] >= len(bad) + echoes,
        20,
        "the bad messages (and, in a share group, the republished copies coming back)",
    )
    time.sleep(3)  # a loop would keep rejecting its own output by now
    records = _dead_letters(ingest.data_dir)
    got = sorted((r["topic"], base64.b64decode(r["payload"])) for r in records)
    assert got == sorted(bad), "exactly one dead letter per bad message"
    m = ingest.metrics()
    assert m["taza_messages_received_total"] == len(bad) + echoes
    assert m["taza_messages_ignored_total"] == echoes
    pub.close()
    assert ingest.stop() == 0
