"""Unit tests of delivery under faults: the reply/exception boundary of both writers (over
real HTTP, from the fault proxy), Retry-After, stores that cannot write, torn dead-letter
lines, unreadable spool files and InfluxDB limit refusals. End to end: test_faults_e2e."""

from __future__ import annotations

import asyncio
import errno
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import orjson
import pytest
from structlog.testing import capture_logs

from devices import Reason
from ingest.batch import Batch, DeadLetter, Source
from ingest.config import load_settings
from ingest.deadletter import DeadLetterStore, read_records, scan
from ingest.delivery import Delivery
from ingest.errors import StoreUnwritable, WriteRefused, WriteUnavailable
from ingest.metrics import Metrics
from ingest.spool import Spool
from ingest.writers import V1Writer, V2Writer, Writer, classify_status, retry_after_s
from ingest.writers.base import RETRY_AFTER_MAX_S
from tests.faultproxy import Fault, FaultProxy

NOW = datetime.now(UTC)
LATIN1_PAGE = "<html><body><h1>503 Service indisponible</h1>Réessayez après la maintenance".encode(
    "latin-1"
)
HTML_503 = Fault(
    status=503,
    body=LATIN1_PAGE,
    headers={"Content-Type": "text/html; charset=iso-8859-1", "Retry-After": "7"},
)
LIMIT_BODY = (
    b'{"error":"partial write: max-values-per-tag limit exceeded (50/50): '
    b'measurement=\\"fill\\" tag=\\"device_id\\" value=\\"eb-00061\\" dropped=3"}\n'
)


# -- the boundary: a status and raw body become a decision --------------------------------


def test_error_page_in_latin1_is_shown_not_raised() -> None:
    err = classify_status(503, LATIN1_PAGE, {"content-type": "text/html", "retry-after": "7"})
    assert isinstance(err, WriteUnavailable)
    assert "R\ufffdessayez" in err.message, "undecodable bytes shown as replacement characters"
    assert err.retry_after == 7


def test_retry_after_seconds_date_cap_and_garbage() -> None:
    now = time.time()
    in_30s = format_datetime(datetime.fromtimestamp(now + 30, UTC), usegmt=True)
    assert retry_after_s("2") == 2
    assert retry_after_s(in_30s, now=now) == pytest.approx(30, abs=1)
    assert retry_after_s("86400") == RETRY_AFTER_MAX_S
    assert retry_after_s(format_datetime(NOW - timedelta(hours=1), usegmt=True)) == 0
    assert retry_after_s("soon") is None
    assert retry_after_s(None) is None
    assert classify_status(429, b"", {"Retry-After": "3"}).retry_after == 3  # type: ignore[attr-defined]
    assert classify_status(500, b"", {"Retry-After": "3"}).retry_after is None  # type: ignore[attr-defined]


def test_limit_refusal_is_parsed_from_influx_reply() -> None:
    err = classify_status(400, LIMIT_BODY)
    assert isinstance(err, WriteRefused)
    assert err.dropped == 3
    assert err.limit is not None
    assert (err.limit.setting, err.limit.measurement, err.limit.tag, err.limit.value) == (
        "max-values-per-tag",
        "fill",
        "device_id",
        "eb-00061",
    )


# -- both writers, over real HTTP from the fault proxy ------------------------------------


def _writer(api: str, url: str) -> Writer:
    settings = load_settings(
        influx_api=api, influx_url=url, influx_timeout_s=0.5, influx_create_db=False
    )
    return V1Writer(settings) if api == "v1" else V2Writer(settings)


@pytest.mark.parametrize("api", ["v1", "v2"])
async def test_every_reply_and_failure_of_a_writer_is_a_decision(api: str) -> None:
    with FaultProxy(None) as proxy:
        writer = _writer(api, proxy.url)
        try:
            proxy.inject(HTML_503)
            with pytest.raises(WriteUnavailable) as unavailable:
                await writer.write(b"m v=1 1\n")
            assert unavailable.value.retry_after == 7
            assert "R\ufffdessayez" in unavailable.value.message

            proxy.inject(Fault(status=429, headers={"Retry-After": "2"}))
            with pytest.raises(WriteUnavailable) as throttled:
                await writer.write(b"m v=1 1\n")
            assert throttled.value.retry_after == 2

            proxy.inject(Fault(status=400, body=LIMIT_BODY))
            with pytest.raises(WriteRefused) as refused:
                await writer.write(b"m v=1 1\n")
            assert refused.value.limit is not None
            assert refused.value.dropped == 3

            proxy.inject(Fault(status=502, body=b"\xff\xfe\x00garbage"))
            with pytest.raises(WriteUnavailable):
                await writer.write(b"m v=1 1\n")

            for fault in (Fault(reset=True), Fault(hang_s=2)):
                proxy.inject(fault)
                with pytest.raises(WriteUnavailable):
                    await writer.write(b"m v=1 1\n")
        finally:
            await writer.close()
        assert [s.action for s in proxy.writes()] == [
            "status",
            "status",
            "status",
            "status",
            "reset",
            "hang",
        ]


# -- delivery: Retry-After, stores that cannot write ---------------------------------------


class ScriptedWriter:
    """Raises the scripted errors in turn, then stores; records when each call came."""

    description = "scripted"

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = errors
        self.calls: list[float] = []
        self.lines: list[str] = []

    async def start(self) -> None:
        return None

    async def write(self, body: bytes) -> None:
        self.calls.append(time.monotonic())
        if self.errors:
            raise self.errors.pop(0)
        self.lines.extend(body.decode().splitlines())

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


def _batch(n: int, tag: str = "ok") -> Batch:
    b = Batch()
    for i in range(n):
        b.add_lines(Source(f"t/{i}", f"payload-{i}".encode(), NOW), [f"m,d={tag} v={i}i {i}"])
        b.acks.append((i + 1, 1))
    return b


def _delivery(tmp_path: Path, writer: Writer, acked: list[int], **kw: object) -> Delivery:
    return Delivery(
        writer,
        kw.pop("spool", None) or Spool(tmp_path / "spool", 1 << 20),  # type: ignore[arg-type]
        kw.pop("deadletters", None) or DeadLetterStore(tmp_path / "dl"),  # type: ignore[arg-type]
        Metrics(),
        lambda acks: acked.extend(mid for mid, _ in acks),
        attempts=3,
        retry_initial_s=0.01,
        retry_max_s=0.02,
        hold_retry_s=0.05,
    )


async def test_retry_waits_as_long_as_retry_after_says(tmp_path: Path) -> None:
    writer = ScriptedWriter([WriteUnavailable("HTTP 429", status=429, retry_after=0.6)])
    d = _delivery(tmp_path, writer, [])
    assert await d.store(_batch(2))
    assert len(writer.calls) == 2
    assert writer.calls[1] - writer.calls[0] >= 0.6, "backoff alone would be ~0.02 s"


async def test_replay_waits_as_long_as_retry_after_says(tmp_path: Path) -> None:
    writer = ScriptedWriter([WriteUnavailable("HTTP 503", status=503, retry_after=0.6)])
    d = _delivery(tmp_path, writer, [])
    assert d.spool.append(_batch(2))
    d._spooled.set()
    replay = asyncio.create_task(d.replay_forever())
    try:
        deadline = time.monotonic() + 5
        while d.spool.count and time.monotonic() < deadline:  # noqa: ASYNC110 - polls replay
            await asyncio.sleep(0.01)
    finally:
        replay.cancel()
    assert d.spool.empty
    assert writer.calls[1] - writer.calls[0] >= 0.6


class FailingAppends:
    """Wraps a real store; its next ``failures`` appends raise ENOSPC as the disk would."""

    def __init__(self, store: Spool | DeadLetterStore, failures: int) -> None:
        self.store = store
        self.name = "spool" if isinstance(store, Spool) else "deadletter"
        self.failures = failures

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    def append(self, item: object) -> object:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnwritable(self.name, OSError(errno.ENOSPC, "No space left on device"))
        return self.store.append(item)  # type: ignore[arg-type]


async def test_spool_unwritable_holds_acks_then_resumes(tmp_path: Path) -> None:
    writer = ScriptedWriter([WriteUnavailable("down")] * 10**6)
    failing = FailingAppends(Spool(tmp_path / "spool", 1 << 20), failures=10**6)
    acked: list[int] = []
    d = _delivery(tmp_path, writer, acked, spool=failing)
    with capture_logs() as logs:
        task = asyncio.create_task(d.store(_batch(3)))
        await asyncio.sleep(0.5)
    assert not task.done()
    assert acked == []
    assert d.spool_full
    assert d.metrics.registry.get_sample_value("taza_spool_full") == 1
    assert (
        d.metrics.registry.get_sample_value(
            "taza_store_write_errors_total", {"store": "spool", "reason": "ENOSPC"}
        )
        or 0
    ) > 1
    failing.failures = 0  # space again; the database is still down
    assert await asyncio.wait_for(task, 5)
    assert d.spool.count == 1
    assert not d.spool_full
    full = [e for e in logs if e["event"] == "spool_full"]
    assert len(full) == 1, "one line for the whole episode, with the reason"
    assert full[0]["reason"] == "ENOSPC"


async def test_spool_unwritable_and_database_back_writes_directly(tmp_path: Path) -> None:
    writer = ScriptedWriter([WriteUnavailable("down")] * 5)
    failing = FailingAppends(Spool(tmp_path / "spool", 1 << 20), failures=10**6)
    d = _delivery(tmp_path, writer, [], spool=failing)
    assert await asyncio.wait_for(d.store(_batch(3)), 5)
    assert len(writer.lines) == 3, "the database came back while the disk stayed full"
    assert d.spool.empty
    assert not d.spool_full


async def test_deadletter_unwritable_holds_acks_then_records_once(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path / "dl")
    failing = FailingAppends(store, failures=10**6)
    writer = ScriptedWriter([])
    d = _delivery(tmp_path, writer, [], deadletters=failing)
    b = _batch(2)
    b.rejects.append(DeadLetter("taza/v1/a/ecobox/x/fill", b"nope", Reason.NOT_JSON, "x", NOW))
    task = asyncio.create_task(d.store(b))
    await asyncio.sleep(0.3)
    assert not task.done(), "nothing of the batch is stored or acknowledged"
    assert d.deadletter_full
    assert d.metrics.registry.get_sample_value("taza_deadletter_full") == 1
    assert writer.lines == []
    failing.failures = 0
    assert await asyncio.wait_for(task, 5)
    assert not d.deadletter_full
    assert [r["reason"] for r in read_records(tmp_path / "dl")] == ["not_json"]
    assert (
        d.metrics.registry.get_sample_value("taza_messages_rejected_total", {"reason": "not_json"})
        == 1
    )


async def test_deadletter_unwritable_while_stopping_acks_nothing(tmp_path: Path) -> None:
    failing = FailingAppends(DeadLetterStore(tmp_path / "dl"), failures=10**6)
    d = _delivery(tmp_path, ScriptedWriter([]), [], deadletters=failing)
    d.stopping = True
    b = _batch(1)
    b.rejects.append(DeadLetter("t", b"x", Reason.NOT_JSON, "x", NOW))
    assert not await d.store(b)


# -- torn dead-letter lines ----------------------------------------------------------------


def _letter(i: int) -> DeadLetter:
    return DeadLetter(f"taza/v1/a/ecobox/d{i}/fill", b"x%d" % i, Reason.NOT_JSON, "x", NOW)


def test_torn_deadletter_tail_is_cut_off_and_next_record_survives(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path)
    store.append([_letter(1)])
    store.close()
    torn = orjson.dumps(_letter(2).to_record())[:37]
    with open(tmp_path / "deadletter.jsonl", "ab") as fh:  # a crash mid-append
        fh.write(torn)
    store = DeadLetterStore(tmp_path)
    assert store.torn_bytes == len(torn)
    store.append([_letter(3)])
    store.close()
    assert [r["topic"] for r in read_records(tmp_path)] == [
        "taza/v1/a/ecobox/d1/fill",
        "taza/v1/a/ecobox/d3/fill",
    ]
    found = scan(tmp_path)
    assert found.torn_bytes == len(torn), "the torn bytes are reported, not skipped silently"
    (torn_file,) = tmp_path.glob("deadletter-*.torn")
    assert torn_file.read_bytes() == torn


def test_reader_reports_a_glued_line_left_by_older_versions(tmp_path: Path) -> None:
    good = orjson.dumps(_letter(1).to_record()) + b"\n"
    glued = b'{"topic": "cut' + good
    (tmp_path / "deadletter.jsonl").write_bytes(good + glued + good)
    found = scan(tmp_path)
    assert len(found.records) == 2
    assert [(t.offset, t.bytes) for t in found.torn] == [(len(good), len(glued))]


def test_cli_shows_torn_bytes(tmp_path: Path) -> None:
    import subprocess
    import sys

    dl = tmp_path / "deadletter"
    DeadLetterStore(dl).append([_letter(1)])
    with open(dl / "deadletter.jsonl", "ab") as fh:
        fh.write(b'{"torn')
    DeadLetterStore(dl).close()
    out = subprocess.run(
        [sys.executable, "-m", "ingest", "deadletter", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "1 records" in out
    assert "torn: 6 bytes" in out


# -- unreadable spool files ----------------------------------------------------------------


async def test_corrupt_spool_file_is_quarantined_and_replay_goes_on(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 1 << 20)
    for tag in "abc":
        assert spool.append(_batch(2, tag))
    files = sorted((tmp_path / "spool").glob("*.spool"))
    data = files[1].read_bytes()
    files[1].write_bytes(data[: len(data) // 2 + 5])  # torn mid-record
    spool = Spool(tmp_path / "spool", 1 << 20)
    writer = ScriptedWriter([])
    d = _delivery(tmp_path, writer, [], spool=spool)
    replay = asyncio.create_task(d.replay_forever())
    try:
        deadline = time.monotonic() + 5
        while spool.count and time.monotonic() < deadline:  # noqa: ASYNC110 - polls replay
            await asyncio.sleep(0.01)
    finally:
        replay.cancel()
    assert not replay.done() or replay.cancelled(), "replay did not crash"
    assert [x.split(",d=")[1][0] for x in writer.lines] == list("aacc")
    assert [p.name for p in (tmp_path / "spool" / "quarantine").iterdir()] == [files[1].name]
    assert d.metrics.registry.get_sample_value("taza_spool_quarantined_total") == 1
    assert spool.bytes == 0


# -- InfluxDB limit refusals -----------------------------------------------------------------


class LimitedDatabase:
    """Behaves as influxd 1.x with max-values-per-tag on device_id: points of a new value
    beyond the limit are dropped, the rest stored, the reply names the first dropped value.
    With ``informative=False`` the reply says only "HTTP 400" (what the old code relied on)."""

    description = "limited"

    def __init__(self, limit: int, informative: bool = True) -> None:
        self.limit = limit
        self.informative = informative
        self.values: set[str] = set()
        self.lines: set[str] = set()  # a rewritten identical point is stored once
        self.calls = 0

    async def start(self) -> None:
        return None

    async def write(self, body: bytes) -> None:
        self.calls += 1
        dropped = []
        for line in body.decode().splitlines():
            value = line.split("device_id=")[1].split(" ")[0]
            if value not in self.values and len(self.values) >= self.limit:
                dropped.append(value)
                continue
            self.values.add(value)
            self.lines.add(line)
        if dropped:
            msg = (
                f'{{"error":"partial write: max-values-per-tag limit exceeded '
                f'({len(self.values) + 1}/{self.limit}): measurement=\\"fill\\" '
                f'tag=\\"device_id\\" value=\\"{dropped[0]}\\" dropped={len(dropped)}"}}'
            )
            raise classify_status(400, msg.encode() if self.informative else b"partial write")

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


def _fleet_batch(devices: list[int], t0: int) -> Batch:
    b = Batch()
    for n, dev in enumerate(devices):
        b.add_lines(
            Source(f"taza/v1/a/ecobox/eb-{dev:05d}/fill", b"{}", NOW),
            [f"fill,region=a,kind=ecobox,device_id=eb-{dev:05d} fill_pct=1 {t0 + n}"],
        )
        b.acks.append((n + 1, 1))
    return b


@pytest.mark.parametrize("layout", ["interleaved", "new_at_end"])
async def test_limit_refusals_cost_few_requests(tmp_path: Path, layout: str) -> None:
    """50 known devices keep reporting; 30 new ones arrive beyond the limit."""
    old = list(range(50)) * 4
    new = list(range(100, 130))
    devices = (
        [x for pair in zip(old[:30], new, strict=True) for x in pair] + old[30:]
        if layout == "interleaved"
        else old + new
    )
    counts = {}
    for informative in (False, True):
        db = LimitedDatabase(50, informative)
        d = _delivery(tmp_path / str(informative), db, [])
        assert await d.store(_fleet_batch(list(range(50)), 0))
        db.calls = 0
        with capture_logs() as logs:
            assert await d.store(_fleet_batch(devices, 1000))
            assert await d.store(_fleet_batch(new, 2000))
        counts[informative] = db.calls
        assert len(db.lines) == 50 + len(old), "every point of a known device is stored"
        records = list(read_records(tmp_path / str(informative) / "dl"))
        assert sorted(r["topic"].split("/")[4] for r in records) == sorted(
            [f"eb-{v:05d}" for v in new] * 2
        )
        assert {r["reason"] for r in records} == {"refused_by_database"}
        assert len(records) == 2 * len(new)
        if informative:
            limit_lines = [e for e in logs if e["event"] == "database_limit_reached"]
            assert len(limit_lines) == 1
            assert limit_lines[0]["setting"] == "max-values-per-tag"
            assert d.metrics.registry.get_sample_value(
                "taza_points_refused_by_limit_total", {"setting": "max-values-per-tag"}
            ) == 2 * len(new)
    print(f"write requests, 30 refused lines ({layout}): {counts[False]} → {counts[True]}")
    # measured: interleaved 188 → 40, new_at_end 132 → 15 (both include the second,
    # all-new batch: one request, as every point is dropped)
    assert counts[True] <= 1.5 * len(new) + 2, counts
    assert counts[True] * 4 <= counts[False], counts
