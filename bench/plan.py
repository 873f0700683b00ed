"""Collection routes: nearest neighbour + 2-opt against OR-Tools on the simulator's fleet.

Bins are the simulator's Almaty eco-boxes (``simulator.fleet.generate``: normal spread of
σ = 7 km around the centre, its mix of 120–1100 L volumes), each 80–100 % full, planned from
the default depot with the default settings (06:00–14:00, 2 min per bin, 30 km/h, detour 1.3,
48,000 L trucks). Each scenario is ``bins:trucks:limit_s``; the total run is about the sum of
the limits plus a second per scenario.

    .venv/bin/python bench/plan.py [--scenarios 50:2:2,200:4:5,200:3:5,1000:12:10]
                                   [--seed 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # bench/ingest.py would shadow the ingest package

from ingest.plan import FillReading as Reading
from ingest.plan import PlanSettings, solve_plan
from simulator.fleet import capacity_of, generate

NOW = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)  # 06:00 in Almaty: a whole shift ahead


def readings(n: int, seed: int) -> list[Reading]:
    rng = np.random.default_rng(seed)
    return [
        Reading(d.device_id, d.lat, d.lon, float(rng.uniform(80, 100)), capacity_of(d), None, None)
        for d in generate(ecoboxes=n, rvms=0, regions=["almaty"], seed=seed)
    ]


def run(bins: int, trucks: int, limit: float, seed: int) -> dict[str, float | int | None]:
    req = PlanSettings(trucks=trucks, time_limit_s=limit).request(
        "almaty", readings(bins, seed), NOW
    )
    t0 = time.perf_counter()
    plan = solve_plan(req)
    wall = time.perf_counter() - t0
    return {
        "bins": bins,
        "trucks": trucks,
        "limit_s": limit,
        "fallback_km": round(plan.fallback_km, 1),
        "fallback_served": plan.fallback_served,
        "fallback_s": round(plan.fallback_time_s, 3),
        "ortools_km": round(plan.distance_km, 1) if plan.solver == "ortools" else None,
        "ortools_served": plan.bins_served,
        "ortools_s": round(plan.solver_time_s, 2),
        "wall_s": round(wall, 2),
        "ratio": None if plan.improvement_ratio is None else round(plan.improvement_ratio, 3),
        "fallback_km_per_bin": round(plan.fallback_km / max(1, plan.fallback_served), 3),
        "ortools_km_per_bin": round(plan.distance_km / max(1, plan.bins_served), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default="50:2:2,200:4:5,200:3:5,1000:12:10")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    for spec in args.scenarios.split(","):
        b, t, lim = spec.split(":")
        rows.append(run(int(b), int(t), float(lim), args.seed))
        if not args.json:
            r = rows[-1]
            print(
                f"{r['bins']:>5} bins {r['trucks']:>2} trucks limit {r['limit_s']:>4} s | "
                f"NN+2-opt {r['fallback_km']:>7} km {r['fallback_served']:>4} served "
                f"{r['fallback_s']:>6} s | OR-Tools {r['ortools_km']} km "
                f"{r['ortools_served']:>4} served {r['ortools_s']:>5} s (wall {r['wall_s']} s) | "
                f"ratio {r['ratio']} | km/bin {r['fallback_km_per_bin']} vs "
                f"{r['ortools_km_per_bin']}",
                flush=True,
            )
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
