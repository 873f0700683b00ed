"""Collection plans: which bins are due, in which order each truck empties them.

A pure package (no service, MQTT or HTTP): build a :class:`PlanRequest` with
:meth:`PlanSettings.request`, solve it with :func:`solve_plan` (blocking) or, from the
service's event loop, with :meth:`PlanPool.solve` (in another process).
"""

from ingest.plan.errors import PlanError, PlanUnavailable, SolverFailed
from ingest.plan.model import (
    Bin,
    Depot,
    Due,
    Plan,
    PlanRequest,
    Route,
    SolverName,
    Stop,
    Unassigned,
    UnassignedReason,
)
from ingest.plan.pool import PlanPool
from ingest.plan.settings import DEFAULT_DEPOTS, FillReading, PlanSettings, select_due
from ingest.plan.solve import solve_plan

__all__ = [
    "DEFAULT_DEPOTS",
    "Bin",
    "Depot",
    "Due",
    "FillReading",
    "Plan",
    "PlanError",
    "PlanPool",
    "PlanRequest",
    "PlanSettings",
    "PlanUnavailable",
    "Route",
    "SolverFailed",
    "SolverName",
    "Stop",
    "Unassigned",
    "UnassignedReason",
    "select_due",
    "solve_plan",
]
