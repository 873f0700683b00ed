"""Fleet state, emptying detection, plausibility, completeness, forecast and alert rules.

The stage after delivery: it sees every stored message once, in order per device, and keeps
the current state of every device (:class:`Fleet`). Pure, synchronous and deterministic; no
MQTT, HTTP or database here (the wiring publishes what :mod:`ingest.fleet.output` builds).
Rules, defaults and payloads: docs/alerts.md.
"""

from importlib.machinery import EXTENSION_SUFFIXES

from ingest.fleet import state as _state
from ingest.fleet.errors import FleetConfigError, FleetError, SnapshotError
from ingest.fleet.events import (
    AlertState,
    AlertTransition,
    Anomaly,
    AnomalyKind,
    Cause,
    Collection,
    Event,
    Forecast,
    Severity,
    Source,
)
from ingest.fleet.fleet import Fleet
from ingest.fleet.output import (
    ALERT_FILTER,
    MqttMessage,
    alert_payload,
    alert_topic,
    line,
    lines,
    plan_mqtt,
)
from ingest.fleet.settings import FleetSettings, Thresholds
from ingest.fleet.state import DeviceState

__all__ = [
    "ALERT_FILTER",
    "AlertState",
    "AlertTransition",
    "Anomaly",
    "AnomalyKind",
    "Cause",
    "Collection",
    "DeviceState",
    "Event",
    "Fleet",
    "FleetConfigError",
    "FleetError",
    "FleetSettings",
    "Forecast",
    "MqttMessage",
    "Severity",
    "SnapshotError",
    "Source",
    "Thresholds",
    "alert_payload",
    "alert_topic",
    "line",
    "lines",
    "plan_mqtt",
    "rules_build",
]


def rules_build() -> str:
    """``compiled`` when setup.py's mypyc built the per-message rules, ``python`` when they run
    from source (``TAZA_PURE_PYTHON=1``, or a checkout never installed): they cost about twice
    as much then (docs/performance.md), so the start log and ``taza_build_info`` say which."""
    file = _state.__file__ or ""
    return "compiled" if file.endswith(tuple(EXTENSION_SUFFIXES)) else "python"
