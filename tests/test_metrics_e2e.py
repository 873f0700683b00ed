"""/metrics of the real service when a stage wedges: what the TazaStageStuck alert keys on.

A real mosquitto and influxd, a real taza-ingest whose writer hangs (``tests/faulty_ingest.py``,
the fixture of tests/test_ingest_core.py) and real QoS 1 traffic.
"""

from __future__ import annotations

from typing import Any

import pytest

from devstack.ingest_process import wait_until
from tests import test_ingest_core as core

pytestmark = pytest.mark.integration

make_faulty = core.make_faulty  # the fixture, under its own name


def test_stuck_stage_on_metrics(mosquitto: Any, make_faulty: core.MakeFaulty) -> None:
    env = {"FAULT_AFTER_S": "2", "TAZA_STALL_TIMEOUT_S": "3", "TAZA_DRAIN_TIMEOUT_S": "2"}
    ingest = make_faulty("delivery-hang", **env).start()
    stuck = 'taza_stage_stuck{stage="delivery"}'
    before = ingest.metrics()
    assert before[stuck] == 0
    assert before["taza_ready"] == 1
    with core.traffic(mosquitto, "stuck-metric"):
        wait_until(lambda: ingest.metrics()[stuck] == 1, 20, "delivery stuck on /metrics")
        m = ingest.metrics()
        assert m['taza_stage_seconds_since_progress{stage="delivery"}'] > 3
        assert m['taza_stage_stuck{stage="pipeline"}'] == 0  # it only waits for delivery
        assert m['taza_stage_holding{stage="delivery"}'] == 0
