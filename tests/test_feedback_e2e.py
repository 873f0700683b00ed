"""Device feedback end to end: real mosquitto, real taza-ingest, real influxd.

A device subscribed to its own feedback topic only receives the rejection of its own message
(after its dead letter is on disk), and another device's topic receives nothing of it. The
ACL that keeps a device from subscribing to someone else's feedback topic is the broker
profile's (tested there); here both subscribers are honest.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from devstack.ingest_process import wait_until
from devstack.publisher import Publisher
from ingest.deadletter import read_records
from tests.conftest import MakeIngest
from tests.test_sim_run import Subscriber

pytestmark = pytest.mark.integration


def test_a_device_gets_feedback_for_its_own_rejected_message_and_no_other(
    mosquitto: Any, influxd: Any, influx_db: str, make_ingest: MakeIngest
) -> None:
    ingest = make_ingest(
        mosquitto.url, influxd.url, TAZA_INFLUX_DB=influx_db, TAZA_ALERTS_ENABLED="false"
    ).start()
    a = Subscriber(mosquitto, "taza/v1/_feedback/fbk-a")
    b = Subscriber(mosquitto, "taza/v1/_feedback/fbk-b")
    pub = Publisher(mosquitto.host, mosquitto.port, "pub-feedback")
    try:
        ts = int(time.time() * 1000)
        bad_a = json.dumps({"ts": ts, "seq": 7, "fill_pct": "62.5"}).encode()
        pub.publish([("taza/v1/almaty/ecobox/fbk-a/fill", bad_a)])
        (got,) = a.wait_for(1)
        records = list(read_records(ingest.data_dir / "deadletter"))
        assert [r["topic"] for r in records] == ["taza/v1/almaty/ecobox/fbk-a/fill"], (
            "the dead letter is on disk before the feedback leaves"
        )
        topic, payload, retained = got
        assert (topic, retained) == ("taza/v1/_feedback/fbk-a", False)
        doc = json.loads(payload)
        assert doc["reason"] == "wrong_type"
        assert doc["field"] == "fill_pct"
        assert "62.5" in doc["detail"]
        assert (doc["seq"], doc["ts"]) == (7, ts)
        assert doc["topic"] == "taza/v1/almaty/ecobox/fbk-a/fill"

        good_a = json.dumps({"ts": ts + 1, "seq": 8, "fill_pct": 62.5}).encode()
        pub.publish(
            [
                ("taza/v1/almaty/ecobox/fbk-a/fill", good_a),  # stored: no feedback
                ("taza/v1/almaty/ecobox/fbk-b/fill", b"{not json"),
            ]
        )
        (got_b,) = b.wait_for(1)
        assert json.loads(got_b[1])["reason"] == "not_json"
        assert "seq" not in json.loads(got_b[1])
        time.sleep(0.5)  # anything else in flight would have arrived by now
        assert len(a.messages) == 1, "a's topic got nothing of b's rejection nor its own good one"
        assert len(b.messages) == 1, "b's topic got nothing of a's rejection"
        m = ingest.metrics()
        assert m["taza_feedback_published_total"] == 2
        assert m['taza_messages_rejected_total{reason="wrong_type"}'] == 1
        wait_until(
            lambda: bool(influxd.query("SELECT count(fill_pct) FROM fill", db=influx_db)),
            20,
            "a's good message stored",
        )
    finally:
        pub.close()
        a.close()
        b.close()
