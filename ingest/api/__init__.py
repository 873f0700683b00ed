"""The operators' HTTP API: JSON under ``/api/v1``, served in taza-ingest's own event loop.

Read-only. Current state comes from the fleet stage (:class:`~ingest.api.view.FleetView`);
history (series, alert history, collections, RVM totals) from InfluxDB 1.x via InfluxQL on
``/query`` (:mod:`ingest.api.influx`). Endpoints, parameters and errors: docs/operators.md.
"""

from ingest.api.app import build_app
from ingest.api.context import ApiContext
from ingest.api.view import FleetView

__all__ = ["ApiContext", "FleetView", "build_app"]
