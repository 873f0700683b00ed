"""The per-device rate limit (ingest/ratelimit.py) and its place in the pipeline: before the
decode, a dead letter ``rate_limited`` for the excess, other devices untouched. The clock is
passed in (the message's receive time), so these run without sleeping.
End to end, with real servers: test_ratelimit_e2e.py."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime

import pytest

from devices import Reason
from ingest.batch import Batch, Incoming
from ingest.config import load_settings
from ingest.errors import ConfigError
from ingest.metrics import Metrics
from ingest.pipeline import Pipeline, limits_from
from ingest.ratelimit import Buckets, DeviceRateLimit, device_in

FILL = "taza/v1/almaty/ecobox/{}/fill"


def test_a_device_gets_its_burst_then_exactly_its_rate() -> None:
    limit = DeviceRateLimit(10, 5)
    topic = FILL.format("eb-1")
    assert [limit.allow(topic, 100.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert not limit.allow(topic, 100.09), "a token takes 0.1 s to come back"
    assert limit.allow(topic, 100.1)
    allowed = sum(limit.allow(topic, 200.0 + i / 1000) for i in range(10_000))  # 10 s at 1 kHz
    assert allowed in range(5 + 100 - 1, 5 + 100 + 2), allowed  # burst + 10 s × 10/s


def test_a_flooder_does_not_touch_the_others_budget() -> None:
    limit = DeviceRateLimit(10, 5)
    flooded = sum(limit.allow(FILL.format("flood"), 0.0) for _ in range(10_000))
    assert flooded == 5
    assert all(limit.allow(FILL.format(f"eb-{d}"), 0.0) for d in range(100) for _ in range(5))


def test_every_channel_and_bad_topic_of_a_device_shares_its_bucket() -> None:
    limit = DeviceRateLimit(1, 3)
    topics = [
        "taza/v1/almaty/ecobox/eb-1/fill",
        "taza/v1/almaty/ecobox/eb-1/status",
        "taza/v1/Bad_Region/rvm/eb-1/deposit/extra",
    ]
    assert [limit.allow(t, 0.0) for t in topics] == [True] * 3
    assert not limit.allow(topics[0], 0.0)


@pytest.mark.parametrize(
    "topic", ["taza/v1/almaty", "elsewhere/a/b/c/eb-1", "taza/v1/alerts/almaty/eb-1/full", ""]
)
def test_topics_that_name_no_device_are_not_limited(topic: str) -> None:
    limit = DeviceRateLimit(1, 1)
    assert device_in(topic) is None
    assert all(limit.allow(topic, 0.0) for _ in range(100))


def test_bounded_memory_keeps_the_active_flooder_limited() -> None:
    limit = DeviceRateLimit(1, 10, max_devices=1000)
    flood = FILL.format("flood")
    allowed = 0
    for d in range(100_000):  # a fleet 100 × the table, one message each, within 0.1 s
        now = d * 1e-6
        limit.allow(FILL.format(f"eb-{d}"), now)
        if d % 100 == 0:
            allowed += limit.allow(flood, now)
    assert len(limit) <= 1000
    assert allowed <= 10 + 1, "burst + 0.1 s of rate: never a fresh burst from being forgotten"


def test_an_idle_device_is_forgotten_like_one_never_seen() -> None:
    buckets = Buckets(1, 2, max_keys=10)
    for k in range(10):
        buckets.allow(str(k), 0.0)
    buckets.allow("new", 100.0)  # overflow: all ten are idle by now
    assert len(buckets) == 1
    assert buckets.allow("0", 100.0)
    assert buckets.allow("0", 100.0), "a full burst again, as for a device never seen"


def test_a_burst_is_the_whole_burst_at_any_clock_value() -> None:
    """(now + i) + i - now can round to just above 2 i: at some monotonic clock values the
    last message of a burst was refused (seen as a flaky feedback test)."""
    rng = random.Random(1)
    for rate, burst in ((0.001, 3), (0.1, 5), (1.0, 2), (7.0, 10)):
        for _ in range(20_000):
            buckets, now = Buckets(rate, burst, max_keys=10), rng.uniform(0, 1e7)
            assert sum(buckets.allow("k", now) for _ in range(burst + 2)) == burst, (now, rate)
            assert buckets.allow("k", now + 1 / rate), "a token back after one interval"


def _incoming(topic: str, payload: bytes, mid: int) -> Incoming:
    return Incoming(mid, 1, 1, topic, payload, datetime.now(UTC), time.monotonic())


def test_pipeline_rejects_the_excess_before_decoding_and_counts_it_per_kind() -> None:
    metrics = Metrics()
    limit = DeviceRateLimit(0.001, 3, registry=metrics.registry)
    pipeline = Pipeline(metrics, limits=limits_from(4096, 86400, False), rate_limit=limit)
    batch = Batch()
    for i in range(10):  # not JSON at all: a decode would say not_json
        pipeline.process(_incoming("taza/v1/astana/rvm/rvm-1/deposit", b"\xff junk", i), batch)
    ts = int(time.time() * 1000)
    good = b'{"ts": %d, "seq": 1, "fill_pct": 5}' % ts
    pipeline.process(_incoming(FILL.format("eb-2"), good, 11), batch)
    assert [r.reason for r in batch.rejects] == [Reason.NOT_UTF8] * 3 + [Reason.RATE_LIMITED] * 7
    assert batch.rejects[-1].payload == b"\xff junk", "kept whole: replayable"
    assert "rate limit" in batch.rejects[-1].detail
    assert len(batch.messages) == 1
    assert len(batch.acks) == 11, "every message is acknowledged once stored"
    pipeline._count(batch)
    sample = metrics.registry.get_sample_value
    assert sample("taza_rate_limited_total", {"kind": "rvm"}) == 7
    assert sample("taza_rate_limited_total", {"kind": "ecobox"}) == 0


def test_a_configuration_that_could_hold_too_much_in_flight_does_not_start() -> None:
    default = load_settings().inflight
    assert (default.messages, default.bytes // 2**20) == (55_000, 346), "docs/ingest.md's figures"
    with pytest.raises(ConfigError) as info:
        load_settings(max_payload_bytes=262144)
    assert "TAZA_MAX_INFLIGHT_BYTES" in str(info.value)
    assert "TAZA_MQTT_RECEIVE_MAXIMUM" in str(info.value)
    roomy = load_settings(
        max_payload_bytes=262144,
        mqtt_receive_maximum=100,
        batch_max_lines=100,
        max_inflight_bytes=3 << 30,
    )
    assert roomy.inflight.bytes <= roomy.max_inflight_bytes
