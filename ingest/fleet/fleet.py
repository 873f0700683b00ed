"""The fleet stage: a dict of per-device states, and the only place that routes to them.

No global mutable state: two ``Fleet`` objects holding disjoint sets of devices behave exactly
like one holding all of them, so devices can be partitioned across replicas by ``device_id``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import orjson

from devices.message import Message
from devices.registry import DeviceInfo
from ingest.fleet.errors import SnapshotError
from ingest.fleet.events import AlertTransition, Event, Source
from ingest.fleet.settings import FleetSettings, Thresholds
from ingest.fleet.state import DeviceState

SNAPSHOT_VERSION = 1


class Fleet:
    """Current state of every device seen; :meth:`apply` per stored message, in order."""

    def __init__(self, settings: FleetSettings | None = None) -> None:
        self.settings = settings or FleetSettings()
        self.devices: dict[str, DeviceState] = {}

    def __len__(self) -> int:
        return len(self.devices)

    def get(self, device_id: str) -> DeviceState | None:
        return self.devices.get(device_id)

    def states(self) -> Iterator[DeviceState]:
        """Every device's current state (do not mutate; iterate within one loop step)."""
        return iter(self.devices.values())

    def apply(
        self, message: Message, info: DeviceInfo | None, now_ms: int | None = None
    ) -> list[Event]:
        """Events caused by one stored message (with its registry entry, ``None`` if none)."""
        t = message.topic
        state = self.devices.get(t.device_id)
        if state is None:
            source = Source(t.device_id, t.region, t.kind.value, info)
            state = self.devices[t.device_id] = DeviceState(source, self._thresholds(info))
        elif state.source.info is not info:
            state.source = Source(t.device_id, t.region, t.kind.value, info)
            state.th = self._thresholds(info)
            state.fit_ms = None  # the next reading refits, against the new threshold
        return state.apply(message, now_ms)

    def tick(self, now_ms: int) -> list[Event]:
        """Wall-clock rules (``offline`` by silence); call every few seconds."""
        out: list[Event] = []
        for state in self.devices.values():
            if state.last_heard_ms >= 0 and "offline" not in state.alerts:
                out.extend(state.tick(now_ms))
        return out

    def firing(self) -> Iterator[AlertTransition]:
        """Every alert firing now (what the retained alert topics must show)."""
        for state in self.devices.values():
            yield from state.firing()

    def _thresholds(self, info: DeviceInfo | None) -> Thresholds:
        if info is None:
            return self.settings.defaults
        own = info.full_threshold_pct  # the optional fleet-file column
        return self.settings.thresholds_for(info.fraction, info.site, own)

    # ----- snapshot -------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """All device states as compact JSON (write it atomically; see docs/alerts.md)."""
        return orjson.dumps(
            {"v": SNAPSHOT_VERSION, "d": {k: s.snapshot() for k, s in self.devices.items()}}
        )

    @classmethod
    def restore(
        cls,
        data: bytes,
        settings: FleetSettings | None = None,
        registry: Mapping[str, DeviceInfo] | None = None,
    ) -> Fleet:
        """A fleet from :meth:`snapshot`; registry entries are attached again by id."""
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise SnapshotError(f"fleet snapshot is not JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("v") != SNAPSHOT_VERSION:
            version = doc.get("v") if isinstance(doc, dict) else None
            raise SnapshotError(
                f"fleet snapshot version {version!r}, this taza reads {SNAPSHOT_VERSION}"
            )
        fleet = cls(settings)
        devices = doc.get("d")
        if not isinstance(devices, dict):
            raise SnapshotError("fleet snapshot has no device table")
        for device_id, state in devices.items():
            if not isinstance(state, dict):
                raise SnapshotError(f"device {device_id}: not a fleet-state snapshot")
            info = registry.get(device_id) if registry is not None else None
            fleet.devices[device_id] = DeviceState.restore(
                device_id, state, info, fleet._thresholds(info)
            )
        return fleet
