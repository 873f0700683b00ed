"""The fleet stage's wiring pieces, one module at a time: journal + snapshot restart, the
history spool, settings, and the fleet-file column. A fake writer stands in for the database
(the e2e tests in test_alerts_e2e.py use the real one)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from devices import Limits, Registry, RegistryError, decode, to_payload
from ingest.batch import Accepted, Source
from ingest.config import load_settings
from ingest.errors import ConfigError, WriteUnavailable
from ingest.fleet import Fleet, FleetConfigError, FleetSettings
from ingest.fleet.persist import JOURNAL, Journal, read_journal
from ingest.fleet.stage import FleetStage
from tests.test_fleet_support import LIMITS, MIN, T0, info, replace

CSV = """device_id,kind,region,lat,lon,capacity_l,fraction,site,report_interval_s{extra_head}
eb-1,ecobox,almaty,43.25,76.9,240,plastic,residential,900{extra}
"""


class FakeWriter:
    description = "fake"

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.down = False

    async def start(self) -> None:
        pass

    async def write(self, body: bytes) -> None:
        if self.down:
            raise WriteUnavailable("down")
        self.bodies.append(body)

    async def ping(self) -> bool:
        return not self.down

    async def close(self) -> None:
        pass

    def lines(self) -> list[str]:
        return [line for b in self.bodies for line in b.decode().splitlines()]


class Published(list[tuple[str, bytes, int, bool]]):
    def __call__(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.append((topic, payload, qos, retain))


def make_stage(
    data_dir: Path, writer: FakeWriter, published: Published, registry: Registry | None = None
) -> FleetStage:
    stage = FleetStage(
        FleetSettings(),
        writer=writer,
        publish=published,
        data_dir=data_dir,
        registry=registry if registry is not None else {"eb-1": info()},
        metrics=CollectorRegistry(),
        ready=lambda: False,
        read_retained=None,
        spool_max_bytes=1 << 20,
        clock=lambda: T0 / 1000 + 3600,
    )
    stage.open()
    return stage


def fills(levels: list[float], start_seq: int = 0, t0: int = T0) -> list[Accepted]:
    received = datetime.fromtimestamp(t0 / 1000 + 3600, UTC)
    out = []
    for i, pct in enumerate(levels):
        payload = f'{{"ts": {t0 + i * MIN}, "seq": {start_seq + i}, "fill_pct": {pct}}}'
        topic = "taza/v1/almaty/ecobox/eb-1/fill"
        m = decode(topic, payload.encode(), received, LIMITS)
        out.append(Accepted(m, info(), Source(topic, payload.encode(), received)))
    return out


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_a_crash_before_any_snapshot_is_rebuilt_from_the_journal(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    writer, published = FakeWriter(), Published()
    stage = make_stage(tmp_path, writer, published)
    loop.run_until_complete(stage.delivered(fills([70.0, 81.0, 83.0, 84.0])))
    assert [p[0] for p in published] == ["taza/v1/alerts/almaty/eb-1/full"]
    stage.close()  # a crash: no finish(), no snapshot

    again = make_stage(tmp_path, FakeWriter(), Published())
    state = again.get("eb-1")
    assert state is not None
    assert "full" in state.alerts
    assert [t.alert for t in again.firing()] == ["full"]
    assert any(line.startswith("alert,") for line in again.history.pending)
    # Applying the journal's messages again (the broker redelivering) changes nothing.
    events_before = dict(state.alerts)
    loop.run_until_complete(again.delivered(fills([70.0, 81.0, 83.0, 84.0])))
    assert state.alerts.keys() == events_before.keys()


def test_the_snapshot_truncates_the_journal_and_restores_exactly(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    stage = make_stage(tmp_path, FakeWriter(), Published())
    loop.run_until_complete(stage.delivered(fills([70.0, 81.0, 83.0])))
    stage.save_snapshot()
    assert (tmp_path / "fleet" / JOURNAL).stat().st_size == 0
    loop.run_until_complete(stage.delivered(fills([84.0, 2.0], start_seq=3, t0=T0 + 3 * MIN)))
    stage.close()
    again = make_stage(tmp_path, FakeWriter(), Published())
    assert list(again.firing()) == [], "the collection after the snapshot came from the journal"
    state = again.get("eb-1")
    assert state is not None
    assert state.level == 2.0


def test_a_torn_journal_tail_is_skipped(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    stage = make_stage(tmp_path, FakeWriter(), Published())
    loop.run_until_complete(stage.delivered(fills([70.0, 71.0])))
    stage.close()
    with open(tmp_path / "fleet" / JOURNAL, "ab") as fh:
        fh.write(b'{"n": 1, "m": [["taza/v1/alm')
    again = make_stage(tmp_path, FakeWriter(), Published())
    assert len(again) == 1


def test_the_journal_replays_each_message_exactly_as_it_arrived(tmp_path: Path) -> None:
    """The journal keeps the raw payload and the receive time: replay decodes each message to
    what the stage applied — a ``state`` stamped with its receive time, extra fields kept,
    a payload over today's default size limit (the service may allow more), any age."""
    received = datetime(2026, 5, 28, 20, 26, 40, 123456, tzinfo=UTC)
    big = '"note": "' + "x" * 5000 + '", '
    raw = [
        ("taza/v1/almaty/ecobox/eb-1/fill", f'{{"ts": {T0}, "seq": 1, "fill_pct": 42.5}}'),
        ("taza/v1/almaty/ecobox/eb-1/state", "offline"),
        ("taza/v1/almaty/ecobox/eb-2/fill", f'{{{big}"ts": {T0}, "seq": 7, "fill_pct": 3}}'),
    ]
    limits = Limits(max_payload_bytes=8192, max_age=timedelta(days=30))
    sent = []
    for topic, text in raw:
        payload = text.encode()
        sent.append(
            Accepted(
                decode(topic, payload, received, limits), None, Source(topic, payload, received)
            )
        )
    assert sent[1].message.ts_ms == T0 + 123, "the state message is stamped with its arrival"
    assert sent[2].message.extra_fields == ("note",)
    journal = Journal(tmp_path / JOURNAL)
    journal.append(T0 + 5, sent)
    journal.close()
    [(now_ms, items)] = list(read_journal(tmp_path / JOURNAL))
    assert now_ms == T0 + 5
    assert items == [(a.message.topic.device_id, a.message) for a in sent]


def test_a_journal_written_by_the_previous_taza_still_replays(tmp_path: Path) -> None:
    """Before the raw journal, records held re-encoded payloads with their own ``ts``."""
    [a] = fills([55.0])
    old = {"n": 9, "m": [[a.source.topic, to_payload(a.message).decode(), a.message.ts_ms]]}
    (tmp_path / JOURNAL).write_bytes(orjson.dumps(old) + b"\n")
    assert list(read_journal(tmp_path / JOURNAL)) == [(9, [("eb-1", a.message)])]


def test_history_waits_in_the_fleet_spool_while_the_database_is_down(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    writer = FakeWriter()
    writer.down = True
    stage = make_stage(tmp_path, writer, Published())

    async def scenario() -> None:
        coros = stage.tasks()
        coros.pop("fleet-clock").close()  # no wall clock here: history and replay only
        tasks = [asyncio.create_task(c) for c in coros.values()]
        await stage.delivered(fills([70.0, 78.0, 81.0, 84.0, 2.0]))
        async with asyncio.timeout(10):
            await stage.history.flush()
        assert stage.history.spool.count == 1
        assert writer.lines() == []
        writer.down = False
        async with asyncio.timeout(10):
            while not stage.history.spool.empty:  # noqa: ASYNC110 - polls the replay task's files
                await asyncio.sleep(0.05)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    loop.run_until_complete(scenario())
    kinds = [line.split(",", 1)[0] for line in writer.lines()]
    assert kinds.count("alert") == 2, "full firing and resolved"
    assert kinds.count("collection") == 1


def test_a_device_threshold_at_or_below_the_clear_level_stops_the_start(tmp_path: Path) -> None:
    low = Registry([replace(info("eb-9"), full_threshold_pct=40.0)])
    with pytest.raises(FleetConfigError, match="device eb-9"):
        make_stage(tmp_path, FakeWriter(), Published(), low)


# ----- settings -------------------------------------------------------------------------------


def test_alerts_table_and_notify_age_from_toml_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "taza.toml"
    toml.write_text(
        "[alerts]\nfull_threshold_pct = 75\nnotify_max_age_s = 600\n"
        "[alerts.fraction.glass]\nfull_threshold_pct = 70\n"
    )
    s = load_settings(toml)
    assert s.alerts_enabled
    fleet = s.fleet_settings
    assert fleet.defaults.full_threshold_pct == 75
    assert fleet.thresholds_for("glass", None).full_threshold_pct == 70
    assert fleet.notify_max_age_s == 600
    monkeypatch.setenv("TAZA_ALERT_NOTIFY_MAX_AGE_S", "120")
    monkeypatch.setenv("TAZA_ALERTS_ENABLED", "false")
    s = load_settings(toml)
    assert s.fleet_settings.notify_max_age_s == 120
    assert not s.alerts_enabled
    assert load_settings().fleet_settings.notify_max_age_s == 120


def test_a_bad_alerts_key_is_a_config_error_naming_it(tmp_path: Path) -> None:
    toml = tmp_path / "taza.toml"
    toml.write_text("[alerts.site.park]\nfull_treshold_pct = 70\n")
    with pytest.raises(ConfigError, match=r"alerts\.site\.park\.full_treshold_pct"):
        load_settings(toml)


# ----- the fleet-file column ----------------------------------------------------------------------


def test_full_threshold_pct_column_is_optional_validated_and_saved(tmp_path: Path) -> None:
    plain = Registry.parse(CSV.format(extra_head="", extra=""))
    assert plain["eb-1"].full_threshold_pct is None
    assert "full_threshold_pct" not in plain.dumps(), "files without it stay as they were"
    own = Registry.parse(CSV.format(extra_head=",full_threshold_pct", extra=",72.5"))
    assert own["eb-1"].full_threshold_pct == 72.5
    for suffix in (".csv", ".json"):
        path = tmp_path / f"fleet{suffix}"
        own.save(path)
        assert Registry.load(path)["eb-1"] == own["eb-1"]
    with pytest.raises(RegistryError, match=r"full_threshold_pct.*outside 0\.\.100"):
        Registry.parse(CSV.format(extra_head=",full_threshold_pct", extra=",120"))
    json_fleet = Registry.parse(
        '[{"device_id": "eb-1", "kind": "ecobox", "region": "almaty", "lat": 1, "lon": 2,'
        ' "capacity_l": 240, "fraction": "glass", "site": null, "report_interval_s": 60,'
        ' "full_threshold_pct": 65}]',
        fmt="json",
    )
    assert json_fleet["eb-1"].full_threshold_pct == 65.0


def test_the_retained_sync_clears_stale_topics_and_republishes_only_what_differs(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    published = Published()
    stage = make_stage(tmp_path, FakeWriter(), published)
    loop.run_until_complete(stage.delivered(fills([70.0, 78.0, 81.0, 84.0])))
    (firing,) = stage.firing()
    topic = "taza/v1/alerts/almaty/eb-1/full"
    stale = "taza/v1/alerts/almaty/eb-7/fire"

    def sync(retained: dict[str, bytes]) -> list[tuple[str, bytes, int, bool]]:
        published.clear()

        async def read() -> dict[str, bytes]:
            return retained

        stage.read_retained = read
        loop.run_until_complete(stage.sync_retained())
        return list(published)

    same = b'{"state": "firing", "episode": "%s"}' % firing.episode.encode()
    assert sync({topic: same, stale: b'{"episode": "eb-7/fire/1"}'}) == [(stale, b"", 1, True)]
    assert sync({}) == [], "published retained a moment ago: on its way, not sent twice"
    stage._sent.clear()  # as after a reconnect or a drop (run_clock; the tests below)
    again = sync({topic: b'{"episode": "eb-1/full/1"}'})
    assert [(t, retain) for t, _, _, retain in again] == [(topic, True)]
    assert b'"state":"firing"' in again[0][1]
    stage._sent.clear()
    assert [t for t, *_ in sync({})] == [topic], "a broker that lost its retained store"


def test_a_reconnect_syncs_what_the_broker_lost_but_not_what_is_on_its_way(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    """The sync on becoming ready can read the retained topics before the stage's own
    retained firing message arrives: it must not send it twice. After the intake was down,
    the broker may have lost it (a restart without persistence): then it is sent again."""
    published = Published()
    stage = make_stage(tmp_path, FakeWriter(), published)
    topic = "taza/v1/alerts/almaty/eb-1/full"
    up = [True]
    stage.ready = lambda: up[0]

    async def read() -> dict[str, bytes]:
        return {}  # the broker holds nothing retained (yet, or any more)

    stage.read_retained = read

    async def scenario() -> None:
        await stage.delivered(fills([70.0, 78.0, 81.0, 84.0]))
        clock = asyncio.create_task(stage.run_clock())
        await asyncio.sleep(0.8)  # the sync on becoming ready
        assert [(t, retain) for t, _, _, retain in published] == [(topic, True)]
        up[0] = False
        await asyncio.sleep(0.8)
        up[0] = True
        await asyncio.sleep(0.8)
        clock.cancel()

    loop.run_until_complete(scenario())
    assert [(t, retain) for t, _, _, retain in published] == [(topic, True)] * 2, (
        "once by the stage, once by the sync after the reconnect"
    )


def test_publishes_the_intake_dropped_are_put_right_at_the_next_tick(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    """The intake's outbox was full (the broker's PUBACKs lagging) and the retained firing
    message was among the dropped: the next tick re-syncs, once per new drop count."""
    published = Published()
    stage = make_stage(tmp_path, FakeWriter(), published)
    loop.run_until_complete(stage.delivered(fills([70.0, 78.0, 81.0, 84.0])))
    topic = "taza/v1/alerts/almaty/eb-1/full"
    assert [(t, retain) for t, _, _, retain in published] == [(topic, True)]
    published.clear()
    dropped = [0]
    reads: list[int] = []

    async def read() -> dict[str, bytes]:
        reads.append(dropped[0])
        return {}  # the dropped firing message never reached the broker

    stage.ready = lambda: True
    stage.read_retained = read
    stage.publishes_dropped = lambda: dropped[0]
    stage.tick_interval_s = 0.05

    async def scenario() -> None:
        clock = asyncio.create_task(stage.run_clock())
        await asyncio.sleep(0.7)  # the sync on becoming ready, then ticks without drops
        assert reads == [0]
        dropped[0] = 3
        await asyncio.sleep(1.2)
        clock.cancel()

    loop.run_until_complete(scenario())
    assert reads == [0, 3], "one more sync, for the new drops only"
    assert [(t, retain) for t, _, _, retain in published] == [(topic, True)], (
        "not by the sync on becoming ready (the stage had just sent it), by the one after the drops"
    )


def test_a_message_the_rules_fail_on_is_skipped_not_looped(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stage runs before the PUBACK and replays its journal at start: a message that trips
    a bug in the rules must not fail delivery, or it would fail again on every restart."""
    real = Fleet.apply

    def buggy(self: Fleet, message: Any, info: Any, now_ms: int | None = None) -> list[Any]:
        if message.seq == 1:
            raise ZeroDivisionError("a bug in a rule")
        return real(self, message, info, now_ms)

    monkeypatch.setattr(Fleet, "apply", buggy)
    stage = make_stage(tmp_path, FakeWriter(), Published())
    loop.run_until_complete(stage.delivered(fills([70.0, 71.0, 72.0, 73.0])))
    assert stage.apply_failed._value.get() == 1
    state = stage.get("eb-1")
    assert state is not None
    assert state.level == 73.0, "the messages after it were applied"
    stage.close()
    again = make_stage(tmp_path, FakeWriter(), Published())  # the journal replays it: no raise
    assert again.apply_failed._value.get() == 1
    assert again.get("eb-1") is not None


def test_no_snapshot_truncates_the_journal_while_a_batch_record_is_being_synced(
    tmp_path: Path, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal's fdatasync runs in a worker thread while the batch is applied; a snapshot
    taken then (the clock task runs meanwhile) would cover the batch and truncate a record
    still being written. The clock skips it until the write is done, and the record is on
    disk before ``delivered`` returns (i.e. before the PUBACK)."""
    stage = make_stage(tmp_path, FakeWriter(), Published())
    stage.snapshot_interval_s = 0.0
    stage.tick_interval_s = 0.01
    loop.run_until_complete(stage.delivered(fills([70.0, 71.0])))
    journal = stage.journal
    assert journal is not None
    release = threading.Event()
    in_write = threading.Event()
    write = journal.write

    def slow_write(record: bytes) -> None:
        in_write.set()
        release.wait(5)
        write(record)

    monkeypatch.setattr(journal, "write", slow_write)
    snapshots: list[bool] = []
    monkeypatch.setattr(stage, "save_snapshot", lambda: snapshots.append(journal.writing))

    async def scenario() -> None:
        clock = asyncio.create_task(stage.run_clock())
        delivering = asyncio.create_task(
            stage.delivered(fills([72.0, 73.0], start_seq=2, t0=T0 + 2 * MIN))
        )
        await asyncio.to_thread(in_write.wait, 5)
        await asyncio.sleep(0.8)  # more than one clock step while the record is in flight
        assert not delivering.done(), "delivered returned before its record was durable"
        assert snapshots == []
        release.set()
        await delivering
        lines = (tmp_path / "fleet" / JOURNAL).read_bytes().splitlines()
        assert len(lines) == 2
        assert b'\\"seq\\": 3' in lines[1]
        await asyncio.sleep(0.8)
        clock.cancel()

    loop.run_until_complete(scenario())
    assert snapshots, "the clock snapshots once the record is written"
    assert not any(snapshots), "no snapshot while a record was in flight"
