"""What the API reads of the fleet stage: a small read-only protocol.

The service's fleet stage provides it; :class:`FleetAdapter` gives a bare
:class:`ingest.fleet.Fleet` the same face (tests, tools).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from ingest.fleet import AlertTransition, DeviceState, Fleet


class FleetView(Protocol):
    def states(self) -> Iterable[DeviceState]: ...

    def get(self, device_id: str) -> DeviceState | None: ...

    def firing(self) -> Iterable[AlertTransition]: ...


class FleetAdapter:
    """A :class:`Fleet` as a :class:`FleetView`."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def states(self) -> Iterator[DeviceState]:
        return iter(self.fleet.devices.values())

    def get(self, device_id: str) -> DeviceState | None:
        return self.fleet.get(device_id)

    def firing(self) -> Iterator[AlertTransition]:
        return self.fleet.firing()
