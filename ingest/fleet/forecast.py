"""Fill-rate forecast: a line through the readings since the last collection.

Measured (``python -m tests.test_fleet_forecast``): 120 simulated eco-boxes × 30 days
(taza-sim's model: calibrated fill rates, daily rhythm per site type, hour-to-hour noise, 2 %
glitch readings, 15-minute reports) fed through the fleet stage; median (p90) error in hours of
the predicted time of reaching 80 %, over 1,490 / 1,108 fill cycles:

    ================  ================  ================  ===============
    fit               6 h before        24 h before       µs / 48 points
    ================  ================  ================  ===============
    least squares     5.13 (17.78)      8.24 (31.43)      8
    Huber (IRLS)      5.22 (19.23)      8.39 (32.44)      71
    ================  ================  ================  ===============

Least squares is kept: once the plausibility rules have taken the glitches out, there is
nothing left for a robust fit to resist, and it costs 9× more. The error comes from the daily
rhythm (bins fill in the evening, hardly at night), which no straight line follows; a fit on
time warped by an hour-of-day profile learnt per site type is the known next step (see
docs/alerts.md). A 12-hour window instead of the whole time since the emptying was worse
(7.0 h at 6 h before), hence the decimated history: when the buffer is full every other point
is dropped, so the fit spans the whole cycle in bounded memory.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

WINDOW = 48
"""Readings kept per device for the fit (decimated when full: see the module docstring)."""

HUBER_K = 1.345
_ITERATIONS = 4


def least_squares(t: NDArray[np.float64], y: NDArray[np.float64]) -> tuple[float, float]:
    """(intercept, slope) of the ordinary least-squares line."""
    n = len(t)
    tm = float(t.sum()) / n
    ym = float(y.sum()) / n
    dt = t - tm
    var = float(dt @ dt)
    if var <= 0.0:
        return ym, 0.0
    slope = float(dt @ (y - ym)) / var
    return ym - slope * tm, slope


def huber(t: NDArray[np.float64], y: NDArray[np.float64]) -> tuple[float, float]:
    """(intercept, slope) by iteratively reweighted least squares with Huber weights."""
    a, b = least_squares(t, y)
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


FIT = least_squares
"""The method in use (see the module docstring for why)."""


def crossing_ms(
    t_s: NDArray[np.float64],
    y: NDArray[np.float64],
    t0_ms: int,
    now_ms: int,
    threshold: float,
) -> tuple[float, int | None]:
    """(rate %/h, time the fitted line reaches ``threshold``, not before ``now_ms``).

    ``t_s`` are seconds after ``t0_ms``. The time is ``None`` when the bin is not filling.
    """
    a, b = FIT(t_s / 3600.0, y)
    if b <= 1e-6:
        return b, None
    hours = (threshold - a) / b
    at = t0_ms + int(hours * 3_600_000)
    return b, max(at, now_ms)
