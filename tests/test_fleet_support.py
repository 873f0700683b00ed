"""Helpers for the fleet-stage unit tests (no tests here): messages, devices, simulated streams.

Simulated streams go through the real path a stored message takes: the simulator's models and
payloads, then ``devices.decode``, so the stage sees exactly what the service would hand it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from devices import decode
from devices.limits import Limits
from devices.message import Channel, Fill, Kind, Message, Presence, Status, Topic
from devices.registry import DeviceInfo
from ingest.fleet import AlertState, AlertTransition, Event, Fleet
from simulator.ecobox import EcoBox, EcoboxParams
from simulator.fleet import device_rng
from simulator.stream import PUBLISH, FaultConfig, Models, StreamStats, device_stream

T0 = 1_780_000_000_000  # 2026-05-28T20:26:40Z
MIN = 60_000
LIMITS = Limits(max_age=timedelta(days=30))


def info(
    device_id: str = "eb-1",
    kind: str = "ecobox",
    *,
    interval: int = 900,
    fraction: str | None = "plastic",
    site: str | None = "residential",
    region: str = "almaty",
) -> DeviceInfo:
    capacity = 240.0 if kind == "ecobox" else 150.0
    return DeviceInfo(
        device_id, Kind(kind), region, 43.25, 76.9, capacity, fraction, site, interval
    )


def topic(d: DeviceInfo, channel: Channel) -> Topic:
    return Topic(d.region, d.kind, d.device_id, channel)


@dataclass
class Bin:
    """One device fed by hand: every call is the next message (time and seq advance)."""

    fleet: Fleet
    device: DeviceInfo = field(default_factory=info)
    t: int = T0
    seq: int = 0
    step_ms: int = 15 * MIN
    events: list[Event] = field(default_factory=list)

    def send(self, channel: Channel, body: Fill | Status, *, advance: bool = True) -> list[Event]:
        if advance:
            self.t += self.step_ms
        m = Message(topic(self.device, channel), self.t, self.seq, body)
        self.seq += 1
        got = self.fleet.apply(m, self.device)
        self.events.extend(got)
        return got

    def fill_topic(self) -> Topic:
        return topic(self.device, Channel.FILL)

    def fill_body(self, pct: float) -> Fill:
        return Fill(pct)

    def fill(self, pct: float, **kw: float) -> list[Event]:
        return self.send(Channel.FILL, Fill(pct, **kw))

    def fills(self, values: Iterable[float], **kw: float) -> list[Event]:
        out: list[Event] = []
        for v in values:
            out.extend(self.fill(v, **kw))
        return out

    def status(self, **kw: object) -> list[Event]:
        return self.send(Channel.STATUS, Status(**kw))  # type: ignore[arg-type]

    def presence(self, online: bool, at_ms: int) -> list[Event]:
        m = Message(topic(self.device, Channel.STATE), at_ms, None, Presence(online))
        got = self.fleet.apply(m, self.device, now_ms=at_ms)
        self.events.extend(got)
        return got


def transitions(
    events: Iterable[Event], alert: str | None = None, state: AlertState | None = None
) -> list[AlertTransition]:
    return [
        e
        for e in events
        if type(e) is AlertTransition
        and (alert is None or e.alert == alert)
        and (state is None or e.state is state)
    ]


def spec(
    device_id: str, kind: str = "ecobox", interval: int = 900, site: str = "residential"
) -> DeviceInfo:
    """A simulated device (the simulator models take the registry's ``DeviceInfo``)."""
    return DeviceInfo(device_id, Kind(kind), "almaty", 43.25, 76.9,
                      240.0 if kind == "ecobox" else 150.0,
                      "plastic" if kind == "ecobox" else None, site, interval)  # fmt: skip


def registry_entry(s: DeviceInfo) -> DeviceInfo:
    return s


def deliveries(
    s: DeviceInfo, *, days: float, seed: int = 7, faults: FaultConfig | None = None
) -> Iterator[tuple[int, Message]]:
    """(wall-clock ms the message reaches taza, the stored message), in publish order: the
    device's messages decoded by the contract (deliberately malformed ones are refused there)."""
    start = T0 / 1000
    stats = StreamStats()
    for out in device_stream(
        s, seed=seed, start=start, end=start + days * 86400, faults=faults or FaultConfig(),
        models=Models(), stats=stats,
    ):  # fmt: skip
        if out.action != PUBLISH or out.expect == "reject":
            continue
        received = datetime.fromtimestamp(out.sim_t, UTC) + timedelta(seconds=1)
        yield int(received.timestamp() * 1000), decode(out.topic, out.payload, received, LIMITS)


def simulated(
    s: DeviceInfo, *, days: float, seed: int = 7, faults: FaultConfig | None = None
) -> Iterator[Message]:
    """The device's stored messages, in publish order."""
    for _, m in deliveries(s, days=days, seed=seed, faults=faults):
        yield m


def true_levels(s: DeviceInfo, *, days: float, seed: int = 7) -> tuple[dict[int, float], int]:
    """Ground truth of an eco-box stream: true fill level at each fill reading's ts (ms), and
    the emptyings that happened between its first and last reading."""
    box = EcoBox(s, device_rng(seed, s.device_id, stream=2), EcoboxParams())
    start = T0 / 1000
    levels: dict[int, float] = {}
    first = last = None
    for r in box.events(start, start + days * 86400):
        if r.channel == "fill":
            levels[int(np.floor(r.t * 1000))] = box.level
            if first is None:
                first = box.collections
            last = box.collections
    return levels, (last or 0) - (first or 0)


def replace(d: DeviceInfo, **kw: object) -> DeviceInfo:
    return dataclasses.replace(d, **kw)  # type: ignore[arg-type]
