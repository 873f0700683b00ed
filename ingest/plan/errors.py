"""Errors of the collection planner.

    IngestError
     └── PlanError            reason: a machine-readable code, message: for people
          ├── SolverFailed     the route solver raised or found nothing: the fallback answers
          └── PlanUnavailable  no plan could be made (unknown region, worker died, shutting down)

Foreign errors (OR-Tools, the process pool) are mapped to these in ``solve.py`` and
``pool.py`` only.
"""

from __future__ import annotations

from ingest.errors import IngestError


class PlanError(IngestError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class SolverFailed(PlanError):
    """OR-Tools could not give routes; the plan is the fallback's, ``solver_error`` says why."""


class PlanUnavailable(PlanError):
    """No plan at all: ``unknown_region``, ``worker_died``, ``shutting_down``, ``internal``."""
