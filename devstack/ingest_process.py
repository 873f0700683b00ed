"""Drive a real ``taza-ingest`` process and a real MQTT publisher from tests and bench/.

No mocks: the service runs as its own process (so SIGTERM and kill -9 are real), the
publisher is a paho-mqtt client that waits for the broker's PUBACK of every message.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

REPO = Path(__file__).resolve().parents[1]
INGEST = [sys.executable, "-m", "ingest"]


def wait_until(pred: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


@dataclass
class IngestProcess:
    """``taza-ingest run`` as a child process with its own data dir, HTTP port and log."""

    data_dir: Path
    env: dict[str, str]
    http_port: int
    log_path: Path = field(init=False)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / "ingest.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, wait_ready: bool = True, timeout: float = 30) -> IngestProcess:
        env = {
            **os.environ,
            "TAZA_DATA_DIR": str(self.data_dir),
            "TAZA_HTTP_ADDR": f"127.0.0.1:{self.http_port}",
            "TAZA_LOG_FORMAT": "json",
            **self.env,
        }
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [*INGEST, "run"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO
        )
        log.close()
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"taza-ingest exited {self.proc.returncode}:\n{self.log_tail()}"
                )
            return http_get(self.url + "/readyz")[0] == 200

        wait_until(ready, timeout, "taza-ingest /readyz")

    def metrics(self) -> dict[str, float]:
        status, text = http_get(self.url + "/metrics")
        assert status == 200, f"/metrics answered {status}"
        return parse_metrics(text)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"taza-ingest did not stop on {sig}:\n{self.log_tail()}") from None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def log_events(self) -> list[dict[str, object]]:
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events


def fill_payload(seq: int, ts_ms: int, fill_pct: float) -> bytes:
    return json.dumps({"ts": ts_ms, "seq": seq, "fill_pct": fill_pct}).encode()


def fill_messages(
    devices: int,
    per_device: int,
    *,
    region: str = "almaty",
    prefix: str = "eb",
    ts0_ms: int | None = None,
) -> list[tuple[str, bytes, tuple[str, int, float]]]:
    """Valid ecobox/fill messages: (topic, payload, (device_id, ts_ms, fill_pct)), interleaved."""
    base = ts0_ms if ts0_ms is not None else int(time.time() * 1000) - 3_600_000
    out = []
    for seq in range(per_device):
        for d in range(devices):
            device_id = f"{prefix}-{d:05d}"
            ts = base + seq * 1000 + d
            pct = round((seq * 7 + d * 13) % 1000 / 10, 1)
            out.append(
                (
                    f"taza/v1/{region}/ecobox/{device_id}/fill",
                    fill_payload(seq, ts, pct),
                    (device_id, ts, pct),
                )
            )
    return out


class Publisher:
    """A QoS 1 publisher that survives broker restarts and knows which messages were PUBACKed."""

    def __init__(self, host: str, port: int, client_id: str, inflight: int = 1000) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
        )
        self.client.max_inflight_messages_set(inflight)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.1, 1)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self._connected = threading.Event()
        self.client.on_connect = lambda *a: self._connected.set()
        self.client.connect(host, port, keepalive=10, clean_start=False, properties=props)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise AssertionError("publisher could not connect")
        self.infos: list[paho.MQTTMessageInfo] = []

    def publish(
        self, messages: Iterable[tuple[str, bytes]], rate: float | None = None, window: int = 5000
    ) -> None:
        """Queue messages, at most ``window`` unacknowledged at a time: paho rescans its
        whole outgoing queue on every PUBACK, so an unbounded queue costs O(n^2)."""
        start = time.monotonic()
        for i, (topic, payload) in enumerate(messages):
            self.infos.append(self.client.publish(topic, payload, qos=1))
            if i % 100 == 0:
                if rate:
                    ahead = i / rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
                while self._prune() > window:
                    time.sleep(0.005)

    def _prune(self) -> int:
        # is_published() raises for messages queued while disconnected, which paho still
        # sends after the reconnect; the flag itself is set on their PUBACK.
        self.infos = [i for i in self.infos if not i._published]
        return len(self.infos)

    def wait_all_acked(self, timeout: float = 60) -> None:
        wait_until(lambda: self._prune() == 0, timeout, "PUBACK of every message")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
