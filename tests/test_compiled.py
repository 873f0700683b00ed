"""What setup.py compiles (mypyc) runs compiled, built from this source, and says what the
source says.

The modules listed in pyproject.toml's ``[tool.taza] compiled`` (the device contract's decode
and encode, the MQTT codec, the fleet rules: what runs per message) run compiled unless the
build said ``TAZA_PURE_PYTHON=1``; a build older than its source would test (and benchmark)
code that is no longer the checkout's, so that fails here with the command that rebuilds it.
The compiled and the pure-Python forms (``tests/python_source.py``, in a subprocess) must say
the same, bit for bit:

- the contract: every payload of the bad-payload corpus, a simulated fleet's stream in every
  firmware style with every malformation, duplicate and clock skew the simulator makes
  (decoded, refused with the same reason and detail, encoded to the same lines), and its
  packets through the MQTT parser, cut at random places and with random bytes changed;
- the rules: the same events and snapshot on simulated fleets with every fault the simulator
  makes, on a stream that jumps between two bins (spikes, emptyings, falls: the rules' rare
  branches) and on a bin walked through every temperature, tilt, battery and fault threshold.
"""

from __future__ import annotations

import dataclasses
import heapq
import importlib
import importlib.util
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devices.message import Channel, Message
from devstack.pysource import ROOT, compiled_modules, extension_sources, module_name
from simulator.stream import FaultConfig

# Nothing compiled at the top (devices.message and simulator.stream are not on the list):
# ``python -m tests.python_source`` imports this module after the source finder is in place.

COMPILED = compiled_modules()
EXTENSIONS = extension_sources()
PURE = os.environ.get("TAZA_PURE_PYTHON", "") in ("1", "true", "yes")
FAULTS = FaultConfig(duplicate_rate=0.02, out_of_order_rate=0.02, offline_rate=0.05)


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


def test_the_c_extensions_are_built_from_this_source_and_used() -> None:
    """``devices/_slots.c`` has a Python fallback, so a failed build would only be slower:
    this is where it shows."""
    from devices.construct import fast_constructor, python_constructor
    from devices.message import Fill

    assert EXTENSIONS, "pyproject.toml lists the C extensions setup.py builds"
    for path in EXTENSIONS:
        name = module_name(path.removesuffix(".c"))
        if PURE:
            assert importlib.util.find_spec(name) is None, f"TAZA_PURE_PYTHON=1 yet {name} is built"
            continue
        module = importlib.import_module(name)
        file = Path(str(module.__file__))
        assert file.stat().st_mtime >= (ROOT / path).stat().st_mtime, (
            f"{file.name} is older than {path}: rebuild with `make venv`"
        )
    made = fast_constructor(Fill)
    assert (type(made).__name__ == "Maker") is not PURE
    assert made(1.0) == python_constructor(Fill)(1.0) == Fill(1.0)


def test_no_compiled_module_outlives_its_place_on_the_list() -> None:
    """A ``.so`` beside a ``.py`` is imported instead of it: one left by a build from before a
    module left the list would run old code whatever the source says."""
    listed = {str(Path(p).with_suffix("")) for p in COMPILED + EXTENSIONS}
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


def rules_trace() -> list[str]:
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


def contract_trace() -> list[str]:
    """What decode, encode and the MQTT parser make of good, bad and broken input, as text."""
    import devices
    from devices import Ignored, Limits, Rejected
    from ingest import mqttcodec as codec
    from simulator.stream import PUBLISH, Models, StreamStats, fleet_stream
    from tests.test_fleet_support import T0, spec

    def outcome(topic: str, payload: bytes, received: datetime, limits: Limits) -> str:
        try:
            m = devices.decode(topic, payload, received, limits)
        except Rejected as r:
            return f"rejected {r.reason} {r.field} {r.detail}"
        except Ignored as i:
            return f"ignored {i}"
        return f"{m!r} {devices.encode(m, registry.get(m.topic.device_id))}"

    out: list[str] = []
    corpus = ROOT / "tests" / "data" / "bad"
    manifest = json.loads((corpus / "manifest.json").read_text(encoding="utf-8"))
    received = datetime.fromisoformat(manifest["received_at"].replace("Z", "+00:00"))
    registry: dict[str, devices.DeviceInfo] = {}
    for name, case in sorted(manifest["cases"].items()):
        limits = Limits(strict=bool(case.get("strict", False)))
        out.append(outcome(case["topic"], (corpus / name).read_bytes(), received, limits))
    fleet = [spec(f"eb-{i}", site=s) for i, s in enumerate(("residential", "park", "transit"))]
    fleet += [spec(f"rvm-{i}", kind="rvm", site="commercial") for i in range(3)]
    registry = {d.device_id: d for d in fleet}
    faults = FaultConfig(
        malformed_rate=0.1, duplicate_rate=0.02, out_of_order_rate=0.02, clock_skew_s=600,
        skew_fraction=0.5, offline_rate=0.05,
    )  # fmt: skip
    limits = Limits(max_age=timedelta(days=30))
    packets: list[bytes] = []
    start = T0 / 1000
    stream = fleet_stream(
        fleet, seed=11, start=start, end=start + 2 * 86400, faults=faults, models=Models(),
        stats=StreamStats(),
    )  # fmt: skip
    for k, o in enumerate(stream):
        if o.action != PUBLISH:
            continue
        at = datetime.fromtimestamp(o.sim_t, UTC) + timedelta(milliseconds=k % 3000)
        out.append(outcome(o.topic, o.payload, at, limits))
        packets.append(codec.publish(o.topic, o.payload, k % 2, o.retain, k % 65535 + 1))
    assert sum(x.startswith("rejected") for x in out) > 100, "the stream exercises refusals"
    rng = random.Random(3)

    def parse(data: bytes) -> str:
        parser = codec.Parser()
        got: list[str] = []
        try:
            i = 0
            while i < len(data):
                n = rng.randrange(1, 300)
                got += map(repr, parser.feed(data[i : i + n]))
                i += n
        except codec.MalformedPacket as e:
            got.append(f"malformed {e}")
        return f"{got} pending {parser.pending}"

    out.append(parse(b"".join(packets)))
    for _ in range(3000):  # a few packets from a boundary, bytes changed, the end cut off
        i = rng.randrange(len(packets) - 4)
        cut = bytearray(b"".join(packets[i : i + rng.randrange(1, 4)]))
        for _ in range(rng.randrange(1, 4)):
            cut[rng.randrange(min(len(cut), 40))] = rng.randrange(256)
        out.append(parse(bytes(cut[: rng.randrange(1, len(cut) + 1)])))
    return out


TRACES: dict[str, Callable[[], list[str]]] = {"rules": rules_trace, "contract": contract_trace}


def python_source(trace: str) -> list[str]:
    """The trace with every listed module run from its ``.py`` (``tests/python_source.py``)."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.run(
        [sys.executable, "-m", "tests.python_source", trace],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True,
    ).stdout.splitlines()  # fmt: skip


def same(compiled: list[str], pure: list[str]) -> None:
    assert len(pure) == len(compiled)
    for i, (a, b) in enumerate(zip(compiled, pure, strict=True)):
        assert a == b, f"line {i}: compiled {a!r} != python {b!r}"


def test_compiled_and_python_contract_say_the_same_to_the_last_bit() -> None:
    compiled = contract_trace()
    reasons = {line.split()[1] for line in compiled if line.startswith("rejected")}
    assert len(reasons) > 15, reasons  # the corpus names every reason decode gives
    assert any("malformed" in line for line in compiled)
    same(compiled, python_source("contract"))


def test_compiled_and_python_rules_say_the_same_to_the_last_bit() -> None:
    compiled = rules_trace()
    assert sum("AlertTransition(" in line for line in compiled) > 50  # the stream exercises them
    assert any("Anomaly(" in line for line in compiled)
    assert any("Collection(" in line for line in compiled)
    for alert in ("fire", "overheat", "tilted", "lid_open", "sensor_fault", "battery_low"):
        assert any(f"alert='{alert}', state=<AlertState.RESOLVED" in x for x in compiled), alert
    same(compiled, python_source("rules"))
