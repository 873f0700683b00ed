"""The per-device rate limit end to end: real mosquitto, taza-ingest and influxd.

One device floods as fast as its QoS 1 client can while five others publish at their normal
rate: every message of the others is stored; the flooder gets its burst plus its rate, and its
excess is rejected as ``rate_limited`` — counted, dead-lettered whole, acknowledged.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from devstack.ingest_process import wait_until
from devstack.publisher import Publisher, fill_messages
from ingest.deadletter import decode_payload, read_records
from tests.conftest import MakeIngest
from tests.test_sim_run import Subscriber

pytestmark = pytest.mark.integration

RATE, BURST = 20, 40
FLOOD = 3000


def test_a_flooding_device_is_throttled_while_the_others_keep_their_throughput(
    make_mosquitto: Any, influxd: Any, influx_db: str, make_ingest: MakeIngest
) -> None:
    mosquitto = make_mosquitto()  # its own: the counts below are exact, no other test's retained
    ingest = make_ingest(
        mosquitto.url,
        influxd.url,
        TAZA_INFLUX_DB=influx_db,
        TAZA_ALERTS_ENABLED="false",
        TAZA_RATE_LIMIT_PER_S=str(RATE),
        TAZA_RATE_LIMIT_BURST=str(BURST),
    ).start()
    flood = fill_messages(1, FLOOD, prefix="rlflood")
    normal = fill_messages(5, 30, prefix="rlok")  # 5 devices × 10 msg/s for 3 s
    told = Subscriber(mosquitto, "taza/v1/_feedback/rlflood-00000")
    flooder = Publisher(mosquitto.host, mosquitto.port, "pub-rlflood")
    others = Publisher(mosquitto.host, mosquitto.port, "pub-rlok")
    try:
        started = time.monotonic()
        t = threading.Thread(target=flooder.publish, args=([(tp, p) for tp, p, _ in flood],))
        t.start()
        others.publish(((tp, p) for tp, p, _ in normal), rate=50)
        t.join()
        flooder.wait_all_acked()
        others.wait_all_acked()
        elapsed = time.monotonic() - started
        total = FLOOD + len(normal)
        wait_until(
            lambda: (
                ingest.metrics().get("taza_messages_received_total") == total
                and ingest.metrics().get("taza_queue_depth") == 0
            ),
            60,
            "every message received and acknowledged",
        )
        m = ingest.metrics()
        limited = m['taza_messages_rejected_total{reason="rate_limited"}']
        stored = m["taza_messages_accepted_total"]
        assert m['taza_rate_limited_total{kind="ecobox"}'] == limited
        assert stored + limited == total
        rows = influxd.query("SELECT count(fill_pct) FROM fill GROUP BY device_id", influx_db)
        counts = {r["device_id"]: r["count"] for r in rows}
        flooder_stored = stored - len(normal)
        assert counts == {f"rlok-{d:05d}": 30 for d in range(5)} | {
            "rlflood-00000": flooder_stored
        }, "every message of the others is stored"
        assert flooder_stored <= BURST + RATE * (elapsed + 1), (flooder_stored, elapsed)
        assert flooder_stored >= BURST, "the burst is allowed"
        records = list(read_records(ingest.data_dir / "deadletter"))
        assert len(records) == limited
        assert {r["reason"] for r in records} == {"rate_limited"}
        assert {r["topic"] for r in records} == {flood[0][0]}
        kept = {decode_payload(r) for r in records}
        assert kept <= {p for _, p, _ in flood}, "each excess message kept whole, replayable"
        (start,) = [e for e in ingest.log_events() if e["event"] == "taza_ingest_started"]
        assert start["rate_limit"] == f"{RATE}/s burst {BURST}"
        assert str(start["inflight_bound"]).startswith("347 MiB"), "the bound is stated at start"
        time.sleep(0.3)
        assert 1 <= len(told.messages) <= 5 + 1, "feedback to the flooder is rate-limited too"
    finally:
        flooder.close()
        others.close()
        told.close()
