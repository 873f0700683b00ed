"""PlanPool: solves in another process, one per region, cached, and cleanly stopped.

The helpers passed as ``solve_fn`` are module-level so the spawned workers can import them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import multiprocessing
import os
import time
from collections.abc import Awaitable
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest

from ingest.plan import Plan, PlanPool, PlanRequest, PlanUnavailable, solve_plan
from tests.test_plan import check_plan, make_request

T = TypeVar("T")


async def worst_loop_delay(work: Awaitable[T], tick_s: float = 0.01) -> tuple[T, float, float]:
    """Run ``work`` while a task ticks every ``tick_s``: its result, seconds, the worst lateness."""
    loop = asyncio.get_running_loop()
    worst, done = 0.0, False

    async def tick() -> None:
        nonlocal worst
        while not done:
            t = loop.time()
            await asyncio.sleep(tick_s)
            worst = max(worst, loop.time() - t - tick_s)

    ticker = asyncio.create_task(tick())
    t0 = time.perf_counter()
    try:
        result = await work
    finally:
        done = True
        await ticker
    return result, time.perf_counter() - t0, worst


async def test_the_event_loop_stays_responsive_during_a_solve() -> None:
    req = make_request(300, trucks=3, time_limit_s=2.5)
    pool = PlanPool()
    await pool.start()
    try:
        plan, took, worst = await worst_loop_delay(pool.solve(req))
    finally:
        await pool.aclose()
    print(f"\nprocess pool: a {took:.2f} s solve, worst event-loop delay {worst * 1000:.1f} ms")
    check_plan(req, plan)
    assert plan.solver == "ortools"
    assert took >= 2.0, "the solve was too short to show anything"
    assert worst < 0.5, f"the event loop stalled {worst:.2f} s"


async def test_in_a_thread_the_same_solve_would_freeze_the_loop() -> None:
    """Why the pool exists: OR-Tools holds the GIL (if this ever fails, a thread would do)."""
    req = make_request(300, trucks=3, time_limit_s=1.0)
    _, took, worst = await worst_loop_delay(asyncio.to_thread(solve_plan, req))
    print(f"\nthread: a {took:.2f} s solve, worst event-loop delay {worst * 1000:.0f} ms")
    assert worst > 0.5


async def test_cache_and_sharing() -> None:
    req = make_request(40, trucks=2, time_limit_s=0.3)
    pool = PlanPool(cache_ttl_s=60)
    try:
        a, b = await asyncio.gather(pool.solve(req), pool.solve(req))
        assert a is b, "two callers asking at once share one solve"
        t0 = time.perf_counter()
        assert await pool.solve(req) is a
        assert time.perf_counter() - t0 < 0.05
        assert pool.cached("almaty") is a
        other = await pool.solve(req.model_copy(update={"trucks": 3}))
        assert other is not a
        assert other.trucks == 3
        fresh = await pool.solve(req, fresh=True)
        assert fresh is not a
        assert fresh.bins_served == a.bins_served
    finally:
        await pool.aclose()

    short = PlanPool(cache_ttl_s=0.2)
    try:
        first = await short.solve(req.model_copy(update={"time_limit_s": 0}))
        await asyncio.sleep(0.3)
        assert await short.solve(req.model_copy(update={"time_limit_s": 0})) is not first
        assert short.cached("almaty") is not first
    finally:
        await short.aclose()


def _timed_solve(log: Path, req: PlanRequest) -> Plan:
    start = time.time()
    time.sleep(0.4)
    plan = solve_plan(req)
    with (log / f"{os.getpid()}-{start}.json").open("w") as f:
        json.dump({"region": req.region, "start": start, "end": time.time()}, f)
    return plan


def _read_runs(log: Path) -> list[dict[str, float | str]]:
    return [json.loads(p.read_text()) for p in log.iterdir()]


async def test_one_solve_per_region_at_a_time(tmp_path: Path) -> None:
    base = make_request(20, trucks=2, time_limit_s=0)
    reqs = [
        base,
        base.model_copy(update={"trucks": 3}),
        base.model_copy(update={"trucks": 1}),
        base.model_copy(update={"region": "astana"}),
    ]
    pool = PlanPool(workers=2, solve_fn=partial(_timed_solve, tmp_path))
    await pool.start()
    try:
        plans = await asyncio.gather(*(pool.solve(r) for r in reqs))
    finally:
        await pool.aclose()
    assert [p.trucks for p in plans] == [2, 3, 1, 2]
    assert [p.region for p in plans] == ["almaty"] * 3 + ["astana"]
    runs = _read_runs(tmp_path)
    almaty = sorted((r["start"], r["end"]) for r in runs if r["region"] == "almaty")
    assert len(almaty) == 3
    for (_, end), (start, _) in itertools.pairwise(almaty):
        assert start >= end, f"two almaty solves overlapped: {almaty}"


def _die_first(flag: Path, req: PlanRequest) -> Plan:
    if not flag.exists():
        flag.touch()
        os._exit(7)
    return solve_plan(req)


async def test_a_dead_worker_is_an_error_and_the_next_solve_works(tmp_path: Path) -> None:
    req = make_request(20, trucks=2, time_limit_s=0)
    pool = PlanPool(solve_fn=partial(_die_first, tmp_path / "died"))
    try:
        with pytest.raises(PlanUnavailable) as e:
            await pool.solve(req)
        assert e.value.reason == "worker_died"
        plan = await pool.solve(req)
        check_plan(req, plan)
    finally:
        await pool.aclose()


async def test_bounded_and_clean_shutdown() -> None:
    before = {p.pid for p in multiprocessing.active_children()}
    pool = PlanPool(max_pending=1)
    await pool.start()
    workers = {p.pid for p in multiprocessing.active_children()} - before
    assert len(workers) == 1
    slow = asyncio.create_task(pool.solve(make_request(200, trucks=3, time_limit_s=1.5)))
    await asyncio.sleep(0.1)
    with pytest.raises(PlanUnavailable) as e:
        await pool.solve(
            make_request(10, trucks=1, time_limit_s=0).model_copy(update={"region": "astana"})
        )
    assert e.value.reason == "busy"

    t0 = time.perf_counter()
    await pool.aclose()
    assert time.perf_counter() - t0 < 1.5 + 2.0, "shutdown waited longer than the time limit"
    with pytest.raises(PlanUnavailable) as e:
        await slow
    assert e.value.reason == "shutting_down"
    with pytest.raises(PlanUnavailable) as e:
        await pool.solve(make_request(5, trucks=1))
    assert e.value.reason == "shutting_down"
    alive = {p.pid for p in multiprocessing.active_children()}
    assert not workers & alive, "a solver process outlived the pool"
