"""Solves in separate processes so the service's event loop never waits for a solver.

Both OR-Tools and the fallback hold the GIL for the whole solve: in a thread a 3 s solve
freezes intake for 3 s. ``PlanPool`` owns a ``spawn`` process pool (no fork of a running
asyncio service), runs at most one solve per region at a time, shares one solve between
callers asking the same question at once, and keeps each region's last plan for a short TTL.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from ingest.plan.errors import PlanUnavailable
from ingest.plan.model import Plan, PlanRequest
from ingest.plan.solve import solve_plan

SolveFn = Callable[[PlanRequest], Plan]


def _warm() -> None:
    """Run once in a new worker: pay OR-Tools' import before the first request does."""
    import ingest.plan.ortools_solver  # noqa: F401


class PlanPool:
    def __init__(
        self,
        *,
        workers: int = 1,
        cache_ttl_s: float = 30.0,
        max_pending: int = 8,
        solve_fn: SolveFn = solve_plan,
    ) -> None:
        self._workers = workers
        self._ttl = cache_ttl_s
        self._max_pending = max_pending
        self._solve_fn = solve_fn
        self._executor: ProcessPoolExecutor | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._cache: dict[str, tuple[Hashable, float, Plan]] = {}
        self._inflight: dict[tuple[str, Hashable], asyncio.Task[Plan]] = {}
        self._closed = False

    async def solve(self, req: PlanRequest, *, fresh: bool = False) -> Plan:
        """The plan for ``req``; the region's cached plan if the same question was answered
        less than ``cache_ttl_s`` ago (unless ``fresh``). Raises :class:`PlanUnavailable`."""
        if self._closed:
            raise PlanUnavailable("shutting_down", "the planner is stopping")
        key = req.cache_key()
        if not fresh and (hit := self._cached(req.region, key)) is not None:
            return hit
        slot = (req.region, key)
        task = self._inflight.get(slot)
        if task is None:
            if len(self._inflight) >= self._max_pending:
                raise PlanUnavailable(
                    "busy", f"{len(self._inflight)} plans are being solved; try again shortly"
                )
            task = asyncio.create_task(self._solve_region(req, key), name=f"plan-{req.region}")
            self._inflight[slot] = task
            task.add_done_callback(lambda t: self._done(slot, t))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if task.cancelled() and self.closed and not (me and me.cancelling()):
                raise PlanUnavailable("shutting_down", "the planner stopped") from None
            raise

    async def start(self) -> None:
        """Start the worker processes now (and import OR-Tools there) rather than on the
        first request."""
        loop = asyncio.get_running_loop()
        pool = self._pool()
        await asyncio.gather(*(loop.run_in_executor(pool, _warm) for _ in range(self._workers)))

    async def aclose(self) -> None:
        """Refuse new solves, cancel waiting ones, let a running one end (bounded by its
        time limit) and stop the workers."""
        self._closed = True
        tasks = list(self._inflight.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._executor is not None:
            ex, self._executor = self._executor, None
            await asyncio.to_thread(ex.shutdown, wait=True, cancel_futures=True)

    @property
    def closed(self) -> bool:
        return self._closed

    def cached(self, region: str) -> Plan | None:
        """The region's last plan if still fresh, whatever was asked."""
        hit = self._cache.get(region)
        return hit[2] if hit and time.monotonic() - hit[1] < self._ttl else None

    def _cached(self, region: str, key: Hashable) -> Plan | None:
        hit = self._cache.get(region)
        if hit and hit[0] == key and time.monotonic() - hit[1] < self._ttl:
            return hit[2]
        return None

    def _done(self, slot: tuple[str, Hashable], task: asyncio.Task[Plan]) -> None:
        self._inflight.pop(slot, None)
        if not task.cancelled():
            task.exception()  # retrieved: every caller may have gone away

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self._workers, mp_context=multiprocessing.get_context("spawn")
            )
        return self._executor

    async def _solve_region(self, req: PlanRequest, key: Hashable) -> Plan:
        async with self._locks.setdefault(req.region, asyncio.Lock()):
            if (hit := self._cached(req.region, key)) is not None:
                return hit
            pool = self._pool()
            try:
                plan = await asyncio.get_running_loop().run_in_executor(pool, self._solve_fn, req)
            except BrokenProcessPool as e:
                if self._executor is pool:
                    self._executor = None  # the next solve starts new workers
                pool.shutdown(wait=False, cancel_futures=True)
                raise PlanUnavailable("worker_died", f"the solver process died: {e}") from None
            except PlanUnavailable:
                raise
            except Exception as e:
                raise PlanUnavailable("internal", f"{type(e).__name__}: {e}") from e
            self._cache[req.region] = (key, time.monotonic(), plan)
            return plan
