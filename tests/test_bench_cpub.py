"""bench/compare.py's fleet stream: bench/cpub, built from source, publishes every line at QoS 1
on its own device's topic, in each device's order, with the payload's ``device_id`` the
topic's — what the ceiling and every contender then receive (a real mosquitto)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from types import ModuleType

import pytest

from devstack.publisher import fleet_fill_payloads
from devstack.servers import Mosquitto, find_binary
from tests.conftest import REPO

pytestmark = pytest.mark.integration


def compare_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_compare", REPO / "bench" / "compare.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_compare"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_cpub_publishes_each_device_on_its_topic_in_order(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    compare = compare_module()
    devices, per = 8, 6
    mix = compare.Mix(fleet_fill_payloads(devices, per), devices)
    compare.Publishers.cpub = compare.cpub_binary(tmp_path)
    sub = subprocess.Popen(
        [find_binary("mosquitto_sub"), "-h", mosquitto.host, "-p", str(mosquitto.port),
         "-q", "1", "-v", "-t", "taza/v1/cpubtest/#", "-C", str(len(mix))],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(0.4)  # subscribed
        pubs = compare.Publishers(mosquitto, "cp", mix, region="cpubtest")
        pubs.feed()
        out, _ = sub.communicate(timeout=30)
        pubs.close()
    finally:
        sub.kill()
    got: dict[str, list[dict[str, object]]] = defaultdict(list)
    for line in out.splitlines():
        topic, payload = line.split(" ", 1)
        got[topic].append(json.loads(payload))
    assert len(got) == devices
    for d in range(devices):
        topic = f"taza/v1/cpubtest/ecobox/cp-{d:05d}/fill"
        readings = got[topic]
        assert len(readings) == per, topic
        seqs = [r["seq"] for r in readings]
        assert seqs == sorted(seqs), f"{topic}: out of order {seqs}"
        for r in readings:
            assert r.get("device_id", f"cp-{d:05d}") == f"cp-{d:05d}"
