"""Unit tests of single ingest modules: config, status mapping, spool, dead-letter store,
delivery (with an in-memory writer) and the pipeline. End to end lives in test_ingest_e2e."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

import devices
from devices import Reason
from ingest.batch import Batch, DeadLetter, Incoming, Source
from ingest.config import load_settings, parse_mqtt_url
from ingest.deadletter import DeadLetterStore, read_records, summarise
from ingest.delivery import Delivery
from ingest.errors import ConfigError, WriteRefused, WriteUnavailable
from ingest.metrics import Metrics
from ingest.pipeline import Pipeline, limits_from
from ingest.spool import Spool
from ingest.writers import classify_status

NOW = datetime.now(UTC)


# -- config ----------------------------------------------------------------------------


def test_mqtt_url_forms() -> None:
    a = parse_mqtt_url("mqtt://user:p%40ss@broker.example:1884")
    assert (a.host, a.port, a.tls, a.username, a.password) == (
        "broker.example",
        1884,
        False,
        "user",
        "p@ss",
    )
    assert parse_mqtt_url("mqtts://h").port == 8883
    assert "p@ss" not in a.redacted()
    for bad in ("http://h", "mqtt://", "mqtt://h:70000", "mqtt://h/path"):
        with pytest.raises(ValueError):  # noqa: PT011 - the message is checked in e2e
            parse_mqtt_url(bad)


def test_env_over_toml_and_all_problems_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "taza.toml"
    toml.write_text('influx_db = "fromfile"\nbatch_max_lines = 100\nmqtt_client_id = "file-id"\n')
    monkeypatch.setenv("TAZA_MQTT_CLIENT_ID", "env-id")
    s = load_settings(toml)
    assert (s.influx_db, s.batch_max_lines, s.mqtt_client_id) == ("fromfile", 100, "env-id")
    toml.write_text('batch_max_lines = 0\ninflux_api = "v9"\nno_such_key = 1\n')
    with pytest.raises(ConfigError) as err:
        load_settings(toml)
    text = str(err.value)
    assert "TAZA_BATCH_MAX_LINES" in text
    assert "TAZA_INFLUX_API" in text
    assert "TAZA_NO_SUCH_KEY" in text
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")


def test_secrets_not_in_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAZA_MQTT_URL", "mqtt://u:secret@h:1883")
    monkeypatch.setenv("TAZA_INFLUX_PASSWORD", "secret2")
    assert "secret" not in str(load_settings().summary())


def test_share_group_subscription(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAZA_MQTT_SHARE_GROUP", "ingest")
    assert load_settings().subscription == "$share/ingest/taza/v1/#"


# -- status mapping ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, WriteRefused),
        (422, WriteRefused),
        (413, WriteRefused),
        (401, WriteUnavailable),
        (403, WriteUnavailable),
        (404, WriteUnavailable),
        (429, WriteUnavailable),
        (500, WriteUnavailable),
        (503, WriteUnavailable),
    ],
)
def test_status_decides_split_or_retry(status: int, kind: type) -> None:
    assert isinstance(classify_status(status, "x"), kind)


# -- spool -------------------------------------------------------------------------------


def _batch(n: int, tag: str = "ok") -> Batch:
    b = Batch()
    for i in range(n):
        b.add_lines(Source(f"t/{i}", f"payload-{i}".encode(), NOW), [f"m,d={tag} v={i}i {i}"])
        b.acks.append((i + 1, 1))
    return b


def test_spool_is_durable_ordered_and_bounded(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=4000)
    assert spool.append(_batch(3, "a"))
    assert spool.append(_batch(2, "b"))
    reopened = Spool(tmp_path, max_bytes=4000)
    assert (reopened.count, reopened.bytes) == (2, spool.bytes)
    first = reopened.oldest()
    assert first is not None
    assert first.lines == [f"m,d=a v={i}i {i}" for i in range(3)]
    assert first.sources[1].payload == b"payload-1"
    reopened.remove(first)
    second = reopened.oldest()
    assert second is not None
    assert second.lines[0].startswith("m,d=b")
    assert not reopened.append(_batch(100, "big")), "over the bound: refused, nothing written"
    assert reopened.count == 1


# -- dead-letter store -------------------------------------------------------------------


def test_deadletter_rotates_keeps_and_reads_back(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path, file_bytes=1 << 16, keep=2)
    for i in range(2000):
        store.append(
            [DeadLetter(f"taza/v1/a/ecobox/d{i % 3}/fill", b"\xff" * 50, Reason.NOT_UTF8, "x", NOW)]
        )
    store.close()
    assert len(list(tmp_path.glob("deadletter-*.jsonl"))) == 2
    records = list(read_records(tmp_path))
    assert 0 < len(records) < 2000
    assert summarise(records)["by_reason"] == {"not_utf8": len(records)}


# -- delivery ----------------------------------------------------------------------------


class MemoryWriter:
    """Refuses any body with a line containing BAD; unavailable while ``down``."""

    description = "memory"

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.down = False
        self.calls = 0

    async def start(self) -> None:
        return None

    async def write(self, body: bytes) -> None:
        self.calls += 1
        if self.down:
            raise WriteUnavailable("down")
        lines = body.decode().splitlines()
        if any("BAD" in x for x in lines):
            raise WriteRefused("HTTP 400: field type conflict", status=400)
        self.lines.extend(lines)

    async def ping(self) -> bool:
        return not self.down

    async def close(self) -> None:
        return None


class ListAcknowledger:
    def __init__(self, acked: list[int]) -> None:
        self.acked = acked

    def ack(self, acks: Sequence[tuple[int, int]]) -> None:
        self.acked.extend(mid for mid, _ in acks)


def _delivery(
    tmp_path: Path, writer: MemoryWriter, acked: list[int], spool_bytes: int = 1 << 20
) -> Delivery:
    return Delivery(
        writer,
        Spool(tmp_path / "spool", spool_bytes),
        DeadLetterStore(tmp_path / "dl"),
        Metrics(),
        ListAcknowledger(acked),
        attempts=2,
        retry_initial_s=0.01,
        retry_max_s=0.02,
    )


async def test_refused_lines_are_isolated_and_dead_lettered(tmp_path: Path) -> None:
    writer, acked = MemoryWriter(), []
    d = _delivery(tmp_path, writer, acked)
    b = _batch(64)
    b.lines[37] = "m,d=BAD v=1i 37"
    assert await d.store(b)
    assert len(writer.lines) == 63
    assert "m,d=BAD v=1i 37" not in writer.lines
    records = list(read_records(tmp_path / "dl"))
    assert [(r["topic"], r["reason"]) for r in records] == [("t/37", "refused_by_database")]


async def test_refusal_recorded_once_when_an_attempt_fails_half_way(tmp_path: Path) -> None:
    """The first half (with the refused line) goes through, then the database drops out:
    the retry redoes the split, and the refused message is still dead-lettered once."""
    writer, acked = MemoryWriter(), []
    d = _delivery(tmp_path, writer, acked)
    b = _batch(8)
    b.lines[1] = "m,d=BAD v=1i 1"
    real_write = writer.write

    async def drop_once_after_first_half(body: bytes) -> None:
        if body.startswith(b"m,d=ok v=4i") and not getattr(writer, "dropped", False):
            writer.dropped = True  # type: ignore[attr-defined]
            raise WriteUnavailable("connection reset")
        await real_write(body)

    writer.write = drop_once_after_first_half  # type: ignore[method-assign]
    assert await d.store(b)
    assert set(writer.lines) == {x for x in b.lines if "BAD" not in x}  # rewrites are idempotent
    records = list(read_records(tmp_path / "dl"))
    assert [r["topic"] for r in records] == ["t/1"]
    assert (
        d.metrics.registry.get_sample_value(
            "taza_messages_rejected_total", {"reason": "refused_by_database"}
        )
        == 1
    )


async def test_database_down_spools_then_replays_in_order(tmp_path: Path) -> None:
    writer, acked = MemoryWriter(), []
    d = _delivery(tmp_path, writer, acked)
    writer.down = True
    queue: asyncio.Queue[Batch | None] = asyncio.Queue()
    for tag in "abc":
        queue.put_nowait(_batch(3, tag))
    queue.put_nowait(None)
    await d.run(queue)
    assert acked == [1, 2, 3] * 3, "acknowledged once durable in the spool"
    assert d.spool.count == 3
    assert not writer.lines
    writer.down = False
    replay = asyncio.create_task(d.replay_forever())
    deadline = time.monotonic() + 5
    while d.spool.count and time.monotonic() < deadline:  # noqa: ASYNC110 - polls the replay task
        await asyncio.sleep(0.01)
    replay.cancel()
    assert [x.split(",d=")[1][0] for x in writer.lines] == list("aaabbbccc")
    assert d.database_up


async def test_spool_full_and_database_down_holds_acks(tmp_path: Path) -> None:
    writer, acked = MemoryWriter(), []
    d = _delivery(tmp_path, writer, acked, spool_bytes=1 << 20)
    d.spool.max_bytes = 10
    writer.down = True
    d.stopping = True  # otherwise it keeps waiting for room, as it should
    assert not await d.store(_batch(3))
    assert acked == []
    assert d.spool_full


# -- pipeline ----------------------------------------------------------------------------


def _incoming(mid: int, topic: str, payload: bytes, retained: bool = False) -> Incoming:
    return Incoming(mid, 1, 7, topic, payload, NOW, time.monotonic(), retained)


def test_pipeline_every_message_acked_once_in_order() -> None:
    metrics = Metrics()
    p = Pipeline(metrics, limits=limits_from(4096, 86400, False))
    b = Batch()
    ts = int(NOW.timestamp() * 1000)
    p.process(
        _incoming(1, "taza/v1/a/ecobox/d1/fill", b'{"ts": %d, "seq": 1, "fill_pct": 5}' % ts), b
    )
    p.process(_incoming(2, "taza/v1/a/ecobox/d1/fill", b"nope"), b)
    p.process(_incoming(3, "taza/v1/alerts/a/ecobox/d1", b"{}"), b)
    p.process(_incoming(4, "taza/v1/a/ecobox/d1/state", b"online", retained=True), b)
    p.process(_incoming(5, "taza/v1/a/ecobox/d1/state", b"online"), b)
    assert [mid for mid, _ in b.acks] == [1, 2, 3, 4, 5]
    assert [r.reason for r in b.rejects] == [Reason.NOT_JSON]
    assert len(b.sources) == 2, (
        "the fill and the live state; the replayed retained state is skipped"
    )
    assert metrics.registry.get_sample_value("taza_messages_ignored_total") == 2


def test_pipeline_fills_a_batch_as_batch_add_accepted_does() -> None:
    """The pipeline inlines ``Batch.add_accepted``: the same columns, lines and origins (a
    deposit has a line per item, so origins repeat), whichever builds the batch."""
    p = Pipeline(Metrics(), limits=limits_from(4096, 86400, False))
    ts = int(NOW.timestamp() * 1000)
    incoming = [
        _incoming(1, "taza/v1/a/ecobox/d1/fill", b'{"ts": %d, "seq": 1, "fill_pct": 5}' % ts),
        _incoming(
            2,
            "taza/v1/a/rvm/r1/deposit",
            b'{"ts": %d, "seq": 2, "txn_id": "t1", "items": [{"material": "pet", "count": 2},'
            b' {"material": "alu", "count": 1}]}' % ts,
        ),
        _incoming(3, "taza/v1/a/ecobox/d1/state", b"online"),
    ]
    by_pipeline, by_hand = Batch(), Batch()
    for msg in incoming:
        p.process(msg, by_pipeline)
    for msg, message in zip(incoming, by_pipeline.messages, strict=True):
        by_hand.acks.append((msg.mid, msg.generation))
        by_hand.add_accepted(msg, devices.encode(message, None), message, None)
    by_hand.first_received = by_pipeline.first_received
    assert len(set(by_pipeline.origins)) == 3 < len(by_pipeline.origins)
    assert by_pipeline == by_hand


def test_pipeline_keeps_each_state_change_of_one_receive_buffer() -> None:
    """offline → online → offline of one device read in one buffer share a receive time; each
    is a point of its own (1 ms apart, in order), another device's state is left as it is."""
    p = Pipeline(Metrics(), limits=limits_from(4096, 86400, False))
    b = Batch()
    for mid, (device, state) in enumerate(
        [("d1", "offline"), ("d1", "online"), ("d2", "online"), ("d1", "offline")], 1
    ):
        p.process(_incoming(mid, f"taza/v1/a/ecobox/{device}/state", state.encode()), b)
    ms = int(NOW.timestamp() * 1000)
    points = [line.rsplit(" ", 1) for line in b.lines]
    assert [(head.split(",")[1], body_ts) for head, body_ts in points] == [
        ("device_id=d1", str((ms + 0) * 1_000_000)),
        ("device_id=d1", str((ms + 1) * 1_000_000)),
        ("device_id=d2", str(ms * 1_000_000)),
        ("device_id=d1", str((ms + 2) * 1_000_000)),
    ]


def test_config_command_hides_every_secret(tmp_path: Path) -> None:
    import subprocess
    import sys

    toml = tmp_path / "t.toml"
    toml.write_text(
        'mqtt_url = "mqtt://u:pw-1@h:1883"\ninflux_password = "pw-2"\ninflux_token = "pw-3"\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "ingest", "--config", str(toml), "config"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "pw-" not in out
    assert "mqtt://u:***@h:1883" in out
