"""Decode + encode cost per message on one core, and the parse/validate choices side by side.

    .venv/bin/python bench/decode.py            # table
    .venv/bin/python bench/decode.py --json     # machine-readable
    .venv/bin/python bench/decode.py --help

A realistic mix (default 70 % fill, 20 % status, 10 % deposit) from a seeded generator goes
through four paths, all bytes -> devices.Message with the same topic parsing, ts window and
message construction, so only the parse/validate step differs:

* ``shipped``  — devices.decode: orjson + hand-written validation (what taza runs);
* ``msgspec``  — msgspec.json.decode into strict Structs with Meta constraints;
* ``pydantic`` — pydantic v2 ``model_validate_json`` with strict models;
* ``encode``   — devices.encode alone (line protocol, with registry tags).

Before timing, every path must produce exactly the same Message for every message of the mix
(otherwise the bench aborts), so the numbers compare equal work. Known gaps of the alternatives,
which would cost them more if closed: neither enforces the document depth limit, and msgspec
cannot report which unknown fields it skipped. Times are the best of ``--repeat`` passes
(the least disturbed by other processes on a shared machine); ratios are against ``shipped``
measured in the same run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import orjson
import pydantic
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import devices
from devices import (
    Channel,
    DeviceInfo,
    Kind,
    Limits,
    Message,
    Reason,
    Registry,
    Rejected,
)
from devices.construct import fast_constructor
from devices.message import Deposit, Fill, Item, Status
from devices.timestamps import check_window, received_ms, ts_to_ms
from devices.topics import parse_topic

# -- the mix ------------------------------------------------------------------------------------

RECEIVED_AT = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
NOW_MS = received_ms(RECEIVED_AT)
ALMATY = timedelta(hours=5)


def make_mix(
    n: int, shares: tuple[float, float, float], seed: int
) -> tuple[list[tuple[str, bytes]], Registry]:
    """n (topic, payload) pairs from 500 eco-boxes and 50 RVMs in two regions."""
    rng = random.Random(seed)
    regions = ["almaty", "astana"]
    sites = ["residential", "commercial", "park", "transit"]
    fractions = ["mixed", "plastic", "paper", "glass", "metal", "organic"]
    boxes = [(f"eb-{i:05d}", regions[i % 2]) for i in range(500)]
    rvms = [(f"rvm-{i:03d}", regions[i % 2]) for i in range(50)]
    registry = Registry(
        [
            DeviceInfo(
                d, Kind.ECOBOX, r, 43.2, 76.9, 1100.0, rng.choice(fractions), rng.choice(sites), 900
            )
            for d, r in boxes
        ]
        + [DeviceInfo(d, Kind.RVM, r, 51.1, 71.4, 150.0, None, "commercial", 300) for d, r in rvms]
    )
    seq: dict[str, int] = {}
    out = []
    fill_share, status_share, _ = shares
    for _ in range(n):
        ts = NOW_MS - rng.randrange(0, 600_000)
        # Half the firmware sends epoch ms, half RFC 3339 with the local offset.
        ts_v: object = ts
        if rng.random() < 0.5:
            local = datetime.fromtimestamp(ts / 1000, UTC) + ALMATY
            ts_v = local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts % 1000:03d}+05:00"
        x = rng.random()
        if x < fill_share:
            dev, region = rng.choice(boxes)
            doc: dict[str, object] = {
                "ts": ts_v,
                "seq": 0,
                "fill_pct": round(rng.uniform(0, 100), 1),
                "distance_mm": rng.randrange(50, 1500),
                "temperature_c": round(rng.uniform(-20, 40), 1),
            }
            if rng.random() < 0.1:
                doc["tilt_deg"] = round(rng.uniform(0, 90), 1)
            topic = f"taza/v1/{region}/ecobox/{dev}/fill"
        elif x < fill_share + status_share:
            rvm = rng.random() < 0.5
            dev, region = rng.choice(rvms if rvm else boxes)
            doc = {
                "ts": ts_v,
                "seq": 0,
                "battery_v": round(rng.uniform(3.3, 4.2), 2),
                "battery_pct": rng.randrange(5, 100),
                "rssi_dbm": rng.randrange(-120, -60),
                "temperature_c": round(rng.uniform(-20, 40), 1),
                "uptime_s": rng.randrange(0, 10**7),
                "firmware": "2.4.1",
                "faults": rng.sample(["lid_open", "tilted", "low_battery"], rng.choice([0, 0, 1])),
            }
            if rvm:
                doc["bins"] = {m: rng.randrange(0, 100) for m in ("pet", "alu", "glass")}
                doc["mode"] = "ok"
            topic = f"taza/v1/{region}/{'rvm' if rvm else 'ecobox'}/{dev}/status"
        else:
            dev, region = rng.choice(rvms)
            items = [
                {"material": m, "count": rng.randrange(1, 20), "volume_ml": 500}
                for m in rng.sample(["pet", "alu", "glass"], rng.randrange(1, 4))
            ]
            doc = {
                "ts": ts_v,
                "seq": 0,
                "txn_id": f"t-{rng.randrange(10**9):09d}",
                "items": items,
                "rejected": rng.choice([0, 0, 1]),
                "refund_minor": 20 * sum(int(str(i["count"])) for i in items),
                "currency": "KZT",
            }
            topic = f"taza/v1/{region}/rvm/{dev}/deposit"
        seq[dev] = (seq.get(dev, rng.randrange(2**32)) + 1) % 2**32
        doc["seq"] = seq[dev]
        out.append((topic, orjson.dumps(doc)))
    return out, registry


# -- alternative 1: msgspec Structs (strict) ---------------------------------------------------

F = msgspec.Meta
NOCTRL = r"^[^\x00-\x1f\x7f-\x9f]*$"
Material = Literal["pet", "alu", "glass", "hdpe", "other"]
Fault = Literal[
    "lid_open",
    "sensor_error",
    "tilted",
    "overheat",
    "fire",
    "jam",
    "door_open",
    "printer_error",
    "low_battery",
    "bin_full",
]
Seq = Annotated[int, F(ge=0, le=2**32 - 1)]


class MFill(msgspec.Struct):
    ts: int | str
    seq: Seq
    fill_pct: Annotated[float, F(ge=0, le=100)]
    distance_mm: Annotated[float, F(ge=0, le=10_000)] | None = None
    temperature_c: Annotated[float, F(ge=-50, le=150)] | None = None
    tilt_deg: Annotated[float, F(ge=0, le=180)] | None = None
    device_id: str | None = None


class MStatus(msgspec.Struct):
    ts: int | str
    seq: Seq
    battery_v: Annotated[float, F(ge=0, le=15)] | None = None
    battery_pct: Annotated[float, F(ge=0, le=100)] | None = None
    rssi_dbm: Annotated[float, F(ge=-150, le=0)] | None = None
    temperature_c: Annotated[float, F(ge=-50, le=150)] | None = None
    uptime_s: Annotated[int, F(ge=0, le=2**32 - 1)] | None = None
    firmware: Annotated[str, F(min_length=1, max_length=32, pattern=NOCTRL)] | None = None
    faults: list[Fault] = []
    device_id: str | None = None


class MRvmStatus(MStatus):
    bins: dict[Material, Annotated[float, F(ge=0, le=100)]] = {}
    mode: Literal["ok", "full", "jam", "out_of_service"] | None = None


class MItem(msgspec.Struct):
    material: Material
    count: Annotated[int, F(ge=1, le=1000)]
    volume_ml: Annotated[int, F(ge=1, le=10_000)] | None = None


class MDeposit(msgspec.Struct):
    ts: int | str
    seq: Seq
    txn_id: Annotated[str, F(min_length=1, max_length=64, pattern=NOCTRL)]
    items: Annotated[list[MItem], F(min_length=1, max_length=100)]
    rejected: Annotated[int, F(ge=0, le=100_000)] = 0
    refund_minor: Annotated[int, F(ge=0, le=2**63 - 1)] = 0
    currency: Annotated[str, F(pattern="^[A-Z]{3}$")] = "KZT"
    device_id: str | None = None


# -- alternative 2: pydantic v2 (strict) ----------------------------------------------------------

P = Field
NoCtrl = StringConstraints(pattern=NOCTRL)
STRICT = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)


class PFill(BaseModel):
    model_config = STRICT
    ts: int | str
    seq: Annotated[int, P(ge=0, le=2**32 - 1)]
    fill_pct: Annotated[float, P(ge=0, le=100)]
    distance_mm: Annotated[float, P(ge=0, le=10_000)] | None = None
    temperature_c: Annotated[float, P(ge=-50, le=150)] | None = None
    tilt_deg: Annotated[float, P(ge=0, le=180)] | None = None
    device_id: str | None = None


class PStatus(BaseModel):
    model_config = STRICT
    ts: int | str
    seq: Annotated[int, P(ge=0, le=2**32 - 1)]
    battery_v: Annotated[float, P(ge=0, le=15)] | None = None
    battery_pct: Annotated[float, P(ge=0, le=100)] | None = None
    rssi_dbm: Annotated[float, P(ge=-150, le=0)] | None = None
    temperature_c: Annotated[float, P(ge=-50, le=150)] | None = None
    uptime_s: Annotated[int, P(ge=0, le=2**32 - 1)] | None = None
    firmware: Annotated[str, P(min_length=1, max_length=32), NoCtrl] | None = None
    faults: list[Fault] = []
    device_id: str | None = None


class PRvmStatus(PStatus):
    bins: dict[Material, Annotated[float, P(ge=0, le=100)]] = {}
    mode: Literal["ok", "full", "jam", "out_of_service"] | None = None


class PItem(BaseModel):
    model_config = STRICT
    material: Material
    count: Annotated[int, P(ge=1, le=1000)]
    volume_ml: Annotated[int, P(ge=1, le=10_000)] | None = None


class PDeposit(BaseModel):
    model_config = STRICT
    ts: int | str
    seq: Annotated[int, P(ge=0, le=2**32 - 1)]
    txn_id: Annotated[str, P(min_length=1, max_length=64), NoCtrl]
    items: Annotated[list[PItem], P(min_length=1, max_length=100)]
    rejected: Annotated[int, P(ge=0, le=100_000)] = 0
    refund_minor: Annotated[int, P(ge=0, le=2**63 - 1)] = 0
    currency: Annotated[str, StringConstraints(pattern="^[A-Z]{3}$")] = "KZT"
    device_id: str | None = None


# -- the common frame: topic, size, ts window, Message --------------------------------------------

_new_fill, _new_status = fast_constructor(Fill), fast_constructor(Status)
_new_deposit, _new_item = fast_constructor(Deposit), fast_constructor(Item)
_new_message = fast_constructor(Message)
_F_FIELDS = ("fill_pct", "distance_mm", "temperature_c", "tilt_deg")
_S_FIELDS = ("battery_v", "battery_pct", "rssi_dbm", "temperature_c", "uptime_s", "firmware")


def _framed(
    parse: Callable[[Channel, Kind, bytes], Any], extra: Callable[[Any], tuple[str, ...]]
) -> Callable[[str, bytes, datetime, Limits], Message]:
    """A decoder built around ``parse`` with everything else exactly as devices.decode does."""

    def decode(topic: str, payload: bytes, received_at: datetime, limits: Limits) -> Message:
        now = received_ms(received_at)
        t = parse_topic(topic)
        if len(payload) > limits.max_payload_bytes:
            raise Rejected(Reason.TOO_LARGE, "too large")
        m = parse(t.channel, t.kind, payload)
        if m.device_id is not None and m.device_id != t.device_id:
            raise Rejected(Reason.DEVICE_MISMATCH, "device_id")
        ts = ts_to_ms(m.ts)
        check_window(ts, now, limits.max_age_ms, limits.max_future_ms)
        body: Fill | Status | Deposit
        if t.channel is Channel.FILL:
            body = _new_fill(*(getattr(m, f) for f in _F_FIELDS))
        elif t.channel is Channel.STATUS:
            if len(set(m.faults)) != len(m.faults):
                raise Rejected(Reason.BAD_VALUE, "faults")
            rvm = t.kind is Kind.RVM
            body = _new_status(
                *(getattr(m, f) for f in _S_FIELDS),
                tuple(sorted(m.faults)),
                tuple(sorted(m.bins.items())) if rvm else (),
                m.mode if rvm else None,
            )
        else:
            items = tuple(_new_item(i.material, i.count, i.volume_ml) for i in m.items)
            body = _new_deposit(m.txn_id, items, m.rejected, m.refund_minor, m.currency)
        return _new_message(t, ts, m.seq, body, extra(m))

    return decode


_MSGSPEC: dict[tuple[Kind, Channel], msgspec.json.Decoder[Any]] = {
    (Kind.ECOBOX, Channel.FILL): msgspec.json.Decoder(MFill),
    (Kind.ECOBOX, Channel.STATUS): msgspec.json.Decoder(MStatus),
    (Kind.RVM, Channel.STATUS): msgspec.json.Decoder(MRvmStatus),
    (Kind.RVM, Channel.DEPOSIT): msgspec.json.Decoder(MDeposit),
}
_PYDANTIC: dict[tuple[Kind, Channel], type[BaseModel]] = {
    (Kind.ECOBOX, Channel.FILL): PFill,
    (Kind.ECOBOX, Channel.STATUS): PStatus,
    (Kind.RVM, Channel.STATUS): PRvmStatus,
    (Kind.RVM, Channel.DEPOSIT): PDeposit,
}


def _msgspec_parse(channel: Channel, kind: Kind, payload: bytes) -> Any:
    try:
        return _MSGSPEC[(kind, channel)].decode(payload)
    except msgspec.DecodeError as e:
        raise Rejected(Reason.BAD_VALUE, str(e)) from None


def _pydantic_parse(channel: Channel, kind: Kind, payload: bytes) -> Any:
    try:
        return _PYDANTIC[(kind, channel)].model_validate_json(payload)
    except pydantic.ValidationError as e:
        raise Rejected(Reason.BAD_VALUE, str(e)) from None


def _pydantic_extra(m: Any) -> tuple[str, ...]:
    return tuple(sorted(m.model_extra)) if m.model_extra else ()


msgspec_decode = _framed(_msgspec_parse, lambda m: ())
pydantic_decode = _framed(_pydantic_parse, _pydantic_extra)


# -- timing ----------------------------------------------------------------------------------------


def _best_ns_per_msg(run: Callable[[], None], n: int, repeat: int) -> tuple[float, float]:
    """(best, median) nanoseconds per message over ``repeat`` passes; GC off while timing."""
    passes = []
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        t0 = time.perf_counter_ns()
        run()
        passes.append((time.perf_counter_ns() - t0) / n)
        gc.enable()
    passes.sort()
    return passes[0], passes[len(passes) // 2]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Decode + encode cost per message (one core), shipped path vs msgspec vs "
        "pydantic, on a realistic fill/status/deposit mix.",
    )
    ap.add_argument("-n", "--messages", type=int, default=20_000, help="messages per pass")
    ap.add_argument("-r", "--repeat", type=int, default=7, help="passes per path (best counts)")
    ap.add_argument("--mix", default="70,20,10", help="fill,status,deposit percent")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--cpu", type=int, default=0, help="pin to this CPU (-1: do not pin)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)

    if args.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    shares = tuple(float(x) / 100 for x in args.mix.split(","))  # checked below
    if len(shares) != 3 or abs(sum(shares) - 1) > 1e-9:
        ap.error("--mix needs three percentages adding up to 100")
    mix, registry = make_mix(args.messages, shares, args.seed)
    limits = devices.DEFAULT_LIMITS
    n = len(mix)

    decoders: dict[str, Callable[[str, bytes, datetime, Limits], Message]] = {
        "shipped": devices.decode,
        "msgspec": msgspec_decode,
        "pydantic": pydantic_decode,
    }
    reference = [devices.decode(t, p, RECEIVED_AT) for t, p in mix]
    for name, dec in decoders.items():
        got = [dec(t, p, RECEIVED_AT, limits) for t, p in mix]
        if got != reference:
            bad = next(i for i, (a, b) in enumerate(zip(got, reference, strict=True)) if a != b)
            print(
                f"{name} disagrees with devices.decode on message {bad}: {mix[bad]}",
                file=sys.stderr,
            )
            return 1
    lines = sum(len(devices.encode(m, registry.get(m.topic.device_id))) for m in reference)

    def decoding(dec: Callable[[str, bytes, datetime, Limits], Message]) -> Callable[[], None]:
        def run() -> None:
            for t, p in mix:
                dec(t, p, RECEIVED_AT, limits)

        return run

    def pipeline(dec: Callable[[str, bytes, datetime, Limits], Message]) -> Callable[[], None]:
        get, encode = registry.get, devices.encode

        def run() -> None:
            for t, p in mix:
                m = dec(t, p, RECEIVED_AT, limits)
                encode(m, get(m.topic.device_id))

        return run

    def encoding() -> None:
        get, encode = registry.get, devices.encode
        for m in reference:
            encode(m, get(m.topic.device_id))

    def parse_only() -> None:
        loads = orjson.loads
        for _, p in mix:
            loads(p)

    results: dict[str, dict[str, float]] = {}
    for name, dec in decoders.items():
        best, median = _best_ns_per_msg(decoding(dec), n, args.repeat)
        full, full_median = _best_ns_per_msg(pipeline(dec), n, args.repeat)
        results[name] = {
            "decode_us": best / 1000,
            "decode_median_us": median / 1000,
            "decode_encode_us": full / 1000,
            "decode_encode_median_us": full_median / 1000,
            "msgs_per_s": 1e9 / full,
        }
    groups: dict[str, list[tuple[str, bytes]]] = {}
    for t, p in mix:
        parts = t.split("/")
        groups.setdefault(f"{parts[3]}/{parts[5]}", []).append((t, p))
    per_channel: dict[str, dict[str, float]] = {}
    for channel, subset in sorted(groups.items()):
        row = per_channel[channel] = {"share": len(subset) / n}
        for name, dec in decoders.items():

            def run(subset: list[tuple[str, bytes]] = subset, dec: Any = dec) -> None:
                for t, p in subset:
                    dec(t, p, RECEIVED_AT, limits)

            row[f"{name}_us"] = _best_ns_per_msg(run, len(subset), args.repeat)[0] / 1000
    enc, enc_median = _best_ns_per_msg(encoding, n, args.repeat)
    floor, _ = _best_ns_per_msg(parse_only, n, args.repeat)
    base = results["shipped"]
    for r in results.values():
        r["decode_ratio"] = r["decode_us"] / base["decode_us"]
        r["decode_encode_ratio"] = r["decode_encode_us"] / base["decode_encode_us"]

    report = {
        "messages": n,
        "mix": dict(zip(("fill", "status", "deposit"), shares, strict=True)),
        "lines_per_message": lines / n,
        "mean_payload_bytes": sum(len(p) for _, p in mix) / n,
        "repeat": args.repeat,
        "cpu": args.cpu,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "versions": {
            "orjson": orjson.__version__,
            "msgspec": msgspec.__version__,
            "pydantic": pydantic.VERSION,
        },
        "paths": results,
        "decode_by_channel": per_channel,
        "encode_us": enc / 1000,
        "encode_median_us": enc_median / 1000,
        "orjson_loads_us": floor / 1000,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    mix_s = "/".join(f"{s * 100:.0f}" for s in shares)
    print(
        f"{n} messages, mix fill/status/deposit {mix_s} %, {report['mean_payload_bytes']:.0f} "
        f"bytes and {report['lines_per_message']:.2f} lines per message; best of "
        f"{args.repeat} passes, CPU {args.cpu}, Python {report['python']}"
    )
    print()
    header = (
        f"{'path':<10} {'decode µs':>10} {'ratio':>6} {'+encode µs':>11} {'ratio':>6} {'msgs/s':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(
            f"{name:<10} {r['decode_us']:>10.2f} {r['decode_ratio']:>6.2f} "
            f"{r['decode_encode_us']:>11.2f} {r['decode_encode_ratio']:>6.2f} "
            f"{r['msgs_per_s']:>9,.0f}"
        )
    print()
    print(f"{'decode µs by channel':<22} {'share':>6}" + "".join(f" {n:>9}" for n in decoders))
    for channel, row in per_channel.items():
        print(
            f"{channel:<22} {row['share'] * 100:>5.0f}%"
            + "".join(f" {row[f'{n}_us']:>9.2f}" for n in decoders)
        )
    print()
    print(
        f"encode alone: {report['encode_us']:.2f} µs/msg; orjson.loads alone: "
        f"{report['orjson_loads_us']:.2f} µs/msg"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
