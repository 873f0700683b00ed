"""Instructions per message of the service's per-message steps, counted (valgrind's callgrind),
compiled (as installed) against the same code run from its Python source, in one run.

    .venv/bin/python bench/instructions.py              # table (about 4 minutes)
    .venv/bin/python bench/instructions.py --json
    .venv/bin/python bench/instructions.py --steps rules --messages 5000

Why counts: on the shared 2-core machine, CPU time per message moves ±30 % between runs minutes
apart (the same build measured 7.8–12.3 µs/msg for ``Pipeline.process`` in one hour), so a
change worth 10 % cannot be told from the noise by timing. Instructions retired do not depend
on the neighbours (the hash seed is fixed, so dict layouts repeat too), so a
before/after of two builds is exact enough to keep or drop a change. They are not time —
a cache miss costs more than an add — so speed claims still come from ``compare.py``.

Steps, on compare.py's four-topics stream (the same payloads as ``bench/hotpath.py``):

- ``pipeline``: ``Pipeline.process`` per message (decode, validate, encode, batch);
- ``rules``: ``Fleet.apply`` per stored message (the alert stage's rules);
- ``stage``: ``FleetStage.delivered`` per 5,000-message batch (journal record, rules, alert
  payloads, history lines; the journal's fdatasync is a system call, not counted).

Only the measured loop is counted (``callgrind_control -i on/off`` around it): imports, the
stream and the interpreter's exit are not. Needs valgrind (``apt-get install valgrind``;
``make bench`` installs it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the checkout's packages, not bench/ingest.py
STEPS = ("pipeline", "rules", "stage")


def _toggle(state: str) -> None:
    subprocess.run(
        ["callgrind_control", "-i", state, str(os.getpid())], check=True, capture_output=True
    )


def child(step: str, n: int) -> None:
    """Run ``step`` on ``n`` messages with callgrind counting only the loop."""
    import asyncio
    import gc
    from datetime import UTC, datetime

    sys.path.append(str(HERE))
    import hotpath
    from fleet_apply import open_stage

    from ingest.batch import Batch, Incoming
    from ingest.fleet.fleet import Fleet
    from ingest.fleet.settings import FleetSettings, Thresholds
    from ingest.metrics import Metrics
    from ingest.pipeline import Pipeline, limits_from
    from ingest.service import GC_THRESHOLDS

    hotpath.N = n
    received = datetime.now(UTC)
    items = [
        Incoming(i, 1, 0, t, p, received, 0.0) for i, (t, p) in enumerate(hotpath.four_topics())
    ]
    pipe = Pipeline(Metrics(), limits=limits_from(4096, 7 * 86400, False))
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    batches, batch = [], Batch()
    if step == "pipeline":
        _toggle("on")
    for item in items:
        pipe.process(item, batch)
        if len(batch.lines) >= 5000:
            batches.append(batch)
            batch = Batch()
    if step == "pipeline":
        _toggle("off")
        return
    batches.append(batch)
    if step == "rules":
        fleet = Fleet(FleetSettings())
        pairs = [(m, d) for b in batches for m, d in zip(b.messages, b.devices, strict=True)]
        now_ms = int(received.timestamp() * 1000)
        _toggle("on")
        for m, d in pairs:
            fleet.apply(m, d, now_ms)
        _toggle("off")
        return

    async def stage_pass(directory: str) -> None:
        stage = open_stage(Thresholds(), directory, lambda *a, **k: None)
        history = asyncio.create_task(stage.history.run())
        _toggle("on")
        for b in batches:
            await stage.delivered(b.delivered())
            await asyncio.sleep(0)  # the history task takes its lines, as in the service
        _toggle("off")
        history.cancel()
        stage.close()

    with tempfile.TemporaryDirectory(prefix="taza-instr-") as tmp:
        asyncio.run(stage_pass(tmp))


def count(step: str, n: int, source: bool) -> float:
    """Instructions per message of one step, one form."""
    with tempfile.TemporaryDirectory(prefix="taza-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
               f"--callgrind-out-file={out}", sys.executable, __file__, "--child", step,
               "--messages", str(n)] + (["--source"] if source else [])  # fmt: skip
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=HERE.parent)
        text = out.read_text()
    # "summary:" counts from the start (0 with --instr-atstart=no), "totals:" what was collected.
    totals = [int(x) for x in re.findall(r"^(?:summary|totals): (\d+)", text, re.M)]
    if not totals or max(totals) == 0:
        raise SystemExit(f"{step}: no instructions counted (did callgrind_control reach it?)")
    return max(totals) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--steps", default=",".join(STEPS), help="comma-separated: " + ", ".join(STEPS))
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--source", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        if args.source:
            from devstack import pysource

            pysource.install()
        child(args.child, args.messages)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind: apt-get install valgrind (make bench installs it)")
    steps = [s for s in args.steps.split(",") if s]
    if unknown := set(steps) - set(STEPS):
        raise SystemExit(f"unknown steps: {', '.join(sorted(unknown))}")
    result: dict[str, dict[str, float]] = {}
    for step in steps:
        if not args.json:
            print(f"counting {step} ...", file=sys.stderr)
        compiled = count(step, args.messages, source=False)
        source = count(step, args.messages, source=True)
        result[step] = {"compiled": round(compiled), "source": round(source),
                        "ratio": round(compiled / source, 3)}  # fmt: skip
    if args.json:
        print(json.dumps({"messages": args.messages, "steps": result}, indent=1))
        return
    print(f"instructions per message, {args.messages:,} messages (four-topics stream)")
    print(f"{'step':9} {'compiled':>9} {'source':>9} {'ratio':>6}")
    for step, r in result.items():
        print(f"{step:9} {r['compiled']:9,.0f} {r['source']:9,.0f} {r['ratio']:6.3f}")


if __name__ == "__main__":
    main()
