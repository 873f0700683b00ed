"""Device feedback (ingest/feedback.py): what a device is told about its rejected message, on
which topic, within which limits, and only once the dead letter is stored. The publisher here
records calls (a fake of the intake's ``publish``); with the real broker: test_feedback_e2e.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from devices import Reason
from ingest.batch import Batch, DeadLetter
from ingest.deadletter import DeadLetterStore
from ingest.delivery import Delivery
from ingest.feedback import Feedback
from ingest.metrics import Metrics
from ingest.spool import Spool
from tests.test_faults_units import FailingAppends, ScriptedWriter

RECEIVED = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
Sent = list[tuple[str, dict[str, object], int, bool]]


def _feedback(sent: Sent, metrics: Metrics | None = None, **kw: float) -> Feedback:
    def publish(topic: str, payload: bytes, qos: int, retain: bool) -> None:
        sent.append((topic, orjson.loads(payload), qos, retain))

    limits = {"rate_per_s": 1.0, "burst": 3, "total_per_s": 1000.0} | kw
    return Feedback(
        publish,
        rate_per_s=limits["rate_per_s"],
        burst=int(limits["burst"]),
        total_per_s=limits["total_per_s"],
        registry=(metrics or Metrics()).registry,
    )


def _letter(
    topic: str, payload: bytes, reason: Reason, detail: str = "d", field: str | None = None
) -> DeadLetter:
    return DeadLetter(topic, payload, reason, detail, RECEIVED, field)


def test_a_device_is_told_its_own_reason_detail_field_seq_and_ts() -> None:
    sent: Sent = []
    fb = _feedback(sent)
    fb.send(
        [
            _letter(
                "taza/v1/almaty/ecobox/eb-0042/fill",
                b'{"ts": "2026-05-01T11:59:30Z", "seq": 18231, "fill_pct": "62.5"}',
                Reason.WRONG_TYPE,
                "fill_pct must be a number, got string '62.5'",
                "fill_pct",
            ),
            _letter("taza/v1/astana/rvm/rvm-7/deposit", b"\xff\xfe", Reason.NOT_UTF8),
        ]
    )
    assert sent == [
        (
            "taza/v1/_feedback/eb-0042",
            {
                "reason": "wrong_type",
                "detail": "fill_pct must be a number, got string '62.5'",
                "field": "fill_pct",
                "topic": "taza/v1/almaty/ecobox/eb-0042/fill",
                "received_at": "2026-05-01T12:00:00+00:00",
                "seq": 18231,
                "ts": "2026-05-01T11:59:30Z",
            },
            0,
            False,
        ),
        (
            "taza/v1/_feedback/rvm-7",
            {
                "reason": "not_utf8",
                "detail": "d",
                "field": None,
                "topic": "taza/v1/astana/rvm/rvm-7/deposit",
                "received_at": "2026-05-01T12:00:00+00:00",
            },
            0,
            False,
        ),
    ]


@pytest.mark.parametrize(
    ("topic", "device"),
    [
        ("taza/v1/Almaty/ecobox/eb-1/fill", "eb-1"),  # bad region: still eb-1's message
        ("taza/v1/almaty/bin/eb-1/fill", "eb-1"),  # bad kind
        ("taza/v1/almaty/ecobox/eb-1/deposit", "eb-1"),  # bad channel
        ("taza/v1/almaty/ecobox/eb-1/fill/extra", "eb-1"),  # an extra level
        ("taza/v1/almaty/ecobox", None),  # too short: names nobody
        ("taza/v1/almaty/ecobox/eb 1/fill", None),  # not a device id
        ("taza/v1/almaty/ecobox/+x/fill", None),
        ("elsewhere/v1/almaty/ecobox/eb-1/fill", None),
    ],
)
def test_which_rejections_name_a_device(topic: str, device: str | None) -> None:
    sent: Sent = []
    metrics = Metrics()
    _feedback(sent, metrics).send([_letter(topic, b"{}", Reason.BAD_TOPIC)])
    assert [s[0] for s in sent] == ([f"taza/v1/_feedback/{device}"] if device else [])
    no_device = metrics.registry.get_sample_value(
        "taza_feedback_suppressed_total", {"why": "no_device"}
    )
    assert no_device == (0 if device else 1)


def test_per_device_and_total_limits_are_counted_and_spare_the_others() -> None:
    sent: Sent = []
    metrics = Metrics()
    fb = _feedback(sent, metrics, rate_per_s=0.001, burst=3, total_per_s=5)
    flood = [_letter("taza/v1/a/ecobox/flood/fill", b"x", Reason.NOT_JSON)] * 100
    fb.send(flood)
    fb.send([_letter("taza/v1/a/ecobox/eb-2/fill", b"x", Reason.NOT_JSON)])
    assert [s[0] for s in sent] == ["taza/v1/_feedback/flood"] * 3 + ["taza/v1/_feedback/eb-2"]
    fb.send([_letter(f"taza/v1/a/ecobox/d{i}/fill", b"x", Reason.NOT_JSON) for i in range(10)])
    assert len(sent) == 5, "the total budget (5 at once) is spent"
    sample = metrics.registry.get_sample_value
    assert sample("taza_feedback_published_total") == 5
    assert sample("taza_feedback_suppressed_total", {"why": "device_rate"}) == 97
    assert sample("taza_feedback_suppressed_total", {"why": "total_rate"}) == 9


def test_database_and_internal_errors_tell_nothing_of_other_devices() -> None:
    sent: Sent = []
    other = 'max-values-per-tag limit exceeded: tag="device_id" value="eb-SECRET-NEIGHBOUR"'
    _feedback(sent).send(
        [
            _letter("taza/v1/a/ecobox/eb-1/fill", b"{}", Reason.REFUSED_BY_DATABASE, other),
            _letter("taza/v1/a/ecobox/eb-1/fill", b"{}", Reason.INTERNAL_ERROR, "KeyError: x"),
        ]
    )
    details = [str(doc["detail"]) for _, doc, _, _ in sent]
    assert len(details) == 2
    assert not any("SECRET" in d or "KeyError" in d for d in details)


def test_a_publish_that_raises_is_counted_not_propagated() -> None:
    metrics = Metrics()

    def broken(topic: str, payload: bytes, qos: int, retain: bool) -> None:
        raise ConnectionResetError("socket closing")

    fb = Feedback(broken, rate_per_s=1, burst=1, total_per_s=10, registry=metrics.registry)
    fb.send([_letter("taza/v1/a/ecobox/eb-1/fill", b"{}", Reason.NOT_JSON)])
    assert (
        metrics.registry.get_sample_value(
            "taza_feedback_suppressed_total", {"why": "publish_failed"}
        )
        == 1
    )


class Acks:
    def __init__(self, acked: list[int]) -> None:
        self.acked = acked

    def ack(self, acks: Sequence[tuple[int, int]]) -> None:
        self.acked.extend(mid for mid, _ in acks)


async def test_feedback_leaves_only_after_the_dead_letter_is_stored(tmp_path: Path) -> None:
    path = tmp_path
    sent: Sent = []
    fb = _feedback(sent)
    failing = FailingAppends(DeadLetterStore(path / "dl"), failures=10**6)
    acked: list[int] = []
    delivery = Delivery(
        ScriptedWriter([]),
        Spool(path / "spool", 1 << 20),
        failing,  # type: ignore[arg-type]
        Metrics(),
        Acks(acked),
        republish=fb.send,
        hold_retry_s=0.05,
    )
    batch = Batch()
    batch.rejects.append(_letter("taza/v1/a/ecobox/eb-1/fill", b"nope", Reason.NOT_JSON))
    batch.acks.append((1, 1))
    queue: asyncio.Queue[Batch | None] = asyncio.Queue()
    await queue.put(batch)
    await queue.put(None)
    task = asyncio.create_task(delivery.run(queue))
    await asyncio.sleep(0.3)
    assert sent == [], "the disk refuses the dead letter: no feedback yet"
    assert acked == []
    failing.failures = 0
    await asyncio.wait_for(task, 5)
    assert [s[0] for s in sent] == ["taza/v1/_feedback/eb-1"]
    assert acked == [1]
