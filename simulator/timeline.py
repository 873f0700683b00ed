"""A device's timeline: timed events popped in order (ties in insertion order), with the
exponential waiting times of rare random events (fires, jams, printer faults)."""

from __future__ import annotations

import heapq
import math

import numpy as np

_DAY = 86400.0


class Timeline:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._queue: list[tuple[float, int, str]] = []
        self._order = 0

    def __bool__(self) -> bool:
        return bool(self._queue)

    def push(self, when: float, what: str) -> None:
        self._order += 1
        heapq.heappush(self._queue, (when, self._order, what))

    def pop(self) -> tuple[float, str]:
        when, _, what = heapq.heappop(self._queue)
        return when, what

    def after_exponential(self, t: float, rate_per_day: float) -> float:
        """When an event with this mean daily rate next happens after ``t`` (never if 0)."""
        if rate_per_day <= 0:
            return math.inf
        return t + float(self.rng.exponential(_DAY / rate_per_day))
