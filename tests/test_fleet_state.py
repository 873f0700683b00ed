"""Fleet state on realistic streams: order, redelivery, completeness, restart, memory, speed.

Streams come from taza-sim's models through ``devices.decode`` (tests/test_fleet_support.py).
"""

from __future__ import annotations

import time
import tracemalloc
from collections import Counter
from collections.abc import Mapping

import hypothesis.strategies as hs
import orjson
import pytest
from hypothesis import given, settings

from devices.message import Fill, Message
from devices.registry import DeviceInfo
from ingest.fleet import (
    AlertState,
    AlertTransition,
    Anomaly,
    AnomalyKind,
    Cause,
    Collection,
    DeviceState,
    Event,
    Fleet,
    SnapshotError,
    forecast,
    line,
)
from ingest.fleet.completeness import DAY_MS, Completeness, Order
from ingest.fleet.settings import FleetSettings, Thresholds
from simulator.stream import FaultConfig
from tests.test_fleet_support import (
    MIN,
    T0,
    Bin,
    deliveries,
    registry_entry,
    simulated,
    spec,
    transitions,
    true_levels,
)


def run(fleet: Fleet, messages: list[Message], registry: Mapping[str, DeviceInfo]) -> list[Event]:
    out: list[Event] = []
    for m in messages:
        out.extend(fleet.apply(m, registry.get(m.topic.device_id)))
    return out


def test_simulated_bins_collections_found_glitches_flagged_no_false_full() -> None:
    """20 simulated bins × 10 days (2 % glitch readings, real collection behaviour)."""
    found = expected = spikes = 0
    for i in range(20):
        s = spec(f"eb-{i}")
        levels, emptyings = true_levels(s, days=10)
        msgs = list(simulated(s, days=10))
        events = run(Fleet(), msgs, {s.device_id: registry_entry(s)})
        expected += emptyings
        found += sum(1 for e in events if type(e) is Collection)
        flagged = {e.ts_ms for e in events if type(e) is Anomaly and e.anomaly is AnomalyKind.SPIKE}
        spikes += len(flagged)
        glitches = {
            m.ts_ms
            for m in msgs
            if type(m.body) is Fill
            and m.body.fill_pct - levels[m.ts_ms] > 20
            and levels[m.ts_ms] < 60
        }
        assert glitches <= flagged, f"{s.device_id}: glitches not flagged {glitches - flagged}"
        for t in transitions(events, "full", AlertState.FIRING):
            assert levels[t.ts_ms] >= 75.0, f"{s.device_id}: full at true level {levels[t.ts_ms]}"
        fired = transitions(events, "full", AlertState.FIRING)
        assert len(fired) <= emptyings + 1, "one full episode per filling at most"
    assert expected > 40
    assert found == expected, (found, expected)
    assert spikes > 20


def test_redelivery_changes_nothing() -> None:
    s = spec("eb-3")
    reg = {s.device_id: registry_entry(s)}
    msgs = list(simulated(s, days=3))
    once, twice = Fleet(), Fleet()
    ev_once = run(once, msgs, reg)
    doubled: list[Message] = []
    for i in range(0, len(msgs), 50):  # each batch of 50 delivered twice, as after a lost ack
        doubled += msgs[i : i + 50] * 2
    ev_twice = run(twice, doubled, reg)
    assert [line(e) for e in ev_twice] == [line(e) for e in ev_once]
    assert twice.snapshot() == once.snapshot()


def test_a_late_reading_does_not_rewind_the_state_machine() -> None:
    b = Bin(Fleet())
    b.fills([70.0, 80.5, 81.0, 82.0])
    b.fill(2.0)  # emptied
    old_t = b.t - 2 * b.step_ms
    late = b.fleet.apply(
        Message(b.fill_topic(), old_t, b.seq - 3, b.fill_body(81.5)), b.device
    )  # a copy from before the emptying
    assert late == []
    stale = Message(b.fill_topic(), old_t + 1, 10_000, b.fill_body(95.0))
    assert b.fleet.apply(stale, b.device) == []
    st = b.fleet.get("eb-1")
    assert st is not None
    assert st.level == 2.0
    assert "full" not in st.alerts


def test_completeness_gaps_restarts_wraps_and_late_fillers() -> None:
    c = Completeness()
    day = 20_000 * DAY_MS
    for i, seq in enumerate([10, 11, 12, 15, 16]):  # 13, 14 missing
        assert c.classify(day + i * MIN, seq) is Order.NEW
    assert (c.received, c.missing) == (5, 2)
    assert c.classify(day + 2 * MIN + 1, 13) is Order.LATE  # store-and-forward: fills a gap
    assert c.classify(day + 2 * MIN + 1, 13) is Order.DUPLICATE
    assert c.classify(day + 4 * MIN, 16) is Order.DUPLICATE
    assert (c.received, c.missing) == (6, 1)
    assert c.classify(day + 10 * MIN, 0) is Order.NEW  # reboot: counter back at 0
    assert (c.restarts, c.missing) == (1, 1), "a restart is not 2**32 missing messages"
    c2 = Completeness()
    c2.classify(day, 2**32 - 2)
    c2.classify(day + MIN, 2**32 - 1)
    c2.classify(day + 2 * MIN, 0)  # wraps
    c2.classify(day + DAY_MS, 5)  # next day: 1..4 missing
    assert (c2.restarts, c2.missing) == (0, 4)
    assert c2.per_day() == [(day, 3, 3), (day + DAY_MS, 1, 5)]


class _DaysModel:
    """The per-day counts as the flat list they are specified as (the form the snapshot
    keeps): what ``Completeness`` must say, however it stores the newest day."""

    def __init__(self) -> None:
        self.flat: list[int] = []
        self.missing = 0

    def count(self, ts_ms: int, received: int, missing: int) -> None:
        day = ts_ms // DAY_MS
        if missing < 0 and self.missing == 0:
            missing = 0
        self.missing += missing
        d = self.flat
        for i in range(len(d) - 3, -1, -3):
            if d[i] == day:
                d[i + 1] += received
                d[i + 2] = max(0, d[i + 2] + missing)
                return
            if d[i] < day:
                break
        if d and day < d[0]:
            return
        d.extend((day, received, max(0, missing)))
        if len(d) > 3 * 8:
            del d[:3]


@settings(max_examples=300, deadline=None)
@given(
    hs.lists(
        hs.tuples(hs.integers(-3, 12), hs.integers(0, DAY_MS - 1), hs.integers(-2, 3)),
        max_size=60,
    ),
    hs.integers(0, 60),
)
def test_completeness_per_day_counts_match_the_flat_model(
    calls: list[tuple[int, int, int]], restart_at: int
) -> None:
    """Days out of order, late ones, gaps, more than the 8 kept, a restore from the snapshot
    part-way: the same days and counts as the flat list (which the snapshot holds)."""
    c, model = Completeness(), _DaysModel()
    base = 20_000 * DAY_MS
    for n, (day, ms, missing) in enumerate(calls):
        if n == restart_at:
            c = Completeness.restore(orjson.loads(orjson.dumps(c.snapshot())))
        c._count(base + day * DAY_MS + ms, 1, missing)
        model.count(base + day * DAY_MS + ms, 1, missing)
        assert c.snapshot()[-1] == model.flat
    assert c.per_day() == [
        (d * DAY_MS, r, r + m) for d, r, m in zip(*[iter(model.flat)] * 3, strict=True)
    ]
    assert c.missing == model.missing


def test_completeness_on_a_simulated_stream_with_duplicates_and_reordering() -> None:
    s = spec("eb-5")
    faults = FaultConfig(duplicate_rate=0.05, out_of_order_rate=0.05)
    msgs = list(simulated(s, days=4, faults=faults))
    clean = {(m.ts_ms, m.seq) for m in msgs}
    f = Fleet()
    run(f, msgs, {s.device_id: registry_entry(s)})
    st = f.get(s.device_id)
    assert st is not None
    assert st.seq.received == len(clean)
    assert st.seq.missing == 0
    assert sum(r for _, r, _ in st.seq.per_day()) == len(clean)


def test_a_restart_from_the_snapshot_fires_nothing_again_and_loses_no_clear() -> None:
    specs = [spec(f"eb-{i}") for i in range(6)] + [spec("rvm-1", "rvm", site="commercial")]
    reg = {s.device_id: registry_entry(s) for s in specs}
    msgs = sorted((m for s in specs for m in simulated(s, days=6)), key=lambda m: m.ts_ms)
    whole = run(Fleet(), msgs, reg)
    cut = len(msgs) // 2
    first = Fleet()
    before = run(first, msgs[:cut], reg)
    firing_at_cut = {t.episode for t in first.firing()}
    assert firing_at_cut, "the cut must fall inside some episodes to test anything"
    restored = Fleet.restore(first.snapshot(), registry=reg)
    assert {t.episode for t in restored.firing()} == firing_at_cut
    redelivered = run(restored, msgs[cut - 40 : cut], reg)  # unacked tail, delivered again
    assert redelivered == []
    after = run(restored, msgs[cut:], reg)
    assert [line(e) for e in before + after] == [line(e) for e in whole]
    resolved_after = {t.episode for t in transitions(after, state=AlertState.RESOLVED)}
    assert firing_at_cut & resolved_after, "an episode open at the restart was cleared after it"


def test_bytes_per_device_in_memory_and_in_the_snapshot() -> None:
    """The state of a real bin after two days of readings, its history buffer full, copied
    to 5,000 devices through the snapshot; goal < 2 KB per device."""
    template = spec("eb-x")
    device = registry_entry(template)
    g = Fleet()
    for m in simulated(template, days=2):
        g.apply(m, device)
    st = g.devices[template.device_id]
    while len(st.hist_t) < forecast.WINDOW:  # the worst case: a full history buffer
        st._history_add(st.level_ts_ms + 2 * len(st.hist_t), 50.0)
    assert len(st.hist_t) == len(st.hist_y) == forecast.WINDOW
    one = st.snapshot()
    n = 5000
    tracemalloc.start()
    base = tracemalloc.take_snapshot()
    f = Fleet()
    for i in range(n):
        f.devices[f"eb-{i:06d}"] = DeviceState.restore(f"eb-{i:06d}", one, device, st.th)
    used = sum(d.size_diff for d in tracemalloc.take_snapshot().compare_to(base, "filename"))
    tracemalloc.stop()
    per_device = used / n
    snapshot_per_device = len(f.snapshot()) / n
    print(f"fleet state: {per_device:.0f} B/device in memory, {snapshot_per_device:.0f} B/device")
    assert per_device < 2048
    assert snapshot_per_device < 2048


def test_cpu_per_message_is_small() -> None:
    specs = [spec(f"eb-{i}") for i in range(10)] + [spec("rvm-1", "rvm", site="commercial")]
    reg = {s.device_id: registry_entry(s) for s in specs}
    msgs = [m for s in specs for m in simulated(s, days=3)]
    f = Fleet()
    t0 = time.perf_counter()
    run(f, msgs, reg)
    us = (time.perf_counter() - t0) / len(msgs) * 1e6
    print(f"apply: {us:.1f} µs/message over {len(msgs)} messages")
    assert us < 200


def test_partitioned_fleets_behave_like_one() -> None:
    specs = [spec(f"eb-{i}") for i in range(4)]
    reg = {s.device_id: registry_entry(s) for s in specs}
    msgs = sorted((m for s in specs for m in simulated(s, days=3)), key=lambda m: m.ts_ms)
    one = Counter(line(e) for e in run(Fleet(), msgs, reg))
    parts = [Fleet(), Fleet()]
    split: Counter[str] = Counter()
    for m in msgs:
        part = parts[int(m.topic.device_id.split("-")[1]) % 2]
        split.update(line(e) for e in part.apply(m, reg[m.topic.device_id]))
    assert split == one


def test_unregistered_devices_get_defaults_and_no_silence_judgement() -> None:
    f = Fleet()
    t = Bin(f).fill_topic()
    for i, pct in enumerate([30.0, 31.0, 82.0, 82.5, 83.0]):
        f.apply(Message(t, T0 + i * 15 * MIN, i, Fill(pct)), None)
    st = f.get("eb-1")
    assert st is not None
    assert "full" in st.alerts, "default thresholds apply"
    assert f.tick(T0 + 100 * DAY_MS) == [], "no report interval known: only the Last Will"


def test_a_damaged_or_foreign_snapshot_is_refused_with_the_reason() -> None:
    b = Bin(Fleet())
    b.fills([30.0, 31.0])
    good = b.fleet.snapshot()
    assert Fleet.restore(good).snapshot() == good
    with pytest.raises(SnapshotError, match="version 9"):
        Fleet.restore(good.replace(b'"v":1', b'"v":9'))
    with pytest.raises(SnapshotError, match="not JSON"):
        Fleet.restore(good[:-5])
    with pytest.raises(SnapshotError, match="eb-1: not a fleet-state snapshot"):
        Fleet.restore(good.replace(b'"lt":', b'"xx":'))


def test_outages_raise_offline_on_the_wall_clock_and_the_backlog_keeps_the_history() -> None:
    """Outages (10 % of the time, store-and-forward): while the device is away `offline` fires
    on the wall clock; its backlog clears it and, computed in device time, gives the same
    collections, anomalies and other alerts as if every reading had arrived live."""
    s = spec("eb-3")  # three outages of 5-11 h in these six days
    reg = {s.device_id: registry_entry(s)}
    live = run(Fleet(), list(simulated(s, days=6)), reg)
    outages = FaultConfig(offline_rate=0.1, offline_median_s=6 * 3600)
    f = Fleet()
    got: list[Event] = []
    next_tick = T0
    arrivals = list(deliveries(s, days=6, faults=outages))
    assert max(m.ts_ms for _, m in arrivals) == max(m.ts_ms for m in simulated(s, days=6))
    for at, m in arrivals:
        while next_tick < at:
            got += f.tick(next_tick)
            next_tick += 60_000
        got += f.apply(m, reg[s.device_id], now_ms=at)
    offline = transitions(got, "offline")
    assert [t.state for t in offline] == [AlertState.FIRING, AlertState.RESOLVED] * 3
    assert all(t.cause is Cause.BACK_ONLINE for t in offline[1::2])
    others = [e for e in got if not (type(e) is AlertTransition and e.alert == "offline")]
    assert transitions(live), "the stream must contain alerts to compare"
    assert [line(e) for e in others] == [line(e) for e in live]


def test_full_soon_judged_at_refits_only_fires_at_most_one_interval_later() -> None:
    """20 simulated bins × 10 days through a fleet that refits the forecast per reading (as
    before) and one that refits at most every ``forecast_interval_s`` (the default): every
    other event is the same; each ``full_soon`` firing comes at the same reading or up to
    the interval later, never earlier and never one the per-reading fit did not make; only
    an episode shorter than the interval can be missed, or two joined when the forecast
    left the horizon between two refits; the snapshots differ only there."""
    interval_ms = int(forecast_interval_s := Thresholds().forecast_interval_s) * 1000
    assert forecast_interval_s > 0
    per_reading = FleetSettings(Thresholds(forecast_interval_s=0))
    same = later = missed = joined = 0
    delays: list[int] = []

    def episodes(events: list[Event]) -> list[tuple[int, float]]:
        out: list[tuple[int, float]] = []
        for t in transitions(events, "full_soon"):
            if t.state is AlertState.FIRING:
                out.append((t.ts_ms, float("inf")))
            else:
                out[-1] = (out[-1][0], t.ts_ms)
        return out

    for i in range(20):
        s = spec(f"eb-{i}")
        bound_ms = interval_ms + s.report_interval_s * 1000  # the first reading past it
        msgs = list(simulated(s, days=10))
        old_fleet, new_fleet = Fleet(per_reading), Fleet()
        old = run(old_fleet, msgs, {s.device_id: s})
        new = run(new_fleet, msgs, {s.device_id: s})

        def others(events: list[Event]) -> list[str]:
            return [line(e) for e in events if getattr(e, "alert", None) != "full_soon"]

        assert others(new) == others(old)
        old_episodes, new_episodes = episodes(old), episodes(new)
        for fired, _ in new_episodes:
            start = max((a for a, b in old_episodes if a <= fired < b), default=None)
            assert start is not None, f"{s.device_id}: full_soon at {fired} fired by no old fit"
            assert fired - start <= bound_ms, (s.device_id, fired, start)
            delays.append(fired - start)
            same += fired == start
            later += fired > start
        lost = [
            (a, b) for a, b in old_episodes if not any(c < b and d > a for c, d in new_episodes)
        ]
        for a, b in lost:
            assert b - a <= bound_ms, f"{s.device_id}: a {b - a} ms episode was missed"
        missed += len(lost)
        joined += len(old_episodes) - len(lost) - len(new_episodes)
        ours = orjson.loads(new_fleet.snapshot())["d"]
        for device_id, st in orjson.loads(old_fleet.snapshot())["d"].items():
            for doc in (st, ours[device_id]):
                doc.pop("fc")
                doc["a"].pop("full_soon", None)
            assert ours[device_id] == st
    print(f"full_soon firings: {same} at the same reading, {later} later (at most "
          f"{max(delays) / 60_000:.1f} min), {missed} missed, {joined} joined")  # fmt: skip
    assert same > 30
    assert later > 10
    assert missed + joined <= 0.05 * (same + later)


def test_the_last_fit_survives_a_restart_and_an_older_snapshot_still_restores() -> None:
    """The forecast ``full_soon`` is judged on, and when it was fitted, are in the snapshot:
    a restored fleet refits on the same readings as one that never stopped. A snapshot
    without them (a taza that fitted per reading) restores with a forecast fitted at once."""
    s = spec("eb-3")
    msgs = list(simulated(s, days=6))
    reg = {s.device_id: s}
    whole = Fleet()
    cut = 0
    while cut < len(msgs):
        whole.apply(msgs[cut], s)
        st = whole.get(s.device_id)
        if st is not None and "full_soon" in st.alerts and st.fit_ms != st.level_ts_ms:
            break  # firing, on a fit older than the latest reading
        cut += 1
    else:
        pytest.fail("no reading with full_soon firing on an older fit")
    doc = whole.snapshot()
    restored = Fleet.restore(doc, registry=reg)
    a, b = whole.devices[s.device_id], restored.devices[s.device_id]
    assert b.forecast is not None
    assert (b.forecast, b.fit_ms) == (a.forecast, a.fit_ms)
    fresh = a.forecast_now()
    rest = msgs[cut + 1 :]
    assert [line(e) for e in run(restored, rest, reg)] == [line(e) for e in run(whole, rest, reg)]
    older = orjson.loads(doc)
    del older["d"][s.device_id]["fc"]
    st = Fleet.restore(orjson.dumps(older), registry=reg).devices[s.device_id]
    assert st.fit_ms is None
    assert st.forecast == fresh
    assert fresh is not None
    assert fresh != a.forecast  # ... which is not the one judged on: hence "fc"
