"""The fleet rules as shipped: compiled by mypyc (setup.py), and the same as their Python source.

The modules listed in pyproject.toml's ``[tool.taza] compiled`` run compiled unless the build
said ``TAZA_PURE_PYTHON=1``; a build older than its source would test (and benchmark) code that
is no longer the checkout's, so that fails here with the command that rebuilds it. The
compiled and the pure-Python forms must give the same events and the same snapshot, bit for
bit, on simulated fleets with every fault the simulator makes, on a stream that jumps
between two bins (spikes, emptyings, falls: the rules' rare branches) and on a bin walked
through every temperature, tilt, battery and fault threshold.
"""

from __future__ import annotations

import dataclasses
import heapq
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

from devices.message import Channel, Message
from simulator.stream import FaultConfig

# Nothing of ingest.fleet at the top: ``python -m tests.test_compiled`` must install its
# finder before the first import of a listed module (hence the imports inside functions).

ROOT = Path(__file__).resolve().parents[1]
COMPILED: list[str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["taza"][
    "compiled"
]
PURE = os.environ.get("TAZA_PURE_PYTHON", "") in ("1", "true", "yes")
FAULTS = FaultConfig(duplicate_rate=0.02, out_of_order_rate=0.02, offline_rate=0.05)


def module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def test_the_fleet_rules_run_compiled_and_built_from_this_source() -> None:
    assert COMPILED, "pyproject.toml lists the modules setup.py compiles"
    for path in COMPILED:
        module = importlib.import_module(module_name(path))
        file = Path(str(module.__file__))
        source = ROOT / path
        if PURE:
            assert file == source, f"{path}: TAZA_PURE_PYTHON=1 yet {file.name} is imported"
            continue
        assert file.suffix == ".so", (
            f"{path} runs as Python ({file.name}): build it with `make venv` "
            "(or set TAZA_PURE_PYTHON=1 when no C compiler is wanted)"
        )
        assert file.stat().st_mtime >= source.stat().st_mtime, (
            f"{file.name} is older than {path}: rebuild with `make venv`"
        )


def test_no_compiled_module_outlives_its_place_on_the_list() -> None:
    """A ``.so`` beside a ``.py`` is imported instead of it: one left by a build from before a
    module left the list would run old code whatever the source says."""
    listed = {str(Path(p).with_suffix("")) for p in COMPILED}
    for package in ("ingest", "devices", "simulator", "devstack", "operators"):
        for so in (ROOT / package).rglob("*.cpython-*.so"):
            stem = str(so.relative_to(ROOT)).split(".cpython-")[0]
            assert stem in listed, f"{so.relative_to(ROOT)} is not built from the list: delete it"


def two_bins_on_one_id() -> Iterator[tuple[int, Message]]:
    """Two bins' fill readings under the first one's id, in time order: every switch between
    them is a jump up (held, spike or real) or down (emptying, or a fall without one)."""
    from tests.test_fleet_support import deliveries, spec, topic

    a, b = spec("eb-two-a"), spec("eb-two-b", site="commercial")
    merged = heapq.merge(
        deliveries(a, days=4, seed=3), deliveries(b, days=4, seed=4), key=lambda x: x[0]
    )
    fills = ((t, m) for t, m in merged if m.topic.channel is Channel.FILL)
    for seq, (now_ms, m) in enumerate(fills, 1):
        yield now_ms, dataclasses.replace(m, topic=topic(a, Channel.FILL), seq=seq)


def hot_tilted_faulty() -> Iterator[tuple[int, Message]]:
    """One bin's random walk through every threshold of the temperature, tilt, battery and
    fault rules (readings and status reports interleaved), so each fires and clears."""
    import random

    from devices.message import Fill, Status
    from tests.test_fleet_support import spec, topic

    d = spec("eb-hot")
    rng = random.Random(5)
    fill_topic, status_topic = topic(d, Channel.FILL), topic(d, Channel.STATUS)
    t0 = 1_780_000_000_000
    level = temp = tilt = 0.0
    battery = 90.0
    faults = ("fire", "overheat", "tilted", "lid_open", "sensor_error", "low_battery")
    for i in range(3000):
        ts = t0 + i * 300_000
        level = min(100.0, max(0.0, level + rng.uniform(-3, 4)))
        temp = min(120.0, max(-30.0, temp + rng.uniform(-8, 8.4)))
        tilt = min(90.0, max(0.0, tilt + rng.uniform(-6, 6.2)))
        if i % 4 == 3:
            battery = min(100.0, max(0.0, battery + rng.uniform(-6, 5)))
            on = tuple(f for f in faults if rng.random() < 0.08)
            body: Fill | Status = Status(battery_pct=battery, temperature_c=temp, faults=on)
            yield ts, Message(status_topic, ts, i, body)
        else:
            body = Fill(round(level, 1), temperature_c=round(temp, 1), tilt_deg=round(tilt, 1))
            yield ts, Message(fill_topic, ts, i, body)


def trace() -> list[str]:
    """Everything the rules say about a few streams, as text that compares floats exactly."""
    from ingest.fleet import Fleet
    from tests.test_fleet_support import deliveries, spec

    devices = [spec(f"eb-{i}", site=s) for i, s in enumerate(("residential", "park", "transit"))]
    devices += [spec("rvm-0", kind="rvm", site="commercial")]
    streams = [deliveries(d, days=6, seed=9, faults=FAULTS) for d in devices]
    registry = {d.device_id: d for d in devices}
    out: list[str] = []
    fleet = Fleet()
    last_tick = 0
    for now_ms, m in heapq.merge(*streams, key=lambda x: x[0]):
        out += map(repr, fleet.apply(m, registry[m.topic.device_id], now_ms))
        if now_ms - last_tick >= 600_000:
            out += map(repr, fleet.tick(now_ms))
            last_tick = now_ms
    for now_ms, m in two_bins_on_one_id():
        out += map(repr, fleet.apply(m, None, now_ms))
    hot = spec("eb-hot")
    for now_ms, m in hot_tilted_faulty():
        out += map(repr, fleet.apply(m, hot, now_ms))
    out += map(repr, fleet.firing())
    out.append(fleet.snapshot().decode())
    return out


class _Source(importlib.abc.MetaPathFinder):
    """Finds the listed modules' ``.py`` even where a compiled ``.so`` sits beside it."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = set(names)

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name not in self.names:
            return None
        return importlib.util.spec_from_file_location(name, ROOT / (name.replace(".", "/") + ".py"))


def _pure_trace() -> None:
    """``python -m tests.test_compiled``: :func:`trace` with the Python source of every listed
    module (the subprocess of the test below)."""
    names = [module_name(p) for p in COMPILED]
    assert not any(n.startswith("ingest.fleet") for n in sys.modules), "imported too early"
    sys.meta_path.insert(0, _Source(names))
    for name in names:
        file = str(importlib.import_module(name).__file__)
        assert file.endswith(".py"), file
    sys.stdout.write("\n".join(trace()) + "\n")


def test_compiled_and_python_rules_say_the_same_to_the_last_bit() -> None:
    compiled = trace()
    assert sum("AlertTransition(" in line for line in compiled) > 50  # the stream exercises them
    assert any("Anomaly(" in line for line in compiled)
    assert any("Collection(" in line for line in compiled)
    for alert in ("fire", "overheat", "tilted", "lid_open", "sensor_fault", "battery_low"):
        assert any(f"alert='{alert}', state=<AlertState.RESOLVED" in x for x in compiled), alert
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    pure = subprocess.run(
        [sys.executable, "-m", "tests.test_compiled"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert len(pure) == len(compiled)
    for i, (a, b) in enumerate(zip(compiled, pure, strict=True)):
        assert a == b, f"line {i}: compiled {a!r} != python {b!r}"


if __name__ == "__main__":
    _pure_trace()
