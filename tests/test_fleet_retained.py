"""The retained-alert read (``ingest.fleet.retained``) against the real mosquitto: what the
stage's sync relies on — every retained alert and nothing else, over TLS with credentials
too, and an unreadable broker reported as ``RetainedReadError`` (never a partial read)."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from devices.broker import BrokerURL
from devstack.publisher import Publisher
from devstack.servers import Mosquitto, find_binary, free_port
from ingest.fleet.retained import RetainedReadError, read_retained
from tests.test_mqtt_lean import tls_broker

pytestmark = pytest.mark.integration


def _live_alerts(broker: Mosquitto, stop: threading.Event, bound_s: float) -> threading.Thread:
    """Non-retained alerts, as the service publishes them while a backlog drains, until
    ``stop`` (at most ``bound_s``)."""

    def run() -> None:
        live = Publisher(broker.host, broker.port, "live-alerts")
        try:
            i = 0
            while not stop.wait(0.002 if i % 50 == 0 else 0) and i < 200_000:
                live.client.publish(f"taza/v1/alerts/live/eb-{i % 500}/full", b"{}", qos=1)
                i += 1
        finally:
            live.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    threading.Timer(bound_s, stop.set).start()
    return thread


async def test_every_retained_alert_is_read_and_live_ones_neither_kept_nor_waited_for(
    make_mosquitto: Callable[..., Mosquitto],
) -> None:
    broker = make_mosquitto()
    expected = {f"taza/v1/alerts/almaty/eb-{i}/full": b'{"n": %d}' % i for i in range(300)}
    others = [
        ("taza/v1/alerts/almaty/eb-x/full", b"{}"),
        ("taza/v1/alerts/almaty/eb-x/full", b""),  # cleared
        ("taza/v1/almaty/ecobox/eb-1/state", b"online"),  # not an alert
    ]
    pub = Publisher(broker.host, broker.port, "retainer")
    for topic, payload in [*expected.items(), *others]:
        pub.infos.append(pub.client.publish(topic, payload, qos=1, retain=True))
    await asyncio.to_thread(pub.wait_all_acked, 30)
    pub.close()

    stop = threading.Event()
    live = _live_alerts(broker, stop, bound_s=40)
    try:
        found = await read_retained(BrokerURL(broker.host, broker.port), "sync", timeout_s=60)
        assert live.is_alive(), "the read ended once the retained alerts were in …"
        assert not stop.is_set(), "… while live alerts kept coming"
    finally:
        stop.set()
        await asyncio.to_thread(live.join, 30)
    assert found == expected


async def test_tls_with_credentials_and_a_refusal_is_a_read_error(
    tmp_path: Path, make_mosquitto: Callable[..., Mosquitto]
) -> None:
    broker, cert = await tls_broker(tmp_path, make_mosquitto)
    topic = "taza/v1/alerts/almaty/eb-7/fire"
    await asyncio.to_thread(
        subprocess.run,
        [
            find_binary("mosquitto_pub"),
            *("-h", "127.0.0.1", "-p", str(broker.port), "--cafile", str(cert)),
            *("-u", "taza", "-P", "right", "-q", "1", "-r", "-t", topic, "-m", "burning"),
        ],
        check=True,
        timeout=10,
    )
    url = BrokerURL(broker.host, broker.port, tls=True, username="taza", password="right")
    assert await read_retained(url, "sync-tls", ca_file=str(cert)) == {topic: b"burning"}

    wrong = BrokerURL(broker.host, broker.port, tls=True, username="taza", password="wrong")
    with pytest.raises(RetainedReadError, match="refused the connection") as refused:
        await read_retained(wrong, "sync-tls-w", ca_file=str(cert))
    assert "wrong" not in str(refused.value), "no secret in the error"


async def test_no_broker_is_a_read_error() -> None:
    with pytest.raises(RetainedReadError, match="cannot connect"):
        await read_retained(BrokerURL("127.0.0.1", free_port()), "sync-none", timeout_s=2)
