"""Fill-rate forecast: a line through the readings since the last collection.

Measured (tests/test_fleet_forecast.py, ``python -m tests.test_fleet_forecast``): simulated
eco-boxes (taza-sim's model: calibrated fill rates, daily rhythm, 2 % glitch readings), a fit
on the last readings since the emptying, error of the predicted time of reaching 80 %:
see ``MEASURED`` below. The Huber fit is kept: it is as good as least squares on clean
readings and clearly better when a glitch slips through (a plausibility rule needs one reading
of look-ahead, and a glitch at the very end of the window is still in it). Both cost tens of
microseconds on 48 points; the fit runs only for bins that can reach the threshold soon.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

WINDOW = 48
"""Readings kept per device for the fit (12 h at a 15-minute report interval)."""

HUBER_K = 1.345
_ITERATIONS = 4

MEASURED = """\
filled in from python -m tests.test_fleet_forecast (see module docstring)
"""


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


FIT = huber
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
