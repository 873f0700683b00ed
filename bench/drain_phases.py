"""Where a drain's time goes: the CPU of every process, moment by moment, for the broker's
ceiling and taza with the alert stage on and off (``compare.py``'s four-topics stream).

``compare.py`` gives each contender one number; this shows why they differ. Each run is
sampled every ``--interval`` s (all threads of: the receiver — the C subscriber or
taza-ingest —, mosquitto, influxd, the C publishers) and split in two phases:

- *publishing*: while the C publishers still send. Mosquitto 2.0 reads one packet per
  socket per pass of its event loop, so the receiver's PUBACKs (one per message) are read
  no faster than each publisher's PUBLISHes: the broker queues most of the stream for the
  receiver and a receiver that could take more waits;
- *draining*: the publishers are done; the broker sends what it queued as fast as the
  receiver acknowledges. Here the receiver's CPU per message decides.

Printed per run: seconds, msg/s, ÷ the ceiling of the same round, each phase's length, the
share of a core each process used in it and, for taza, the messages stored by its end (the
database's own counter). Each taza run is ``compare.run_taza``'s (a short latency run after
it, not sampled). ``--timeline`` prints every sample; ``--json`` one object.

    .venv/bin/python bench/drain_phases.py [--messages 200000] [--rounds 1] [--timeline] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from compare import Mix, Timeline, ceiling, payload_mix, run_taza

from devstack.servers import InfluxDB1, Mosquitto

STAGES: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("taza, stage on", "on", {}),
    ("taza, stage off", "off", {"TAZA_ALERTS_ENABLED": "false"}),
)
BUSY = 0.05  # publishers using less of a core than this in an interval are done


def phases(tl: Timeline, n: int) -> dict[str, object]:
    """The run split where the publishers went idle: length, CPU shares, messages done."""
    usage = tl.usage()
    end = usage[-1][0]
    split = max((t for t, u in usage if u["publishers"] >= BUSY), default=0.0)
    out: dict[str, object] = {"seconds": round(end, 2), "msgs_per_s": round(n / end)}
    for name, lo, hi in (("publishing", 0.0, split), ("draining", split, end)):
        rows = [u for t, u in usage if lo < t <= hi]
        phase: dict[str, object] = {"seconds": round(hi - lo, 2)}
        if rows:
            phase["core_share"] = {
                g: round(statistics.fmean(r[g] for r in rows), 2) for g in rows[0]
            }
        if tl.done:
            i = max((k for k, (t, _) in enumerate(tl.samples) if t <= hi), default=0)
            phase["stored_by_end"] = tl.done[i]
        out[name] = phase
    out["timeline"] = [
        {"t": round(t, 2), **{g: round(v, 2) for g, v in u.items()}} for t, u in usage
    ]
    return out


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    ap.add_argument("--timeline", action="store_true", help="print every sample")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    mix = Mix(payload_mix(args.messages, args.devices, "dph"))
    runs: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="taza-phases-") as tmp:
        root = Path(tmp)
        with Mosquitto(root / "mq") as broker, InfluxDB1(root / "influx") as influxd:
            for r in range(args.rounds):
                say(f"round {r + 1}: ceiling ...")
                tl = Timeline(args.interval)
                c = ceiling(broker, mix, f"c{r}", tl)
                runs.append({"run": "ceiling", "round": r, **phases(tl, len(mix))})
                for name, short, env in STAGES:
                    say(f"round {r + 1}: {name} ...")
                    tl = Timeline(args.interval)
                    run_taza(root, broker, influxd, mix, mix.head(1000), env, f"{short}{r}", tl)
                    t = phases(tl, len(mix))
                    t["over_ceiling"] = round(int(t["msgs_per_s"]) / c["msgs_per_s"], 3)  # type: ignore[call-overload]
                    runs.append({"run": name, "round": r, **t})
    if args.json:
        print(json.dumps({"messages": len(mix), "interval_s": args.interval, "runs": runs}))
        return
    print(f"{len(mix):,} messages (four-topics), the C publishers' phase, then the drain; "
          "core shares: receiver / broker / database / publishers")  # fmt: skip
    print(
        f"{'run':18} {'s':>6} {'msg/s':>7} {'÷ceil':>6}  "
        f"{'publishing s':>12} {'shares':>19} {'stored':>7}  {'draining s':>10} {'shares':>14}"
    )
    for run in runs:
        pub, dr = run["publishing"], run["draining"]
        assert isinstance(pub, dict)
        assert isinstance(dr, dict)

        def shares(p: dict[str, object], keys: tuple[str, ...]) -> str:
            cs = p.get("core_share", {})
            assert isinstance(cs, dict)
            return " ".join(f"{cs.get(k, 0):.2f}" for k in keys if k in cs)

        print(f"{run['run']:18} {run['seconds']:>6} {run['msgs_per_s']:>7,} "
              f"{run.get('over_ceiling', 1.0):>6}  {pub['seconds']:>12} "
              f"{shares(pub, ('receiver', 'broker', 'database', 'publishers')):>19} "
              f"{pub.get('stored_by_end', ''):>7}  {dr['seconds']:>10} "
              f"{shares(dr, ('receiver', 'broker', 'database')):>14}")  # fmt: skip
        if args.timeline:
            for row in run["timeline"]:  # type: ignore[attr-defined]
                print("    " + "  ".join(f"{k} {v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
