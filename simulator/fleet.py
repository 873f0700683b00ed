"""Fleet generation: which devices exist, where they stand and how they are configured.

The fleet is deterministic for a seed, and each device's own random stream is derived from the seed
and its id (:func:`device_rng`), so adding devices never changes the behaviour of the others.
A fleet row is the contract's own :class:`devices.DeviceInfo`, and fleet files are written and
read by :class:`devices.Registry` (``save`` / ``load``): the simulator has no format of its own.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from devices import DeviceInfo, Kind
from simulator.clock import parse_duration


@dataclass(frozen=True, slots=True)
class Region:
    name: str
    lat: float
    lon: float
    radius_km: float  # 1-sigma scatter of device positions around the centre
    utc_offset_min: int  # local time of the devices (Kazakhstan is UTC+5 since 2024-03-01)
    # Monthly mean air temperature, °C, Jan..Dec (approximate climate normals; assumption).
    monthly_temp_c: tuple[float, ...]


_KZ_OFFSET = 5 * 60

# City centres (WGS84). Temperatures are rounded climate normals, used only for the sensor's
# temperature channel.
# fmt: off
_TABLE = (
    # name          lat      lon      σ km  monthly mean °C, Jan..Dec
    ("almaty",      43.2389, 76.8897, 7.0, (-5, -3, 3, 11, 16, 22, 24, 23, 18, 10, 3, -2)),
    ("astana",      51.1694, 71.4491, 6.0, (-14, -14, -7, 5, 14, 19, 21, 19, 12, 4, -6, -12)),
    ("shymkent",    42.3417, 69.5901, 5.0, (-1, 1, 8, 14, 20, 25, 28, 26, 20, 13, 6, 1)),
    ("karaganda",   49.8047, 73.1094, 4.5, (-13, -13, -6, 5, 13, 18, 20, 18, 12, 4, -5, -11)),
    ("aktobe",      50.2839, 57.1660, 4.0, (-13, -13, -5, 8, 15, 21, 23, 21, 14, 5, -3, -10)),
    ("taraz",       42.9000, 71.3667, 3.5, (-4, -2, 5, 12, 18, 23, 25, 24, 18, 10, 3, -2)),
    ("pavlodar",    52.2873, 76.9674, 3.5, (-16, -15, -8, 6, 14, 20, 22, 19, 13, 4, -6, -13)),
    ("oskemen",     49.9483, 82.6275, 3.5, (-15, -14, -6, 6, 14, 19, 21, 19, 12, 5, -5, -12)),
    ("atyrau",      47.1167, 51.8833, 3.5, (-8, -7, 0, 11, 19, 24, 27, 25, 18, 9, 1, -5)),
    ("kostanay",    53.2144, 63.6246, 3.5, (-16, -15, -8, 6, 14, 19, 21, 19, 12, 4, -6, -13)),
    ("kyzylorda",   44.8528, 65.5092, 3.0, (-7, -5, 3, 13, 20, 26, 28, 26, 18, 10, 2, -4)),
    ("oral",        51.2333, 51.3667, 3.0, (-11, -10, -4, 8, 16, 21, 23, 21, 14, 6, -2, -8)),
    ("aktau",       43.6500, 51.1667, 3.0, (-2, -1, 4, 11, 18, 24, 27, 26, 20, 13, 6, 1)),
    ("petropavl",   54.8667, 69.1500, 3.0, (-17, -16, -8, 4, 13, 18, 20, 17, 11, 3, -7, -14)),
    ("turkistan",   43.3017, 68.2517, 2.5, (-3, 0, 7, 15, 21, 27, 29, 27, 20, 12, 5, -1)),
    ("kokshetau",   53.2833, 69.3833, 2.5, (-14, -14, -7, 5, 12, 18, 20, 17, 11, 3, -6, -12)),
    ("taldykorgan", 45.0167, 78.3667, 2.5, (-8, -6, 2, 11, 17, 22, 24, 23, 17, 9, 1, -6)),
)
# fmt: on
REGIONS: dict[str, Region] = {
    name: Region(name, lat, lon, radius, _KZ_OFFSET, temps)
    for name, lat, lon, radius, temps in _TABLE
}

SITES = ("residential", "commercial", "park", "transit")

# Assumptions (no public figure found), all overridable on the command line.
ECOBOX_SITE_MIX = {"residential": 0.45, "commercial": 0.25, "park": 0.15, "transit": 0.15}
RVM_SITE_MIX = {"commercial": 0.70, "transit": 0.20, "residential": 0.10, "park": 0.0}
ECOBOX_FRACTION_MIX = {
    "mixed": 0.40,
    "plastic": 0.25,
    "paper": 0.15,
    "glass": 0.10,
    "metal": 0.05,
    "organic": 0.05,
}
ECOBOX_CAPACITIES_L = {120: 0.25, 240: 0.45, 660: 0.20, 1100: 0.10}
RVM_CAPACITY_L = 150  # storage behind the intake: ~500 PET bottles compacted 2.5:1 (CALIBRATION)
# A fleet file may leave these empty (the registry allows it); the models then assume:
DEFAULT_CAPACITY_L = {Kind.ECOBOX: 240.0, Kind.RVM: float(RVM_CAPACITY_L)}
DEFAULT_SITE = {Kind.ECOBOX: "residential", Kind.RVM: "commercial"}

# Demo defaults (see docs/simulator.md): real ultrasonic battery sensors report every 4–12 h
# (CALIBRATION: binsentry, Wyndham feed); at that cadence a one-minute demo would show one
# reading per bin, so runs default to 15 minutes and ``--report-interval 4h-12h`` gives the
# real cadence.
DEFAULT_ECOBOX_INTERVAL = "15m"
REAL_ECOBOX_INTERVAL = "4h-12h"
DEFAULT_RVM_INTERVAL = "15m"  # mains-powered, always online (assumption)


def capacity_of(device: DeviceInfo) -> float:
    """The device's volume in litres (the kind's default when the fleet file leaves it empty)."""
    return device.capacity_l or DEFAULT_CAPACITY_L[device.kind]


def site_of(device: DeviceInfo) -> str:
    """The device's site type (the kind's default when the fleet file leaves it empty)."""
    return device.site or DEFAULT_SITE[device.kind]


def device_rng(seed: int, device_id: str, stream: int = 0) -> np.random.Generator:
    """A generator private to one device, stable across fleet sizes and orderings."""
    return np.random.default_rng(
        np.random.SeedSequence([seed & 0xFFFFFFFF, zlib.crc32(device_id.encode()), stream])
    )


def parse_interval(spec: str) -> tuple[float, float]:
    """``"15m"`` → (900, 900); ``"4h-12h"`` → (14400, 43200): each device draws from the range."""
    if "-" in spec.strip().lstrip("-"):
        low_text, high_text = spec.split("-", 1)
        low, high = parse_duration(low_text), parse_duration(high_text)
    else:
        low = high = parse_duration(spec)
    if low <= 0 or high < low:
        raise ValueError(f"bad report interval {spec!r}: need 0 < low <= high")
    return low, high


def parse_mix(spec: str, allowed: Iterable[str]) -> dict[str, float]:
    """``"residential=0.5,park=0.5"`` → normalised weights; unknown names are an error."""
    known = set(allowed)
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in known:
            raise ValueError(
                f"unknown name {name!r} in {spec!r} (known: {', '.join(sorted(known))})"
            )
        weights[name] = float(value) if value else 1.0
        if weights[name] < 0 or not math.isfinite(weights[name]):
            raise ValueError(f"bad weight for {name!r} in {spec!r}")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"mix {spec!r} has no positive weight")
    return {k: v / total for k, v in weights.items()}


def parse_regions(spec: str) -> list[str]:
    names = [n.strip().lower() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in REGIONS]
    if unknown:
        raise ValueError(
            f"unknown region(s) {', '.join(unknown)}; known: {', '.join(sorted(REGIONS))}"
        )
    if not names:
        raise ValueError("no region given")
    return list(dict.fromkeys(names))


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _choose(rng: np.random.Generator, mix: dict[str, float]) -> str:
    names = sorted(mix)
    probs = np.array([mix[n] for n in names])
    return names[int(rng.choice(len(names), p=probs / probs.sum()))]


def _interval(rng: np.random.Generator, bounds: tuple[float, float]) -> int:
    low, high = bounds
    if low == high:
        return max(1, round(low))
    value = rng.uniform(low, high)
    step = 300 if low >= 600 else 1  # real devices are configured in round minutes
    return max(1, round(value / step) * step)


def _place(rng: np.random.Generator, region: Region) -> tuple[float, float]:
    north_km, east_km = rng.normal(0.0, region.radius_km, size=2)
    lat = region.lat + north_km / 111.32
    lon = region.lon + east_km / (111.32 * math.cos(math.radians(region.lat)))
    return round(float(lat), 6), round(float(lon), 6)


def generate(
    *,
    ecoboxes: int,
    rvms: int,
    regions: Sequence[str],
    seed: int = 0,
    ecobox_interval: str = DEFAULT_ECOBOX_INTERVAL,
    rvm_interval: str = DEFAULT_RVM_INTERVAL,
    site_mix: dict[str, float] | None = None,
    fraction_mix: dict[str, float] | None = None,
) -> list[DeviceInfo]:
    """Spread ``ecoboxes`` and ``rvms`` evenly over ``regions`` (the first regions get the rest).

    Ids are ``eb-{region}-0001`` and ``rvm-{region}-001`` (wider when a region has more devices).
    """
    if ecoboxes < 0 or rvms < 0:
        raise ValueError("device counts must be >= 0")
    names = parse_regions(",".join(regions))
    eb_bounds, rvm_bounds = parse_interval(ecobox_interval), parse_interval(rvm_interval)
    sites = site_mix or ECOBOX_SITE_MIX
    fracs = fraction_mix or ECOBOX_FRACTION_MIX
    capacities = {str(k): v for k, v in ECOBOX_CAPACITIES_L.items()}
    out: list[DeviceInfo] = []
    for name, n_eb, n_rvm in zip(
        names, _split(ecoboxes, len(names)), _split(rvms, len(names)), strict=True
    ):
        region = REGIONS[name]
        eb_width = max(4, len(str(n_eb)))
        for i in range(1, n_eb + 1):
            device_id = f"eb-{name}-{i:0{eb_width}d}"
            rng = device_rng(seed, device_id, stream=1)
            lat, lon = _place(rng, region)
            out.append(
                DeviceInfo(
                    device_id=device_id,
                    kind=Kind.ECOBOX,
                    region=name,
                    lat=lat,
                    lon=lon,
                    capacity_l=float(_choose(rng, capacities)),
                    fraction=_choose(rng, fracs),
                    site=_choose(rng, sites),
                    report_interval_s=_interval(rng, eb_bounds),
                )
            )
        rvm_width = max(3, len(str(n_rvm)))
        for i in range(1, n_rvm + 1):
            device_id = f"rvm-{name}-{i:0{rvm_width}d}"
            rng = device_rng(seed, device_id, stream=1)
            lat, lon = _place(rng, region)
            out.append(
                DeviceInfo(
                    device_id=device_id,
                    kind=Kind.RVM,
                    region=name,
                    lat=lat,
                    lon=lon,
                    capacity_l=float(RVM_CAPACITY_L),
                    fraction=None,  # an RVM sorts by material itself
                    site=_choose(rng, RVM_SITE_MIX),
                    report_interval_s=_interval(rng, rvm_bounds),
                )
            )
    return out
