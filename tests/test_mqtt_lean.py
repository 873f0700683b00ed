"""The lean intake against the real mosquitto: what MQTT 5 promises taza, checked on the wire.

Persistent session resumed across a disconnect; unacknowledged messages redelivered with
DUP after a reconnect, acks of the old connection void; Receive Maximum honoured; QoS 1
retained publishes held while disconnected and resent until the broker acknowledges them;
TLS with username/password, and a permanent refusal raised as BrokerRefused.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from devstack.publisher import Publisher
from devstack.servers import Mosquitto, find_binary
from ingest import mqttcodec as codec
from ingest.batch import Incoming
from ingest.errors import BrokerRefused
from ingest.metrics import Metrics
from ingest.mqtt import IntakeOptions
from ingest.mqtt_lean import LeanIntake, _Connection

pytestmark = pytest.mark.integration

_ids = itertools.count()


class Recording(LeanIntake):
    """The real intake, also keeping every PUBLISH as parsed (to see the DUP flag)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.seen: list[codec.Publish] = []

    def handle(self, conn: _Connection, packets: list[codec.Packet]) -> None:
        self.seen += [p for p in packets if isinstance(p, codec.Publish)]
        super().handle(conn, packets)


def options(broker: Mosquitto, client_id: str, **kw: Any) -> IntakeOptions:
    base: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port,
        "client_id": client_id,
        "subscription": f"taza/v1/{client_id}/#",
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.2,
        "receive_maximum": 1000,
    }
    return IntakeOptions(**(base | kw))


async def until(pred: Callable[[], bool], what: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)


async def take(queue: asyncio.Queue[Incoming | None], n: int) -> list[Incoming]:
    out = []
    async with asyncio.timeout(10):
        for _ in range(n):
            item = await queue.get()
            assert item is not None
            out.append(item)
    return out


def publish(broker: Mosquitto, topic_base: str, payloads: list[bytes]) -> None:
    pub = Publisher(broker.host, broker.port, f"pub-{topic_base}-{next(_ids)}")
    pub.publish((f"taza/v1/{topic_base}/ecobox/d1/fill", p) for p in payloads)
    pub.wait_all_acked(10)
    pub.close()


def intake(
    opts: IntakeOptions, size: int = 1000, **kw: Any
) -> tuple[Recording, asyncio.Queue[Incoming | None]]:
    queue: asyncio.Queue[Incoming | None] = asyncio.Queue(size)
    return Recording(opts, Metrics(), queue, **kw), queue


async def test_redelivery_with_dup_old_acks_void_and_session_resumed(mosquitto: Mosquitto) -> None:
    cid = f"lean-session-{next(_ids)}"
    first, queue = intake(options(mosquitto, cid))
    task = asyncio.create_task(first.run())
    await until(lambda: first.subscribed, "SUBACK")
    publish(mosquitto, cid, [b"m%d" % i for i in range(5)])
    before = await take(queue, 5)
    assert {m.generation for m in before} == {first.generation}
    assert not any(p.dup for p in first.seen)

    assert first.conn is not None
    first.conn.drop()  # connection lost with 5 messages unacknowledged
    await until(lambda: first.subscribed and len(first.seen) >= 10, "redelivery")
    again = await take(queue, 5)
    assert [m.payload for m in again] == [m.payload for m in before]
    assert all(p.dup for p in first.seen[5:])
    assert again[0].generation > before[0].generation

    first.acknowledger.ack([(m.mid, m.generation) for m in before])
    assert first.metrics.acked._value.get() == 0  # acks of the old connection: void
    first.acknowledger.ack([(m.mid, m.generation) for m in again])
    assert first.metrics.acked._value.get() == 5
    assert first.unacked == 0
    await first.close()
    await task

    publish(mosquitto, cid, [b"while-down-%d" % i for i in range(3)])
    second, queue2 = intake(options(mosquitto, cid))
    task2 = asyncio.create_task(second.run())
    resumed = await take(queue2, 3)
    assert [m.payload for m in resumed] == [b"while-down-%d" % i for i in range(3)]
    await asyncio.sleep(0.5)
    assert queue2.empty(), "acknowledged messages came back"
    await second.close()
    await task2


async def test_receive_maximum_is_honoured_by_the_broker(mosquitto: Mosquitto) -> None:
    cid = f"lean-rm-{next(_ids)}"
    lean, queue = intake(options(mosquitto, cid, receive_maximum=10))
    task = asyncio.create_task(lean.run())
    await until(lambda: lean.subscribed, "SUBACK")
    publish(mosquitto, cid, [b"r%d" % i for i in range(30)])
    window = await take(queue, 10)
    await asyncio.sleep(0.5)
    assert queue.empty(), "more than Receive Maximum unacknowledged messages were sent"
    lean.acknowledger.ack([(m.mid, m.generation) for m in window])
    nxt = await take(queue, 10)
    assert [m.payload for m in nxt] == [b"r%d" % i for i in range(10, 20)]
    await lean.close()
    await task


def retained(broker: Mosquitto, topic: str) -> bytes:
    out = subprocess.run(
        [
            find_binary("mosquitto_sub"),
            *("-h", broker.host, "-p", str(broker.port), "-t", topic),
            *("--retained-only", "-C", "1", "-W", "5"),
        ],
        capture_output=True,
        timeout=15,
    )
    return out.stdout.strip()


async def test_qos1_retained_publish_is_held_then_resent_until_acknowledged(
    make_mosquitto: Callable[..., Mosquitto],
) -> None:
    broker = make_mosquitto()
    cid = f"lean-pub-{next(_ids)}"
    lean, _ = intake(options(broker, cid, keepalive_s=60))
    lean.publish("taza/v1/alerts/almaty/ecobox/d1", b"held", qos=1, retain=True)  # not connected
    task = asyncio.create_task(lean.run())
    await until(lambda: lean.subscribed and not lean._outbox, "PUBACK of the held publish")
    assert await asyncio.to_thread(retained, broker, "taza/v1/alerts/almaty/ecobox/d1") == b"held"

    broker.freeze()  # the PUBLISH goes out, no PUBACK comes back
    lean.publish("taza/v1/alerts/almaty/ecobox/d2", b"resent", qos=1, retain=True)
    await asyncio.sleep(0.3)
    assert lean._outbox, "acknowledged by a frozen broker?"
    assert lean.conn is not None
    lean.conn.drop()
    broker.thaw()
    await until(lambda: lean.subscribed and not lean._outbox, "PUBACK after the reconnect")
    assert await asyncio.to_thread(retained, broker, "taza/v1/alerts/almaty/ecobox/d2") == b"resent"
    await lean.close()
    await task


async def test_a_full_outbox_drops_the_oldest_publishes_counted_and_logged_once(
    mosquitto: Mosquitto,
) -> None:
    """While the broker's PUBACKs lag, the outbox keeps the newest ``outbox_limit`` publishes.
    Each drop is counted (metric and ``publishes_dropped``, which the alert stage watches);
    the error line comes once per interval, not once per publish."""
    cid = f"lean-outbox-{next(_ids)}"
    lean, _ = intake(options(mosquitto, cid), outbox_limit=5)
    topics = [f"taza/v1/alerts/{cid}/d{i}/full" for i in range(12)]
    with capture_logs() as logs:
        for i, topic in enumerate(topics):
            lean.publish(topic, b"firing %d" % i, qos=1, retain=True)  # not connected: held
    full = [e for e in logs if e["event"] == "mqtt_outbox_full"]
    assert [(e["dropped"], e["last_dropped_topic"]) for e in full] == [(1, topics[0])]
    assert lean.publishes_dropped == 7
    assert lean.metrics.registry.get_sample_value("taza_mqtt_publishes_dropped_total") == 7
    task = asyncio.create_task(lean.run())
    await until(lambda: lean.subscribed and not lean._outbox, "PUBACKs of the five kept")
    out = await asyncio.to_thread(
        subprocess.run,
        [find_binary("mosquitto_sub"), "-h", mosquitto.host, "-p", str(mosquitto.port),
         "-t", f"taza/v1/alerts/{cid}/#", "--retained-only", "-v", "-C", "6", "-W", "2"],
        capture_output=True, timeout=15,
    )  # fmt: skip
    got = sorted(out.stdout.decode().splitlines(), key=lambda line: int(line.split("/")[4][1:]))
    assert got == [f"{t} firing {i}" for i, t in enumerate(topics)][7:], "the newest five"
    await lean.close()
    await task


def _cert(tmp: Path) -> tuple[Path, Path]:
    key, cert = tmp / "server.key", tmp / "server.crt"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    key.chmod(0o644)
    return key, cert


async def tls_broker(
    tmp_path: Path, make_mosquitto: Callable[..., Mosquitto]
) -> tuple[Mosquitto, Path]:
    """A broker of the test's own on TLS (a self-signed certificate, returned as the CA),
    anonymous refused, user ``taza`` with password ``right``."""
    key, cert = _cert(tmp_path)
    pwfile = tmp_path / "passwd"
    await asyncio.to_thread(
        subprocess.run,
        [find_binary("mosquitto_passwd"), "-b", "-c", str(pwfile), "taza", "right"],
        check=True,
    )
    pwfile.chmod(0o644)
    broker = make_mosquitto(
        extra_conf=f"certfile {cert}\nkeyfile {key}\n"
        f"allow_anonymous false\npassword_file {pwfile}\n"
    )
    return broker, cert


async def test_tls_with_credentials_and_a_wrong_password_is_fatal(
    tmp_path: Path, make_mosquitto: Callable[..., Mosquitto]
) -> None:
    broker, cert = await tls_broker(tmp_path, make_mosquitto)
    cid = f"lean-tls-{next(_ids)}"
    tls = {"tls": True, "ca_file": cert, "username": "taza"}
    lean, queue = intake(options(broker, cid, password="right", **tls))
    task = asyncio.create_task(lean.run())
    await until(lambda: lean.subscribed, "SUBACK over TLS")
    await asyncio.to_thread(
        subprocess.run,
        [
            find_binary("mosquitto_pub"),
            *("-h", "127.0.0.1", "-p", str(broker.port), "--cafile", str(cert)),
            *("-u", "taza", "-P", "right", "-q", "1"),
            *("-t", f"taza/v1/{cid}/ecobox/d1/fill", "-m", "over-tls"),
        ],
        check=True,
        timeout=10,
    )
    (msg,) = await take(queue, 1)
    assert msg.payload == b"over-tls"
    await lean.close()
    await task

    wrong, _ = intake(options(broker, cid + "-w", password="wrong", **tls))
    with pytest.raises(BrokerRefused, match=r"password|authorized"):
        async with asyncio.timeout(10):
            await wrong.run()


async def test_a_full_queue_pauses_reading_and_loses_nothing(mosquitto: Mosquitto) -> None:
    """mosquitto 2.0.11 was measured sending past Receive Maximum once PUBACKs flow, so a
    full intake queue must hold the broker back (TCP), never drop a QoS 1 message."""
    cid = f"lean-full-{next(_ids)}"
    lean, queue = intake(options(mosquitto, cid, receive_maximum=200), size=5)
    task = asyncio.create_task(lean.run())
    await until(lambda: lean.subscribed, "SUBACK")
    sent = [b"f%d" % i for i in range(60)]
    await asyncio.to_thread(publish, mosquitto, cid, sent)
    got: list[Incoming] = []
    while len(got) < len(sent):
        assert queue.qsize() <= 5
        got += await take(queue, 1)
        lean.acknowledger.ack([(got[-1].mid, got[-1].generation)])
    assert [m.payload for m in got] == sent
    assert lean.pauses >= 1
    assert lean.unacked == 0
    await lean.close()
    await task


async def test_a_long_pause_keeps_the_connection_alive(mosquitto: Mosquitto) -> None:
    """Paused on a full queue for several keepalives (the database is slow): still pinging,
    so neither side drops the connection, and the messages come through afterwards."""
    cid = f"lean-pause-{next(_ids)}"
    lean, queue = intake(options(mosquitto, cid, keepalive_s=1), size=1)
    task = asyncio.create_task(lean.run())
    await until(lambda: lean.subscribed, "SUBACK")
    sent = [b"k%d" % i for i in range(20)]
    await asyncio.to_thread(publish, mosquitto, cid, sent)
    await until(lambda: lean.pauses >= 1, "reading paused")
    await asyncio.sleep(12)  # mosquitto checks keepalives lazily: well past 1.5 of them
    assert lean.connects == 1
    got = []
    for _ in sent:
        (m,) = await take(queue, 1)
        lean.acknowledger.ack([(m.mid, m.generation)])
        got.append(m.payload)
    assert got == sent
    await asyncio.sleep(1.5)
    assert lean.connects == 1, "the connection was dropped during the pause"
    assert queue.empty(), "acks were lost with a dropped connection: messages came back"
    await lean.close()
    await task


async def test_its_own_publications_never_come_back_but_others_do(mosquitto: Mosquitto) -> None:
    """No Local: an alert taza publishes under its own subscription is not received by it
    (it would cost a decode and an ack per alert); a device's message on the same filter is."""
    cid = f"lean-nolocal-{next(_ids)}"
    lean, queue = intake(options(mosquitto, cid))
    task = asyncio.create_task(lean.run())
    await until(lambda: lean.subscribed, "SUBACK")
    lean.publish(f"taza/v1/{cid}/alerts-like/own", b"from taza itself", qos=1)
    await until(lambda: not lean._outbox, "the broker's PUBACK of it", within=5)
    publish(mosquitto, cid, [b"from a device"])
    got = await take(queue, 1)
    assert [m.payload for m in got] == [b"from a device"]
    await asyncio.sleep(0.5)
    assert queue.empty(), "the intake received its own publication"
    await lean.close()
    await task


def test_no_local_is_set_except_on_shared_subscriptions() -> None:
    base = {"host": "127.0.0.1", "port": 1, "client_id": "c"}
    assert IntakeOptions(subscription="taza/v1/#", **base).no_local
    assert not IntakeOptions(subscription="$share/taza/taza/v1/#", **base).no_local
    assert codec.subscribe(1, "t", 1, no_local=True)[-1] == 0x05
    assert codec.subscribe(1, "t", 1)[-1] == 0x01
