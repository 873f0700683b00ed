"""The service as a whole under internal failure: a real mosquitto and influxd, a real
``taza-ingest`` process whose writer is made faulty (``tests/faulty_ingest.py``), and ~2k msg/s
of background traffic. A failed stage must end the process promptly, non-zero, with the
reason in its log; a wedged stage must show on ``/healthz``; SIGTERM must end it in time."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from devstack import ingest_process
from devstack.ingest_process import IngestProcess, http_get, wait_until
from devstack.publisher import Publisher, fill_messages
from tests.conftest import MakeIngest

pytestmark = pytest.mark.integration


@contextmanager
def traffic(mosquitto: Any, name: str, rate: int = 2000, seconds: int = 30) -> Iterator[None]:
    """``rate`` msg/s QoS 1 from a real publisher until the block ends (at most ``seconds``)."""
    pub = Publisher(mosquitto.host, mosquitto.port, f"pub-{name}")
    stop = threading.Event()
    msgs = fill_messages(100, rate * seconds // 100, prefix=name[:12])

    def stream() -> Iterator[tuple[str, bytes]]:
        for topic, payload, _ in msgs:
            if stop.is_set():
                return
            yield topic, payload

    thread = threading.Thread(target=pub.publish, args=(stream(),), kwargs={"rate": rate})
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(20)
        pub.close()


MakeFaulty = Callable[..., IngestProcess]


@pytest.fixture
def make_faulty(
    mosquitto: Any,
    influxd: Any,
    influx_db: str,
    make_ingest: MakeIngest,
    monkeypatch: pytest.MonkeyPatch,
) -> MakeFaulty:
    """``make_faulty(mode, **env)`` → a not yet started taza-ingest with that fault."""
    monkeypatch.setattr(ingest_process, "INGEST", [sys.executable, "-m", "tests.faulty_ingest"])

    def make(mode: str, **env: str) -> IngestProcess:
        return make_ingest(
            mosquitto.url, influxd.url, TAZA_INFLUX_DB=influx_db, FAULT_INGEST=mode, **env
        )

    return make


def exit_within(ingest: IngestProcess, seconds: float) -> int:
    assert ingest.proc is not None
    try:
        return ingest.proc.wait(seconds)
    except Exception:
        raise AssertionError(
            f"still running {seconds}s later (a zombie):\n{ingest.log_tail(30)}"
        ) from None


def failure_events(ingest: IngestProcess) -> list[dict[str, object]]:
    return [e for e in ingest.log_events() if e.get("event") == "stage_failed"]


@pytest.mark.parametrize(
    ("mode", "stage", "env"),
    [
        ("delivery-raise", "delivery", {"FAULT_AFTER_S": "3"}),
        ("replay-raise", "replay", {"FAULT_AFTER_S": "5", "TAZA_WRITE_ATTEMPTS": "1"}),
    ],
)
def test_failed_stage_exits_non_zero(  # a short name: the client id takes its first 40 chars
    mode: str, stage: str, env: dict[str, str], mosquitto: Any, make_faulty: MakeFaulty
) -> None:
    ingest = make_faulty(mode, **env).start()
    with traffic(mosquitto, f"fail-{stage}"):
        code = exit_within(ingest, 20)
        exited = datetime.now(UTC)
    assert code != 0, "a failed stage must not look like a clean stop"
    failed = failure_events(ingest)
    assert failed, f"no stage_failed line:\n{ingest.log_tail(30)}"
    assert failed[0]["stage"] == stage
    assert "injected fault" in str(failed[0]["error"])
    took = (exited - datetime.fromisoformat(str(failed[0]["timestamp"]))).total_seconds()
    assert took < 5, f"exited {took:.1f}s after the failure"


def test_a_wedged_delivery_turns_healthz_503_and_sigterm_still_ends_it(
    mosquitto: Any, make_faulty: MakeFaulty
) -> None:
    drain_s = 3.0
    ingest = make_faulty(
        "delivery-hang",
        FAULT_AFTER_S="2",
        TAZA_STALL_TIMEOUT_S="3",
        TAZA_DRAIN_TIMEOUT_S=str(drain_s),
    ).start()
    assert http_get(ingest.url + "/healthz")[0] == 200
    with traffic(mosquitto, "wedged"):
        wait_until(lambda: http_get(ingest.url + "/healthz")[0] == 503, 20, "/healthz 503")
        status, body = http_get(ingest.url + "/healthz")
        health = json.loads(body)
        assert status == 503
        assert health["healthy"] is False
        assert health["stages"]["delivery"]["state"] == "stuck"
        assert "no progress" in health["stages"]["delivery"]["why"]
        assert health["stages"]["pipeline"]["state"] != "stuck", "it only waits for delivery"
        assert ingest.proc is not None
        asked = time.monotonic()
        ingest.proc.send_signal(signal.SIGTERM)
        exit_within(ingest, drain_s + 5)
        took = time.monotonic() - asked
    assert took < drain_s + 5
    events = [e.get("event") for e in ingest.log_events()]
    assert "drain_timeout" in events
