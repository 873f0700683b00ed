"""The simulator's messages against the contract: valid ones decode, deliberate faults do not."""

from __future__ import annotations

import itertools
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime

import orjson
import pytest

import devices
from simulator import faults as fault_kinds
from simulator.cli.run import rvm_mixes
from simulator.clock import SimClock, parse_duration, rfc3339_ms
from simulator.fleet import generate
from simulator.rvm import GLASS_MIX
from simulator.stream import (
    DROP,
    PUBLISH,
    REJOIN,
    SEQ_MOD,
    FaultConfig,
    Models,
    Outgoing,
    StreamStats,
    fleet_stream,
)

SPECS = generate(ecoboxes=40, rvms=8, regions=["almaty", "astana"], seed=3, rvm_interval="10m")
# Ends at 16:00 Almaty time (11:00 UTC) yesterday or today: the RVMs are open and busy.
END = (time.time() - 11 * 3600) // 86400 * 86400 + 11 * 3600
START = END - 12 * 3600


def _stream(faults: FaultConfig | None = None, seed: int = 3, **kw: object) -> list[Outgoing]:
    return list(fleet_stream(SPECS, seed=seed, start=START, end=END, faults=faults, **kw))  # type: ignore[arg-type]


def _decode(out: Outgoing, received: float | None = None) -> devices.Message:
    at = datetime.fromtimestamp(received if received is not None else out.sim_t + 1, UTC)
    return devices.decode(out.topic, out.payload, at)


def test_every_message_without_a_deliberate_fault_is_accepted_and_encodes() -> None:
    outs = _stream()
    channels = Counter(o.channel for o in outs)
    assert channels["fill"] > 1000
    assert channels["status"] > 300
    assert channels["deposit"] > 20
    for out in outs:
        assert out.fault is None
        message = _decode(out)
        assert message.seq == out.seq
        assert message.ts_ms == out.ts_ms
        assert devices.encode(message)
    # Firmware variants: both timestamp forms of the contract are in use, with offsets.
    stamps = [orjson.loads(o.payload)["ts"] for o in outs]
    assert any(isinstance(s, int) for s in stamps)
    assert any(isinstance(s, str) and s.endswith("+05:00") for s in stamps)
    assert any(isinstance(s, str) and s.endswith("Z") for s in stamps)


def test_every_malformed_kind_is_rejected_with_its_reason() -> None:
    outs = _stream(FaultConfig(malformed_rate=0.5))
    seen: Counter[str] = Counter()
    for out in outs:
        if out.expect != "reject":
            _decode(out)
            continue
        assert out.fault in fault_kinds.MALFORMED
        with pytest.raises(devices.Rejected) as caught:
            _decode(out)
        assert caught.value.reason.value == out.reason, (out.fault, out.payload[:120])
        seen[str(out.fault)] += 1
    assert set(seen) == set(fault_kinds.MALFORMED)
    assert sum(seen.values()) == pytest.approx(len(outs) / 2, rel=0.1)


def test_bad_topics_still_reach_the_intake_subscription() -> None:
    """A broken topic must match taza/v1/+/+/+/+, or ingest would never see (or reject) it."""
    outs = _stream(FaultConfig(malformed_rate=1.0, malformed_kinds=("bad_topic", "bad_channel")))
    for out in outs:
        parts = out.topic.split("/")
        assert len(parts) == 6
        assert parts[:2] == ["taza", "v1"]


def test_duplicates_out_of_order_and_skew_are_flagged_and_stay_valid() -> None:
    outs = _stream(
        FaultConfig(
            duplicate_rate=0.05, out_of_order_rate=0.05, clock_skew_s=120, skew_fraction=0.2
        )
    )
    labels = Counter(o.fault for o in outs)
    assert labels[fault_kinds.DUPLICATE] > 50
    assert labels[fault_kinds.OUT_OF_ORDER] > 50
    assert labels[fault_kinds.CLOCK_SKEW] > 100
    last_seq: dict[str, int] = {}
    recent: dict[str, list[bytes]] = defaultdict(list)
    for out in outs:
        _decode(out, received=END + 600)  # all valid: a 2-minute skew is inside the window
        if out.fault == fault_kinds.DUPLICATE:
            assert out.payload in recent[out.device_id][-2:]  # the same bytes, just sent
        if out.fault == fault_kinds.OUT_OF_ORDER:
            assert out.seq is not None
            assert out.seq < last_seq[out.device_id]
        if out.fault == fault_kinds.CLOCK_SKEW:
            assert out.skew_ms != 0
            assert out.ts_ms == int(out.sim_t * 1000) + out.skew_ms
        if out.seq is not None:
            last_seq[out.device_id] = max(last_seq.get(out.device_id, -1), out.seq)
        recent[out.device_id].append(out.payload)


def test_skew_beyond_five_minutes_ahead_is_rejected_as_future() -> None:
    outs = _stream(FaultConfig(clock_skew_s=3600, skew_fraction=1.0))
    future = [o for o in outs if o.skew_ms > 6 * 60_000]
    assert future
    for out in future[:50]:
        with pytest.raises(devices.Rejected) as caught:
            _decode(out, received=out.sim_t)
        assert caught.value.reason is devices.Reason.TS_IN_FUTURE


def test_seq_counts_every_message_per_device_and_wraps() -> None:
    outs = _stream(FaultConfig(malformed_rate=0.1), seq_start=SEQ_MOD - 5)
    by_device: dict[str, list[int]] = defaultdict(list)
    for out in outs:
        assert out.seq is not None
        by_device[out.device_id].append(out.seq)
    for seqs in by_device.values():
        assert seqs[0] == SEQ_MOD - 5
        for a, b in itertools.pairwise(seqs):
            assert b == (a + 1) % SEQ_MOD
        assert 0 in seqs  # wrapped
    wrapped = [o for o in outs if o.seq == 0 and o.expect is None]
    assert all(_decode(o).seq == 0 for o in wrapped)


def test_offline_devices_drop_and_rejoin_and_upload_their_backlog() -> None:
    stats = StreamStats()
    outs = _stream(FaultConfig(offline_rate=0.2, offline_median_s=1800), stats=stats)
    drops = [o for o in outs if o.action == DROP]
    rejoins = [o for o in outs if o.action == REJOIN]
    assert len(drops) > 10
    assert len(rejoins) >= len(drops) - len(SPECS)
    late = [o for o in outs if o.fault == fault_kinds.OFFLINE]
    assert late
    for out in late:
        assert out.ts_ms is not None
        assert out.sim_t * 1000 > out.ts_ms + 1000  # sent well after it was measured
        _decode(out)
    # Nothing is published between a device's DROP and its REJOIN.
    offline: set[str] = set()
    for out in outs:
        if out.action == DROP:
            offline.add(out.device_id)
        elif out.action == REJOIN:
            offline.discard(out.device_id)
        else:
            assert out.device_id not in offline

    stats_nf = StreamStats()
    no_forward = _stream(
        FaultConfig(offline_rate=0.2, offline_median_s=1800, store_forward=False), stats=stats_nf
    )
    assert not any(o.fault == fault_kinds.OFFLINE for o in no_forward)
    assert stats_nf.dropped_offline > 0
    published_nf = sum(1 for o in no_forward if o.action == PUBLISH)
    published = sum(1 for o in outs if o.action == PUBLISH)
    assert published_nf + stats_nf.dropped_offline == published + stats.dropped_offline


def test_the_same_seed_gives_the_same_stream_byte_for_byte() -> None:
    cfg = FaultConfig(
        malformed_rate=0.05,
        duplicate_rate=0.02,
        out_of_order_rate=0.02,
        clock_skew_s=60,
        offline_rate=0.05,
    )
    first = [(o.sim_t, o.device_id, o.action, o.topic, o.payload, o.fault) for o in _stream(cfg)]
    again = [(o.sim_t, o.device_id, o.action, o.topic, o.payload, o.fault) for o in _stream(cfg)]
    assert first == again
    other = [(o.device_id, o.payload) for o in _stream(cfg, seed=4)]
    assert other != [(d, p) for _, d, _, _, p, _ in first]


def test_a_device_behaves_the_same_whatever_the_rest_of_the_fleet() -> None:
    small = generate(ecoboxes=2, rvms=0, regions=["almaty"], seed=3)
    big = [s for s in SPECS if s.device_id in {x.device_id for x in small}]
    assert [s.device_id for s in big] == [s.device_id for s in small]
    alone = [o.payload for o in fleet_stream(small, seed=3, start=START, end=END)]
    within = [o.payload for o in fleet_stream(big, seed=3, start=START, end=END)]
    assert alone == within


def test_the_default_clock_never_produces_a_future_timestamp() -> None:
    clock, duration = SimClock.plan(speed=600, duration_s=60, start=None, wall_start=1_000_000.0)
    assert duration == 60
    assert clock.sim_at(1_000_060.0) == pytest.approx(
        1_000_060.0
    )  # meets the real clock at the end
    assert clock.sim_at(1_000_000.0) == pytest.approx(1_000_060.0 - 10 * 3600)  # 10 h before
    outs = list(
        fleet_stream(SPECS[:10], seed=1, start=clock.sim_start, end=clock.sim_at(1_000_060))
    )
    assert outs
    for out in outs:
        assert out.ts_ms is not None
        assert out.ts_ms / 1000 <= clock.wall_at(out.sim_t)  # published at or after its ts


def test_clock_plans_and_durations() -> None:
    assert parse_duration("60s") == 60
    assert parse_duration("10m") == 600
    assert parse_duration("1.5h") == 5400
    assert parse_duration("250ms") == 0.25
    with pytest.raises(ValueError, match="duration"):
        parse_duration("soon")
    with pytest.raises(ValueError, match="--duration"):
        SimClock.plan(speed=10, duration_s=None, start=None)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    _clock, duration = SimClock.plan(
        speed=3601, duration_s=None, start=start, wall_start=start.timestamp() + 3600
    )
    assert duration == pytest.approx(1.0)  # catches up with the real clock after one second
    assert rfc3339_ms(1_700_000_000_123, 300) == "2023-11-15T03:13:20.123+05:00"
    assert rfc3339_ms(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"


def test_the_material_mix_can_differ_per_region() -> None:
    models = Models(rvm_mix_by_region={"astana": dict(GLASS_MIX)})
    materials: dict[str, set[str]] = defaultdict(set)
    for out in fleet_stream(SPECS, seed=3, start=START - 86400, end=END, models=models):
        if out.channel == "deposit":
            region = out.topic.split("/")[2]
            materials[region] |= {i["material"] for i in orjson.loads(out.payload)["items"]}
    assert materials["almaty"] == {"pet", "alu"}  # Kazakh fandomats: PET and cans only
    assert materials["astana"] == {"pet", "alu", "glass"}
    default, by_region = rvm_mixes(("pet=1,alu=1", "shymkent:pet=0.5,glass=0.5"))
    assert default == {"pet": 0.5, "alu": 0.5}
    assert by_region == {"shymkent": {"pet": 0.5, "glass": 0.5}}


def test_the_simulator_speaks_the_contracts_vocabulary() -> None:
    """Topics, fault codes, materials and fractions the simulator emits are the contract's own."""
    outs = [o for o in _stream() if o.action == PUBLISH]
    codes: set[str] = set()
    materials: set[str] = set()
    for o in outs:
        topic = devices.parse_topic(o.topic)
        assert o.topic == devices.format_topic(
            topic.region, topic.kind, topic.device_id, topic.channel
        )
        if o.channel == "state":
            continue
        body = orjson.loads(o.payload)
        codes.update(body.get("faults", ()))
        materials.update(item["material"] for item in body.get("items", ()))
        materials.update(body.get("bins", {}))
    assert materials, "RVMs deposited something"
    assert materials <= devices.MATERIALS
    assert codes <= devices.FAULT_CODES.keys()
    assert {s.fraction for s in SPECS if s.fraction} <= devices.FRACTIONS
    assert all(isinstance(b, devices.DeviceInfo) for b in SPECS)


def test_every_fault_names_a_contract_reason() -> None:
    outs = _stream(FaultConfig(malformed_rate=0.5))
    reasons = {o.reason for o in outs if o.expect == "reject"}
    assert reasons, "faults were injected"
    assert all(isinstance(r, devices.Reason) for r in reasons)
