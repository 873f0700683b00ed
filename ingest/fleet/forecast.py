"""Fill-rate forecast: a line through the readings since the last collection, on warped time.

Bins fill in the evening and hardly at night; no straight line in clock time follows that. Each
device learns its own hour-of-day profile (24 UTC hours, fill rate %/h, an exponential average of
the rates between consecutive plausible readings) and the line is fitted on time warped by it
(an hour counts as much as the bin usually fills in it), then the crossing of the threshold is
found by walking the warped clock forward.

Measured (``python -m tests.test_fleet_forecast``): 120 simulated eco-boxes × 30 days
(taza-sim's model: calibrated fill rates, daily rhythm per site type, hour-to-hour noise, 2 %
glitch readings, 15-minute reports) fed through the fleet stage; median (p90) error in hours of
the predicted time of reaching 80 %, over 1,490 / 1,108 fill cycles:

    ==============================  ===============  ===============  ==============
    fit                             6 h before       24 h before      µs / 48 points
    ==============================  ===============  ===============  ==============
    least squares, warped time      1.66 (9.74)      4.59 (16.98)     5
    Huber (IRLS), warped time       1.64 (9.94)      4.55 (17.06)     56
    least squares, clock time       5.13 (17.78)     8.24 (31.43)
    Huber, clock time               5.22 (19.23)     8.39 (32.44)
    ==============================  ===============  ===============  ==============

Least squares is kept: once the plausibility rules have taken the glitches out there is little
left for a robust fit to resist — the two differ by about 1 %, less than between seeds — and it
costs a tenth. The warping is what pays (3× smaller error 6 h ahead). A 12-hour window instead of
the whole time since the emptying was worse (7.0 h in clock time), hence the decimated history:
when the buffer is full every other point is dropped, so the fit spans the whole cycle in
bounded memory while recent readings stay dense.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Callable, Sequence
from typing import Final

import numpy as np

WINDOW: Final = 48
"""Readings kept per device for the fit (decimated when full: see the module docstring)."""

HUBER_K: Final = 1.345
_ITERATIONS: Final = 4


def least_squares(t: list[float], y: list[float]) -> tuple[float, float]:
    """(intercept, slope) of the ordinary least-squares line.

    Plain loops over at most ``WINDOW`` points: compiled (setup.py) ≈ 0.7 µs for 33, where
    numpy's per-call cost made the same fit ≈ 5 (docs/performance.md, "The fleet rules
    compiled")."""
    n = len(t)
    st = sy = 0.0
    for i in range(n):
        st += t[i]
        sy += y[i]
    tm = st / n
    ym = sy / n
    var = cov = 0.0
    for i in range(n):
        dt = t[i] - tm
        var += dt * dt
        cov += dt * (y[i] - ym)
    if var <= 0.0:
        return ym, 0.0
    slope = cov / var
    return ym - slope * tm, slope


def huber(ts: list[float], ys: list[float]) -> tuple[float, float]:
    """(intercept, slope) by iteratively reweighted least squares with Huber weights (numpy:
    only the study in tests/test_fleet_forecast.py runs it)."""
    t = np.asarray(ts, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    a, b = least_squares(ts, ys)
    half = len(t) // 2  # the upper median of the residuals: scale only, exactness not needed
    for _ in range(_ITERATIONS):
        r = np.abs(y - (a + b * t))
        scale = 1.4826 * float(np.partition(r, half)[half])
        if scale <= 1e-9:
            break
        w = np.minimum(1.0, HUBER_K * scale / np.maximum(r, 1e-12))
        sw = float(w.sum())
        tm = float(w @ t) / sw
        ym = float(w @ y) / sw
        dt = t - tm
        var = float((w * dt) @ dt)
        if var <= 0.0:
            break
        b = float((w * dt) @ (y - ym)) / var
        a = ym - b * tm
    return a, b


FIT: Callable[[list[float], list[float]], tuple[float, float]] = least_squares
"""The method in use (see the module docstring for why)."""


PROFILE_ALPHA: Final = 0.03
"""Weight of one reading pair in a device's hour-of-day fill profile (about 1.5 days' memory
per hour slot at 15-minute reports)."""
PROFILE_FLOOR: Final = 0.02
"""Least relative weight of an hour (keeps warped time strictly increasing)."""
WARP = True
"""Fit on time warped by the device's hour-of-day profile (see the module docstring)."""
_HORIZON_H: Final = 14 * 24


def learn(profile: array[float], t_ms: int, rate_pct_per_h: float) -> None:
    """Fold one observed fill rate (between two plausible readings, starting at ``t_ms``)
    into the device's profile of 24 UTC hours (float32, in place). 0 marks an hour not seen
    yet; it starts from the mean of the hours seen (the first one from the rate itself).

    Per plausible reading, so plain Python: each step rounded to float32 as numpy's float32
    arithmetic does (one correctly rounded double operation, then to float32, equals the
    float32 operation) — the same profile bit for bit, without numpy's per-call cost."""
    h = (t_ms // 3_600_000) % 24
    f = _F32
    if profile[h] == 0.0:  # 24 times per device, every one a new device's first day
        seen = [v for v in profile if v != 0.0]
        if seen:
            f[0] = _sum32(seen)
            f[0] = f[0] / len(seen)
            profile[h] = f[0]
        else:
            profile[h] = max(rate_pct_per_h, 0.01)
    old = profile[h]
    f[0] = rate_pct_per_h
    f[0] = f[0] - old
    f[0] = _ALPHA32 * f[0]
    f[0] = old + f[0]
    profile[h] = f[0] if f[0] != 0.0 else 1e-6


_F32: Final = array("f", [0.0])  # a float32 register: assigning a float to it rounds to float32


def _sum32(v: list[float]) -> float:
    """numpy's float32 ``sum`` of at most 24 values, each step rounded as it rounds (pairwise:
    a running sum under 8 values, else eight running sums, a tree, then the remainder). Was
    ``seen.mean()`` in numpy (≈ 15 µs a call, ≈ 3.6 µs/message on a fleet of new devices);
    the same float32, tested on 480 first visits of an hour."""
    f = _F32
    n = len(v)
    if n < 8:
        f[0] = 0.0
        for x in v:
            f[0] = f[0] + x
        return f[0]
    r = array("f", v[:8])
    i = 8
    while i < n - n % 8:
        for j in range(8):
            r[j] = r[j] + v[i + j]
        i += 8
    pairs = array("f", [r[0] + r[1], r[2] + r[3], r[4] + r[5], r[6] + r[7]])
    quads = array("f", [pairs[0] + pairs[1], pairs[2] + pairs[3]])
    f[0] = quads[0] + quads[1]
    for x in v[i:]:
        f[0] = f[0] + x
    return f[0]


_ALPHA32: Final = float(np.float32(PROFILE_ALPHA))


def _weights(profile: Sequence[float] | None) -> tuple[list[float], list[float]]:
    """Relative weight of each UTC hour (mean 1; unseen hours get the mean) and its
    cumulative sum, 0 first (25 values).

    Once per fit, on 24 numbers: plain floats, each step the operation numpy did when this
    was written in numpy (its sums pairwise, its cumulative sum in order), so the same doubles
    — tested against the numpy form — at a third of numpy's per-call cost."""
    w = _FLAT
    if profile is not None and WARP:
        p = profile.tolist() if isinstance(profile, (array, np.ndarray)) else list(profile)
        seen = 24 - p.count(0.0)
        if seen:
            mean_seen = _sum24(p) / seen
            p = [mean_seen if v == 0.0 else 0.0 if v < 0.0 else v for v in p]
            mean = _sum24(p) / 24.0
            if mean > 1e-9:
                floor = PROFILE_FLOOR
                w = [floor if (r := v / mean) < floor else r for v in p]
                scale = _sum24(w) / 24.0
                w = [v / scale for v in w]
    c = [0.0] * 25
    acc = c[1] = w[0]
    for h in range(1, 24):
        acc = c[h + 1] = acc + w[h]
    return w, c


def _sum24(v: list[float]) -> float:
    """``np.sum`` of 24 doubles as numpy adds them (pairwise: eight running sums, then a
    tree), so the result is the same double."""
    r = [v[j] + v[j + 8] + v[j + 16] for j in range(8)]
    return ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))


_FLAT: Final = [1.0] * 24


def _tau(x_s: float, w: list[float], c: list[float]) -> float:
    """Warped time in "average hours" at epoch seconds ``x_s``."""
    day = math.floor(x_s / 86400.0)
    sod = x_s - day * 86400.0
    h = min(int(sod // 3600.0), 23)
    return day * c[24] + c[h] + w[h] * (sod - h * 3600.0) / 3600.0


def crossing_ms(
    t_s: Sequence[float],
    y: Sequence[float],
    t0_ms: int,
    now_ms: int,
    threshold: float,
    profile: Sequence[float] | None = None,
) -> tuple[float, int | None]:
    """(mean rate %/h, time the fitted line reaches ``threshold``, not before ``now_ms``).

    ``t_s`` are seconds after ``t0_ms``; ``profile`` the device's hour-of-day rates (warped
    time), or ``None`` for plain time. The time is ``None`` when the bin is not filling or
    would take more than two weeks.
    """
    wl, cl = _weights(profile)
    base = t0_ms / 1000.0
    now_s = now_ms / 1000.0
    origin = _tau(base, wl, cl)
    taus = [_tau(t + base, wl, cl) - origin for t in _floats(t_s)]
    a, b = FIT(taus, _floats(y))
    if b <= 1e-6:
        return b, None
    target = (threshold - a) / b + origin
    tau_now = _tau(now_s, wl, cl)
    if tau_now >= target:
        return b, now_ms
    first = (now_s // 3600.0 + 1) * 3600.0
    k = _hours_below(target, first, cl)
    if k >= _HORIZON_H:
        return b, None
    if k == 0:
        x0, t0 = now_s, tau_now
    else:
        x0 = first + 3600.0 * (k - 1)
        t0 = _tau_hour(x0, cl)
    hour = int((x0 % 86400.0) // 3600.0)
    at_s = x0 + (target - t0) / wl[hour] * 3600.0
    return b, max(now_ms, int(at_s * 1000))


def _floats(v: Sequence[float]) -> list[float]:
    """A list (an ``array``'s ``tolist`` is one C loop; compiled, a list is read without a
    method call per item)."""
    return v.tolist() if isinstance(v, (array, np.ndarray)) else list(v)


def _tau_hour(x_s: float, c: list[float]) -> float:
    """:func:`_tau` at a whole hour ``x_s``, in plain floats: the same operations, the same
    double (the fraction of the hour is 0)."""
    day = math.floor(x_s / 86400.0)
    h = min(int((x_s - day * 86400.0) // 3600.0), 23)
    return day * c[24] + c[h] + 0.0


def _hours_below(target: float, first: float, c: list[float]) -> int:
    """How many of the hour boundaries ``first``, ``first`` + 1 h, ... (two weeks of them)
    are warped to before ``target`` — what ``np.searchsorted`` over all of them gives, from
    the inverse of the warp and a check of its neighbours (a step for a rounding tie)."""
    if _tau_hour(first, c) >= target:
        return 0
    day = math.floor(target / c[24])
    h = bisect.bisect_left(c, target - day * c[24], 0, 24) - 1
    i = min(max(round((day * 86400.0 + h * 3600.0 - first) / 3600.0), 0), _HORIZON_H - 1)
    while i + 1 < _HORIZON_H and _tau_hour(first + 3600.0 * (i + 1), c) < target:
        i += 1
    while i > 0 and _tau_hour(first + 3600.0 * i, c) >= target:
        i -= 1
    return i + 1
