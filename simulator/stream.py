"""The fleet's message stream: models → payloads → deliberate faults, in simulated-time order.

Everything here is a pure function of the fleet, the seed, the simulated time span and the
fault settings; no wall clock, no network. ``taza-sim run`` only decides *when* to publish each
:class:`Outgoing`, so a run with a fixed ``--start`` publishes the same bytes, per device and in
the same order, every time.

Payloads are generated here in the styles real firmware writes (epoch-ms or RFC 3339 ``ts``,
local or UTC offsets, with or without ``device_id``), on purpose *not* with the contract's
encoder (``devices.to_payload``): a simulator that only spoke the decoder's own dialect could
never show the decoder wrong. What the contract decides is imported from ``devices`` (topics,
reason codes, fractions, materials); ``taza-sim verify`` judges the output with the contract.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from devices import DeviceInfo, format_topic
from simulator import faults as fault_kinds
from simulator.clock import rfc3339_ms
from simulator.ecobox import EcoBox, EcoboxParams, Reading
from simulator.fleet import REGIONS, device_rng
from simulator.rvm import Rvm, RvmParams

SEQ_MOD = 2**32

# Device-level actions besides publishing (offline episodes).
PUBLISH = "publish"
DROP = "drop"  # lose the connection abruptly: the broker publishes the Last Will
REJOIN = "rejoin"  # reconnect: retained `online`, then the backlog


@dataclass(frozen=True, slots=True)
class FaultConfig:
    malformed_rate: float = 0.0
    malformed_kinds: tuple[str, ...] = tuple(fault_kinds.MALFORMED)
    duplicate_rate: float = 0.0
    out_of_order_rate: float = 0.0
    clock_skew_s: float = 0.0  # skewed devices are off by up to ± this
    skew_fraction: float = 0.1  # share of devices with a skewed clock (ASSUMED)
    offline_rate: float = 0.0  # CAL ~2.5 % device-days offline: share of time spent offline
    offline_median_s: float = 2 * 3600.0  # ASSUMED length of an outage
    store_forward: bool = True


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One thing a device does at simulated time ``sim_t``: publish a message, drop or rejoin."""

    sim_t: float
    device_id: str
    action: str = PUBLISH
    topic: str = ""
    payload: bytes = b""
    retain: bool = False
    channel: str = ""
    fault: str | None = None
    expect: str | None = None  # "accept" | "reject" | None (the verifier applies the contract)
    reason: str | None = None  # the rejection reason a deliberate fault should get
    seq: int | None = None
    ts_ms: int | None = None
    skew_ms: int = 0


@dataclass(slots=True)
class StreamStats:
    messages: Counter[str] = field(default_factory=Counter)  # by channel
    faults: Counter[str] = field(default_factory=Counter)
    dropped_offline: int = 0
    offline_episodes: int = 0


@dataclass(frozen=True, slots=True)
class Models:
    ecobox: EcoboxParams = field(default_factory=EcoboxParams)
    rvm: RvmParams = field(default_factory=RvmParams)
    rvm_mix_by_region: dict[str, dict[str, float]] = field(default_factory=dict)

    def rvm_for(self, region: str) -> RvmParams:
        mix = self.rvm_mix_by_region.get(region)
        return self.rvm if mix is None else dataclasses.replace(self.rvm, mix=dict(mix))


def topic_for(spec: DeviceInfo, channel: str) -> str:
    return format_topic(spec.region, spec.kind, spec.device_id, channel)


@dataclass(slots=True)
class _Style:
    """How a device's firmware writes its payloads (devices in the field disagree)."""

    ts: str  # "ms" | "local" | "utc"
    device_id_field: bool
    firmware: str
    offset_min: int

    def ts_value(self, ts_ms: int) -> object:
        if self.ts == "ms":
            return ts_ms
        return rfc3339_ms(ts_ms, self.offset_min if self.ts == "local" else 0)


def _style(spec: DeviceInfo, rng: np.random.Generator) -> _Style:
    u = float(rng.random())
    region = REGIONS.get(spec.region)
    offset = region.utc_offset_min if region else 0
    prefix = "eb" if spec.kind == "ecobox" else "rvm"
    if u < 0.4:
        return _Style("ms", True, f"{prefix}-2.4.1", offset)
    if u < 0.8:
        return _Style("local", False, f"{prefix}-2.3.7", offset)
    return _Style("utc", False, f"{prefix}-3.0.0-rc2", offset)


def _offline_windows(
    rng: np.random.Generator, start: float, end: float, cfg: FaultConfig
) -> list[tuple[float, float]]:
    """Outages covering about ``offline_rate`` of the time (alternating renewal process)."""
    rate = cfg.offline_rate
    if rate <= 0 or end <= start:
        return []
    sigma = 1.0
    mean_len = cfg.offline_median_s * math.exp(sigma**2 / 2)
    mean_gap = mean_len * (1.0 - rate) / rate
    windows = []
    t = start + float(rng.exponential(mean_gap))
    while t < end:
        length = float(rng.lognormal(math.log(cfg.offline_median_s), sigma))
        windows.append((t, t + length))
        t += length + float(rng.exponential(mean_gap))
    return windows


def device_stream(
    spec: DeviceInfo,
    *,
    seed: int,
    start: float,
    end: float,
    faults: FaultConfig,
    models: Models,
    stats: StreamStats,
    seq_start: int = 0,
) -> Iterator[Outgoing]:
    """Everything one device does in ``[start, end)``, in publish order (non-decreasing sim_t)."""
    model_rng = device_rng(seed, spec.device_id, stream=2)
    fault_rng = device_rng(seed, spec.device_id, stream=3)
    style = _style(spec, fault_rng)
    skew_ms = 0
    if faults.clock_skew_s > 0 and fault_rng.random() < faults.skew_fraction:
        skew_ms = int(fault_rng.uniform(-faults.clock_skew_s, faults.clock_skew_s) * 1000)
    seq = seq_start % SEQ_MOD
    windows = _offline_windows(fault_rng, start, end, faults)
    readings: Iterator[Reading]
    if spec.kind == "rvm":
        readings = Rvm(spec, model_rng, models.rvm_for(spec.region)).events(start, end)
    else:
        readings = EcoBox(spec, model_rng, models.ecobox).events(start, end)

    held: Outgoing | None = None  # an out-of-order message waits for the next one
    backlog: list[Outgoing] = []
    window_index = 0
    offline = False

    def build(reading: Reading) -> Outgoing:
        nonlocal seq
        ts_ms = math.floor(reading.t * 1000) + skew_ms
        body: dict[str, object] = {"ts": style.ts_value(ts_ms), "seq": seq}
        if style.device_id_field:
            body["device_id"] = spec.device_id
        body.update(reading.fields)
        if reading.channel == "status":
            body["firmware"] = style.firmware
        topic = topic_for(spec, reading.channel)
        my_seq = seq
        seq = (seq + 1) % SEQ_MOD
        u_malformed, u_dup, u_ooo = fault_rng.random(3)
        if u_malformed < faults.malformed_rate:
            kinds = fault_kinds.kinds_for(reading.channel, faults.malformed_kinds)
            if kinds:
                kind = kinds[int(fault_rng.integers(0, len(kinds)))]
                ctx = fault_kinds.Context(
                    topic=topic,
                    channel=reading.channel,
                    kind=spec.kind,
                    device_id=spec.device_id,
                    region=spec.region,
                    body=body,
                    ts_ms=ts_ms,
                    rng=fault_rng,
                )
                broken = fault_kinds.MALFORMED[kind](ctx)
                return Outgoing(
                    reading.t,
                    spec.device_id,
                    PUBLISH,
                    broken.topic,
                    broken.payload,
                    False,
                    reading.channel,
                    kind,
                    "reject",
                    broken.reason,
                    my_seq,
                    ts_ms,
                    skew_ms,
                )
        label = fault_kinds.CLOCK_SKEW if skew_ms else None
        out = Outgoing(
            reading.t,
            spec.device_id,
            PUBLISH,
            topic,
            orjson.dumps(body),
            False,
            reading.channel,
            label,
            None if skew_ms else "accept",
            None,
            my_seq,
            ts_ms,
            skew_ms,
        )
        if u_dup < faults.duplicate_rate:
            return _replace(out, fault="duplicate_of")  # marker: emit twice
        if u_ooo < faults.out_of_order_rate:
            return _replace(out, fault="hold")
        return out

    def emit(out: Outgoing) -> Iterator[Outgoing]:
        nonlocal held
        if out.fault == "duplicate_of":
            first = _replace(out, fault=_base_label(out))
            yield from emit(first)
            yield _replace(first, fault=fault_kinds.DUPLICATE)
            stats.faults[fault_kinds.DUPLICATE] += 1
            return
        if out.fault == "hold" and held is None:
            held = _replace(out, fault=fault_kinds.OUT_OF_ORDER)
            return
        if out.fault == "hold":
            out = _replace(out, fault=_base_label(out))
        yield out
        if out.fault:
            stats.faults[out.fault] += 1
        if held is not None:
            late, held = held, None
            stats.faults[fault_kinds.OUT_OF_ORDER] += 1
            yield _replace(late, sim_t=out.sim_t)

    for reading in readings:
        while window_index < len(windows) and windows[window_index][0] <= reading.t:
            w_start, w_end = windows[window_index]
            if not offline:
                offline = True
                stats.offline_episodes += 1
                yield Outgoing(w_start, spec.device_id, DROP)
            if reading.t < w_end:
                break
            offline = False
            window_index += 1
            yield Outgoing(w_end, spec.device_id, REJOIN)
            for late in backlog:
                yield from emit(
                    _replace(late, sim_t=w_end, fault=late.fault or fault_kinds.OFFLINE)
                )
            backlog = []
        out = build(reading)
        stats.messages[reading.channel] += 1
        if offline:
            if faults.store_forward:
                backlog.append(out)
            else:
                stats.dropped_offline += 1
            continue
        yield from emit(out)
    if held is not None:  # nothing came after it: not out of order after all
        yield _replace(held, fault=_base_label(held))
    # A device still offline at the end never uploads its backlog: the run ends first.
    stats.dropped_offline += len(backlog)


def _base_label(out: Outgoing) -> str | None:
    return fault_kinds.CLOCK_SKEW if out.skew_ms else None


def _replace(out: Outgoing, **changes: Any) -> Outgoing:
    return dataclasses.replace(out, **changes)


def fleet_stream(
    specs: Sequence[DeviceInfo],
    *,
    seed: int,
    start: float,
    end: float,
    faults: FaultConfig | None = None,
    models: Models | None = None,
    stats: StreamStats | None = None,
    seq_start: int = 0,
) -> Iterator[Outgoing]:
    """All devices merged in simulated-time order (ties: fleet order, then device order)."""
    cfg = faults or FaultConfig()
    mdl = models or Models()
    st = stats if stats is not None else StreamStats()
    streams = [
        device_stream(
            s,
            seed=seed,
            start=start,
            end=end,
            faults=cfg,
            models=mdl,
            stats=st,
            seq_start=seq_start,
        )
        for s in specs
    ]
    return heapq.merge(*streams, key=lambda o: o.sim_t)
