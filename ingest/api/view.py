"""What the API reads of the fleet stage: a small read-only protocol.

The service's fleet stage provides it, and so does a bare :class:`ingest.fleet.Fleet`
(tests, tools).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from ingest.fleet import AlertTransition, DeviceState


class FleetView(Protocol):
    def states(self) -> Iterable[DeviceState]: ...

    def get(self, device_id: str) -> DeviceState | None: ...

    def firing(self) -> Iterable[AlertTransition]: ...
