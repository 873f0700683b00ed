"""Daily and weekly activity rhythms, as relative weights per local hour and weekday.

The shapes are assumptions (no public hourly figure was found), chosen to match what the
sources describe qualitatively: residential bins fill in the evening, transit stops on weekday
commutes, parks at weekend afternoons; RVMs are busiest 10:00–12:00 and busier at weekends
(TOMRA/Cleanaway, Irish Examiner). Each profile is normalised so that its mean over a week is
1: multiplying by a daily mean rate keeps that mean.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

# fmt: off
_HOURLY: dict[str, tuple[float, ...]] = {
    #               0    1    2    3    4    5    6    7    8    9   10   11
    #              12   13   14   15   16   17   18   19   20   21   22   23
    "residential": (0.25, 0.15, 0.1, 0.1, 0.1, 0.2, 0.5, 1.1, 1.2, 0.9, 0.8, 0.8,
                    0.9, 0.9, 0.8, 0.8, 0.9, 1.3, 1.9, 2.2, 2.1, 1.7, 1.0, 0.5),
    "commercial":  (0.1, 0.05, 0.05, 0.05, 0.05, 0.1, 0.2, 0.5, 0.9, 1.3, 1.5, 1.7,
                    2.0, 2.0, 1.7, 1.6, 1.7, 1.9, 1.8, 1.5, 1.1, 0.7, 0.4, 0.2),
    "park":        (0.1, 0.05, 0.05, 0.05, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.1, 1.4,
                    1.7, 1.9, 2.0, 2.1, 2.1, 2.0, 1.8, 1.5, 1.1, 0.7, 0.4, 0.2),
    "transit":     (0.1, 0.05, 0.05, 0.05, 0.1, 0.4, 1.5, 2.6, 2.5, 1.3, 0.9, 0.9,
                    1.0, 1.0, 0.9, 1.0, 1.5, 2.5, 2.6, 1.6, 0.9, 0.6, 0.4, 0.2),
    # RVM in a mall: open 07:00–22:00 (Cleanaway), busiest 10–12 (TOMRA/Cleanaway).
    "rvm":         (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.4, 0.8, 1.4, 2.2, 2.4,
                    1.9, 1.5, 1.3, 1.2, 1.2, 1.3, 1.3, 1.1, 0.8, 0.5, 0.0, 0.0),
}
# Monday..Sunday. Edinburgh: weekend emptyings +25–30 % over weekdays (CALIBRATION); parks
# carry most of that, transit stops lose their commuters.
_WEEKLY: dict[str, tuple[float, ...]] = {
    "residential": (1.0, 1.0, 1.0, 1.0, 1.05, 1.2, 1.2),
    "commercial":  (1.0, 1.0, 1.0, 1.0, 1.1, 1.25, 1.1),
    "park":        (0.75, 0.75, 0.75, 0.8, 0.95, 1.8, 1.7),
    "transit":     (1.15, 1.15, 1.15, 1.15, 1.15, 0.6, 0.5),
    "rvm":         (0.9, 0.9, 0.9, 0.9, 1.0, 1.3, 1.3),  # weekends busier (TOMRA); factor assumed
}
# fmt: on

KEYS = tuple(_HOURLY)


def _normalised(name: str) -> NDArray[np.float64]:
    table = np.outer(np.array(_WEEKLY[name]), np.array(_HOURLY[name]))
    normalised: NDArray[np.float64] = table / table.mean()
    return normalised


_TABLES = {name: _normalised(name) for name in _HOURLY}


def weight(name: str, weekday: int, hour: int) -> float:
    """Relative activity in local ``hour`` (0–23) of ``weekday`` (0 = Monday); weekly mean 1."""
    return float(_TABLES[name][weekday, hour])


def table(name: str) -> NDArray[np.float64]:
    """The 7×24 weight table (rows Monday..Sunday), weekly mean 1."""
    return _TABLES[name].copy()


def peak(name: str) -> float:
    return float(_TABLES[name].max())
