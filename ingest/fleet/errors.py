"""Errors of the fleet stage.

    IngestError
     └── FleetError
          ├── FleetConfigError   alert settings that cannot work (names the key)
          └── SnapshotError      a snapshot that cannot be restored (version, shape)

Bad *input* is never an exception here: an implausible reading becomes an ``Anomaly`` event.
"""

from __future__ import annotations

from ingest.errors import IngestError


class FleetError(IngestError):
    """Base of the errors raised by :mod:`ingest.fleet`."""


class FleetConfigError(FleetError):
    """An alert setting is unknown, of the wrong type, or inconsistent with another."""


class SnapshotError(FleetError):
    """A snapshot of another version or a damaged one: start from history instead."""
