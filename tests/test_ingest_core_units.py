"""Unit tests of the message path's seams: the delivered-messages sink behind Delivery, and
the watchdog behind /healthz (with a fake clock)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devices import DeviceInfo, Registry
from ingest.batch import Accepted, Batch, Delivered, Incoming
from ingest.deadletter import DeadLetterStore, read_records
from ingest.delivery import Delivery
from ingest.metrics import Metrics
from ingest.pipeline import Pipeline, limits_from
from ingest.spool import Spool
from ingest.watchdog import Watchdog
from tests.test_ingest_units import ListAcknowledger, MemoryWriter

NOW = datetime.now(UTC)
TS = int(NOW.timestamp() * 1000)


class RecordingSink:
    """Records what it is given, and what was stored and acked at that moment: (acks sent,
    lines in the database, batches in the spool)."""

    def __init__(self, writer: MemoryWriter, spool: Spool, acked: list[int]) -> None:
        self.writer, self.spool, self.acked = writer, spool, acked
        self.seen: list[tuple[str, int | None]] = []
        self.state_at_call: list[tuple[int, int, int]] = []

    async def delivered(self, messages: Sequence[Accepted]) -> None:
        for a in messages:
            self.seen.append((a.message.topic.device_id, a.message.seq))
        spooled = sum(1 for _ in self.spool.directory.glob("*.spool"))
        self.state_at_call.append((len(self.acked), len(self.writer.lines), spooled))


def _batch(pipeline: Pipeline, start: int, seqs: list[int], bad: int = 0) -> Batch:
    batch = Batch()
    mid = start
    for seq in seqs:
        payload = b'{"ts": %d, "seq": %d, "fill_pct": 5}' % (TS + seq, seq)
        topic = f"taza/v1/a/ecobox/d{seq % 3}/fill"
        pipeline.process(Incoming(mid, 1, 1, topic, payload, NOW, time.monotonic()), batch)
        mid += 1
    for _ in range(bad):
        pipeline.process(Incoming(mid, 1, 1, "taza/v1/a/ecobox/d1/fill", b"x", NOW, 0.0), batch)
        mid += 1
    return batch


async def test_sink_sees_every_stored_message_once_in_order_after_it_is_durable_before_its_ack(
    tmp_path: Path,
) -> None:
    writer, acked = MemoryWriter(), []
    spool = Spool(tmp_path / "spool", 1 << 20)
    sink = RecordingSink(writer, spool, acked)
    delivery = Delivery(
        writer,
        spool,
        DeadLetterStore(tmp_path / "dl"),
        Metrics(),
        ListAcknowledger(acked),
        sink=sink,
        attempts=1,
        retry_initial_s=0.01,
    )
    pipeline = Pipeline(Metrics(), limits=limits_from(4096, 86400, False))
    queue: asyncio.Queue[Batch | None] = asyncio.Queue()
    queue.put_nowait(_batch(pipeline, 1, [1, 2, 3]))
    queue.put_nowait(_batch(pipeline, 10, [4, 5], bad=2))  # rejects are not passed on
    queue.put_nowait(None)
    await delivery.run(queue)
    writer.down = True  # the next batch goes to the spool: durable too
    queue.put_nowait(_batch(pipeline, 20, [6]))
    queue.put_nowait(None)
    await delivery.run(queue)
    assert sink.seen == [(f"d{s % 3}", s) for s in (1, 2, 3, 4, 5, 6)]
    # Each call comes once the batch is stored (lines written, or spooled) and before its own
    # PUBACK: only the earlier batches are acknowledged then. (The next batch may be stored
    # already: a store runs beside the sink.)
    assert [acks for acks, _, _ in sink.state_at_call] == [0, 3, 7], "before its ack"
    stored_then = [(lines >= need, spooled) for (_, lines, spooled), need in
                   zip(sink.state_at_call, (3, 5, 5), strict=True)]  # fmt: skip
    assert stored_then == [(True, 0), (True, 0), (True, 1)], "after its store"
    assert acked == [1, 2, 3, 10, 11, 12, 13, 20]

    # Spool full, database down, stopping: the batch is not stored — the sink never sees it.
    spool.max_bytes = spool.bytes
    delivery.stopping = True
    queue.put_nowait(_batch(pipeline, 30, [7, 8]))
    queue.put_nowait(None)
    await delivery.run(queue)
    assert [s for _, s in sink.seen] == [1, 2, 3, 4, 5, 6]
    assert 30 not in acked


async def test_the_next_batch_is_stored_while_the_sink_takes_one_and_no_further(
    tmp_path: Path,
) -> None:
    """The sink's work overlaps the next batch's write, and only that one: a sink that
    stalls holds the stores back after one batch, and nothing is acknowledged past it."""
    writer, acked = MemoryWriter(), []
    gate = asyncio.Event()
    sunk: list[int] = []

    class StallingSink:
        async def delivered(self, messages: Sequence[Accepted]) -> None:
            await gate.wait()
            sunk.append(len(messages))

    delivery = Delivery(writer, Spool(tmp_path / "spool", 1 << 20),
                        DeadLetterStore(tmp_path / "dl"), Metrics(), ListAcknowledger(acked),
                        sink=StallingSink(), attempts=1)  # fmt: skip
    pipeline = Pipeline(Metrics(), limits=limits_from(4096, 86400, False))
    queue: asyncio.Queue[Batch | None] = asyncio.Queue()
    for b in range(4):
        queue.put_nowait(_batch(pipeline, 10 * b, [b + 1]))
    queue.put_nowait(None)
    run = asyncio.create_task(delivery.run(queue))
    for _ in range(50):
        await asyncio.sleep(0)
    assert len(writer.lines) == 2, "the first batch at the sink, the second stored beside it"
    assert acked == []
    assert delivery.in_hand
    gate.set()
    await asyncio.wait_for(run, 5)
    assert len(writer.lines) == 4
    assert sunk == [1, 1, 1, 1]
    assert acked == [0, 10, 20, 30]
    assert not delivery.in_hand
    assert delivery.handled == 4


async def test_the_batch_carries_each_accepted_message_decoded_with_its_source() -> None:
    pipeline = Pipeline(Metrics(), limits=limits_from(4096, 86400, False))
    batch = _batch(pipeline, 1, [1, 2], bad=1)
    delivered = batch.delivered()
    assert len(delivered) == len(batch.sources) == 2
    for accepted, source in zip(delivered, batch.sources, strict=True):
        assert accepted.source is source
        assert source.topic.endswith(f"/{accepted.message.topic.device_id}/fill")
        assert accepted.device is None  # no registry


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_watchdog_flags_a_busy_stage_without_progress_and_only_that() -> None:
    clock = Clock()
    dog = Watchdog(stall_s=10, clock=clock)
    work = {"queued": 0, "done": 0, "holding": None}
    dog.watch(
        "delivery",
        busy=lambda: work["queued"] > 0,
        progress=lambda: int(work["done"] or 0),
        holding=lambda: work["holding"],  # type: ignore[return-value,arg-type]
    )
    clock.now = 100
    assert dog.check() == (True, {"delivery": {"state": "idle"}}), "idle is never stuck"
    work["queued"] = 5
    clock.now = 105
    assert dog.check()[0]
    work["done"] = 1
    clock.now = 114
    assert dog.check()[0], "it moved at 114"
    clock.now = 125
    healthy, stages = dog.check()
    assert not healthy
    assert stages["delivery"]["state"] == "stuck"
    assert "no progress for 11s" in str(stages["delivery"]["why"])
    work["holding"] = "spool full"  # type: ignore[assignment]
    assert dog.check() == (True, {"delivery": {"state": "holding", "why": "spool full"}})
    work["holding"] = None
    dog.failed("delivery", "RuntimeError: boom")
    assert dog.check() == (False, {"delivery": {"state": "failed", "why": "RuntimeError: boom"}})


async def test_pipeline_cancelled_as_a_message_arrives_ends_and_keeps_the_message() -> None:
    """The 3.11 ``wait_for`` race: cancellation delivered in the same loop round as the item
    the pipeline waits for. ``wait_for`` returned the item and dropped the cancellation, so a
    failed service's TaskGroup waited for ever on a pipeline that went on running."""
    pipeline = Pipeline(Metrics(), limits=limits_from(4096, 86400, False), max_age_s=60)
    intake: asyncio.Queue[Incoming | None] = asyncio.Queue()
    out: asyncio.Queue[Batch | None] = asyncio.Queue()
    payload = b'{"ts": %d, "seq": 1, "fill_pct": 5}' % TS
    msg = Incoming(1, 1, 1, "taza/v1/a/ecobox/d1/fill", payload, NOW, time.monotonic())
    task = asyncio.create_task(pipeline.run(intake, out))
    intake.put_nowait(msg)
    while pipeline.processed < 1:  # noqa: ASYNC110 - steps the pipeline into its timed wait
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    intake.put_nowait(msg)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=1)
    assert done, "the pipeline swallowed its cancellation"
    assert task.cancelled()
    assert intake.qsize() == 1, "the message it did not take is still queued"


async def test_a_message_the_database_refused_is_dead_lettered_and_not_passed_on(
    tmp_path: Path,
) -> None:
    writer, acked = MemoryWriter(), []
    spool = Spool(tmp_path / "spool", 1 << 20)
    sink = RecordingSink(writer, spool, acked)
    dead = DeadLetterStore(tmp_path / "dl")
    delivery = Delivery(
        writer, spool, dead, Metrics(), ListAcknowledger(acked), sink=sink, attempts=1
    )
    pipeline = Pipeline(Metrics(), limits=limits_from(4096, 86400, False))
    batch = Batch()
    for mid, device in enumerate(["d1", "dBAD", "d2"], start=1):
        payload = b'{"ts": %d, "seq": %d, "fill_pct": 5}' % (TS + mid, mid)
        topic = f"taza/v1/a/ecobox/{device}/fill"
        pipeline.process(Incoming(mid, 1, 1, topic, payload, NOW, time.monotonic()), batch)
    queue: asyncio.Queue[Batch | None] = asyncio.Queue()
    queue.put_nowait(batch)
    queue.put_nowait(None)
    await delivery.run(queue)
    dead.close()
    assert acked == [1, 2, 3]
    assert sink.seen == [("d1", 1), ("d2", 3)], "the refused message is not fleet state"
    records = list(read_records(tmp_path / "dl"))
    assert [r["reason"] for r in records] == ["refused_by_database"]
    assert "/dBAD/" in str(records[0]["topic"])


async def test_a_failing_sink_leaves_its_batch_unacknowledged(tmp_path: Path) -> None:
    """The sink's record (the fleet journal) comes before the PUBACK: if it cannot be made,
    the broker keeps the messages and redelivers them to the next run."""

    class Broken:
        async def delivered(self, messages: Sequence[Accepted]) -> None:
            raise OSError("journal: no space left on device")

    writer, acked = MemoryWriter(), []
    delivery = Delivery(
        writer,
        Spool(tmp_path / "spool", 1 << 20),
        DeadLetterStore(tmp_path / "dl"),
        Metrics(),
        ListAcknowledger(acked),
        sink=Broken(),
        attempts=1,
    )
    pipeline = Pipeline(Metrics(), limits=limits_from(4096, 86400, False))
    queue: asyncio.Queue[Batch | None] = asyncio.Queue()
    queue.put_nowait(_batch(pipeline, 1, [1, 2]))
    with pytest.raises(OSError, match="journal"):
        await delivery.run(queue)
    assert len(writer.lines) == 2, "stored"
    assert acked == [], "but not acknowledged"


def test_a_message_that_trips_a_bug_is_dead_lettered_not_fatal() -> None:
    """Were the pipeline to fail on it, the broker would redeliver the same message to every
    restart; as a dead letter (internal_error) it is kept, acknowledged and replayable. The
    bug here is in the registry the pipeline is given (the compiled pipeline calls decode
    directly, so a patched ``devices.decode`` would not be reached)."""

    class BuggyRegistry(Registry):
        def get(self, device_id: str, default: object = None) -> DeviceInfo | None:  # type: ignore[override]
            if device_id == "boom":
                raise KeyError("a bug in the registry")
            return None

    pipeline = Pipeline(Metrics(), limits=limits_from(4096, 86400, False), registry=BuggyRegistry())
    batch = _batch(pipeline, 1, [1, 2])
    payload = b'{"ts": %d, "seq": 1, "fill_pct": 5}' % TS
    pipeline.process(Incoming(9, 1, 1, "taza/v1/a/ecobox/boom/fill", payload, NOW, 0.0), batch)
    assert len(batch.acks) == 3, "acknowledged like any other message once stored"
    assert [d.reason.value for d in batch.rejects] == ["internal_error"]
    assert "KeyError" in batch.rejects[0].detail
    assert len(batch.messages) == 2


async def test_delivered_reads_as_the_accepted_messages_without_those_the_database_refused() -> (
    None
):
    pipeline = Pipeline(Metrics(), limits=limits_from(4096, 86400, False))
    batch = _batch(pipeline, 1, [1, 2, 3, 4])
    batch.refused = {1, 3}
    delivered = batch.delivered()
    kept = [batch.sources[0], batch.sources[2]]
    assert len(delivered) == 2
    assert [a.source for a in delivered] == kept == delivered.sources
    assert [a.message for a in delivered] == [batch.messages[0], batch.messages[2]]
    assert delivered[1].source is batch.sources[2]
    assert delivered[-1] == list(delivered)[-1]
    assert [a.source for a in delivered[1:]] == [batch.sources[2]]
    assert Delivered.of(list(delivered)).sources == kept
