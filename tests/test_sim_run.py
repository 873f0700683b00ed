"""`taza-sim run` and `load` against a real mosquitto: what the log says arrived, arrived."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import devices
from devstack.servers import Mosquitto
from simulator.groundtruth import read_log
from tests.conftest import ServerFactory

pytestmark = pytest.mark.integration

SIM = [sys.executable, "-m", "simulator.cli"]


class Subscriber:
    """A QoS 1 subscriber that records every message on the given filter."""

    def __init__(self, broker: Mosquitto, topic: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._ready.wait(10), "no SUBACK"

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[str, bytes, bool]]:
        end = time.monotonic() + timeout
        while time.monotonic() < end and len(self.messages) < count:
            time.sleep(0.05)
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber_factory() -> Iterator[list[Subscriber]]:
    made: list[Subscriber] = []
    yield made
    for s in made:
        s.close()


def _sim(*args: str, timeout: float = 60) -> dict[str, object]:
    done = subprocess.run(
        [*SIM, *args, "--json"], capture_output=True, timeout=timeout, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary: dict[str, object] = json.loads(done.stdout)
    return summary


def test_run_publishes_exactly_what_it_logs(
    mosquitto: Mosquitto, tmp_path: Path, subscriber_factory: list[Subscriber]
) -> None:
    # Regions of our own: the session broker is shared with other tests.
    sub = Subscriber(mosquitto, "taza/v1/+/+/+/+")
    subscriber_factory.append(sub)
    log = tmp_path / "run.jsonl"
    summary = _sim(
        "run",
        "--broker",
        mosquitto.url,
        "--ecoboxes",
        "24",
        "--rvms",
        "4",
        "--regions",
        "taraz,oral",
        "--speed",
        "1800",
        "--duration",
        "4s",
        "--seed",
        "5",
        "--malformed-rate",
        "0.05",
        "--duplicate-rate",
        "0.05",
        "--out-of-order-rate",
        "0.05",
        "--offline-rate",
        "0.1",
        "--offline-duration",
        "30m",
        "--report-interval",
        "5m",
        "--log",
        str(log),
        "--client-prefix",
        "t-run",
        "--quiet",
    )
    entries = list(read_log(log))
    assert summary["published"] == len(entries) == summary["log_lines"]
    assert all(e.acked for e in entries)
    assert summary["devices"] == 28
    assert summary["wall_seconds"] < 15  # type: ignore[operator]
    ours = ("taza/v1/taraz/", "taza/v1/oral/")
    received = [m for m in sub.wait_for(len(entries)) if m[0].startswith(ours)]
    time.sleep(0.5)
    received = [m for m in sub.messages if m[0].startswith(ours)]

    logged = Counter((e.topic, e.payload) for e in entries)
    got = Counter((t, p) for t, p, _ in received)
    wills = got - logged  # what arrived but was not published by the simulator itself
    assert logged - got == Counter(), "logged as published but never delivered"
    # The only extra messages are the Last Wills of the devices that dropped off on purpose.
    assert all(topic.endswith("/state") and payload == b"offline" for topic, payload in wills)
    assert sum(wills.values()) == summary["deliberate_outages"]
    assert summary["deliberate_outages"] >= 1  # type: ignore[operator]

    faults = Counter(e.fault for e in entries)
    assert faults["duplicate"] >= 1
    assert sum(n for f, n in faults.items() if f and f in summary["faults"]) >= 5  # type: ignore[operator]
    for e in entries:
        if e.channel == "state":
            assert e.retain
            continue
        if e.expect == "reject":
            with pytest.raises(devices.Rejected):
                devices.decode(e.topic, e.payload, e.t)
        else:
            devices.decode(e.topic, e.payload, e.t)  # published → valid at publish time
    # Every device came online first and said offline (retained) at the clean end.
    first = {}
    for e in entries:
        first.setdefault(e.device_id, e)
    assert all(e.payload == b"online" for e in first.values())
    late = Subscriber(mosquitto, "taza/v1/taraz/+/+/state")
    subscriber_factory.append(late)
    retained = late.wait_for(14, timeout=5)
    assert len(retained) == 14
    assert all(r and p == b"offline" for _, p, r in retained)


def test_devices_reconnect_after_a_broker_restart(
    make_mosquitto: ServerFactory[Mosquitto], tmp_path: Path
) -> None:
    broker = make_mosquitto()
    log = tmp_path / "run.jsonl"
    proc = subprocess.Popen(
        [
            *SIM,
            "run",
            "--broker",
            broker.url,
            "--ecoboxes",
            "12",
            "--rvms",
            "2",
            "--regions",
            "aktau",
            "--speed",
            "1200",
            "--duration",
            "9s",
            "--report-interval",
            "2m",
            "--log",
            str(log),
            "--json",
            "--quiet",
            "--client-prefix",
            "t-restart",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3.0)
    restart_at = time.time()
    broker.restart()
    back_at = time.time()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out)
    entries = list(read_log(log))
    assert summary["reconnects"] >= 14  # every device came back
    before = [e for e in entries if e.t.timestamp() < restart_at]
    after = [e for e in entries if e.t.timestamp() > back_at]
    assert len(before) > 20
    assert len([e for e in after if e.channel != "state"]) > 20
    # Each device announced itself again after the restart.
    online_again = {e.device_id for e in after if e.channel == "state" and e.payload == b"online"}
    assert len(online_again) == 14
    # Nothing the devices measured during the outage was left behind.
    assert summary["unpublished_at_end"] == 0
    assert summary["dropped_backlog_full"] == 0
    seqs: dict[str, list[int]] = {}
    for e in entries:
        if e.seq is not None:
            seqs.setdefault(e.device_id, []).append(e.seq)
    for values in seqs.values():  # no gap: what waited during the outage was sent afterwards
        assert sorted(set(values)) == list(range(min(values), max(values) + 1))


def test_load_publishes_the_requested_count(
    mosquitto: Mosquitto, tmp_path: Path, subscriber_factory: list[Subscriber]
) -> None:
    sub = Subscriber(mosquitto, "taza/v1/kokshetau/+/+/+")
    subscriber_factory.append(sub)
    log = tmp_path / "load.jsonl"
    summary = _sim(
        "load",
        "--broker",
        mosquitto.url,
        "--rate",
        "3000",
        "--count",
        "4000",
        "--devices",
        "60",
        "--connections",
        "3",
        "--region",
        "kokshetau",
        "--log",
        str(log),
        "--quiet",
        "--client-prefix",
        "t-load",
    )
    assert summary["sent"] == summary["acked"] == 4000
    assert 1500 < summary["achieved_rate"] < 3600  # type: ignore[operator]
    received = sub.wait_for(4000)
    assert len(received) == 4000
    entries = list(read_log(log))
    assert Counter((e.topic, e.payload) for e in entries) == Counter((t, p) for t, p, _ in received)
    for e in entries:
        devices.decode(e.topic, e.payload, e.t)


def test_messages_without_puback_at_the_end_are_logged_as_unconfirmed(
    make_mosquitto: ServerFactory[Mosquitto], tmp_path: Path
) -> None:
    """A broker that hangs at the end: what was sent but never acknowledged is marked so."""
    broker = make_mosquitto()
    log = tmp_path / "run.jsonl"
    proc = subprocess.Popen(
        [*SIM, "run", "--broker", broker.url, "--ecoboxes", "6", "--rvms", "0",
         "--regions", "atyrau", "--speed", "3600", "--duration", "3s", "--report-interval", "1m",
         "--drain-timeout", "1s", "--log", str(log), "--json", "--quiet",
         "--client-prefix", "t-hang"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(2.0)
        broker.freeze()
        out, err = proc.communicate(timeout=60)
    finally:
        broker.thaw()
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out)
    entries = list(read_log(log))
    unconfirmed = [e for e in entries if not e.acked]
    assert len(unconfirmed) == summary["unconfirmed"] >= 1
    assert summary["published"] == len(entries) - len(unconfirmed)
    acked = {(e.topic, e.payload) for e in entries if e.acked}
    assert all((e.topic, e.payload) not in acked for e in unconfirmed)
    assert all(e.channel != "state" for e in unconfirmed)
