"""Alert and plausibility thresholds: defaults, per fraction / site overrides, per device.

Pure data, read once at start (the wiring maps a TOML ``[alerts]`` table through
:meth:`FleetSettings.from_mapping`). Precedence, most specific last: defaults → fraction → site
→ the device's own ``full_threshold_pct`` (fleet-file column). Resolved :class:`Thresholds` are
cached per (fraction, site, device override), so a device holds a shared object, not a copy.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from ingest.fleet.errors import FleetConfigError

HOUR_S = 3600


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Every number the rules use; see docs/alerts.md for what each one means."""

    # full / full_soon (eco-box fill)
    full_threshold_pct: float = 80.0
    full_clear_pct: float = 50.0
    full_consecutive: int = 2
    full_soon_horizon_s: float = 6 * HOUR_S
    full_soon_clear_factor: float = 1.5
    # temperature and tilt (°C, degrees), battery (%)
    fire_temp_c: float = 80.0
    fire_clear_temp_c: float = 50.0
    overheat_temp_c: float = 60.0
    overheat_clear_temp_c: float = 50.0
    tilt_deg: float = 30.0
    tilt_clear_deg: float = 15.0
    battery_low_pct: float = 15.0
    battery_clear_pct: float = 20.0
    clear_reports: int = 2
    # RVM
    rvm_bin_full_pct: float = 80.0
    rvm_bin_clear_pct: float = 20.0
    rvm_clear_reports: int = 1
    # offline: silent for offline_factor × report_interval_s
    offline_factor: float = 3.0
    # plausibility and emptying detection
    spike_rise_pct: float = 25.0
    spike_max_readings: int = 2
    max_fill_rate_pct_per_h: float = 200.0
    rate_min_rise_pct: float = 10.0
    fall_tolerance_pct: float = 4.0
    collection_min_drop_pct: float = 7.0
    collection_min_drop_ratio: float = 0.3
    stuck_readings: int = 8
    # forecast
    forecast_min_points: int = 4
    forecast_min_span_s: float = HOUR_S
    forecast_interval_s: float = 1800.0  # device time between refits for full_soon; 0: each

    def check(self, where: str = "alerts") -> None:
        """Raise :class:`FleetConfigError` for values that make a rule meaningless."""
        for f in fields(self):
            v = getattr(self, f.name)
            if not math.isfinite(v) or v < 0:
                raise FleetConfigError(f"{where}.{f.name}: {v!r} must be a finite number >= 0")
        pairs = (
            ("full_clear_pct", "full_threshold_pct"),
            ("fire_clear_temp_c", "fire_temp_c"),
            ("overheat_clear_temp_c", "overheat_temp_c"),
            ("tilt_clear_deg", "tilt_deg"),
            ("rvm_bin_clear_pct", "rvm_bin_full_pct"),
        )
        for low, high in pairs:
            if getattr(self, low) >= getattr(self, high):
                raise FleetConfigError(
                    f"{where}.{low} ({getattr(self, low):g}) must be below "
                    f"{high} ({getattr(self, high):g}): set and clear need a gap (hysteresis)"
                )
        if self.battery_clear_pct <= self.battery_low_pct:
            raise FleetConfigError(f"{where}.battery_clear_pct must be above battery_low_pct")
        if self.full_threshold_pct > 100:
            raise FleetConfigError(f"{where}.full_threshold_pct must be at most 100")
        for name in (
            "full_consecutive",
            "clear_reports",
            "rvm_clear_reports",
            "stuck_readings",
            "spike_max_readings",
        ):
            if getattr(self, name) < 1:
                raise FleetConfigError(f"{where}.{name} must be at least 1")
        if self.full_soon_clear_factor < 1:
            raise FleetConfigError(f"{where}.full_soon_clear_factor must be at least 1")
        if self.offline_factor < 1:
            raise FleetConfigError(f"{where}.offline_factor must be at least 1")


_FIELDS = {f.name: f.type for f in fields(Thresholds)}
_INT_FIELDS = frozenset(n for n, t in _FIELDS.items() if t in ("int", int))


@dataclass(frozen=True, slots=True)
class FleetSettings:
    """Defaults plus partial overrides; ``thresholds_for`` resolves them for one device."""

    defaults: Thresholds = field(default_factory=Thresholds)
    by_fraction: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    by_site: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    notify_max_age_s: float = 3600.0
    _cache: dict[tuple[str | None, str | None, float | None], Thresholds] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self.defaults.check()
        for label, table in (("fraction", self.by_fraction), ("site", self.by_site)):
            for key, override in table.items():
                _resolve(self.defaults, override, f"alerts.{label}.{key}")

    @classmethod
    def from_mapping(cls, table: Mapping[str, object]) -> FleetSettings:
        """From a TOML ``[alerts]`` table: threshold keys, ``[alerts.fraction.<f>]``,
        ``[alerts.site.<s>]`` and ``notify_max_age_s``; unknown keys are errors."""
        base: dict[str, float] = {}
        by: dict[str, dict[str, Mapping[str, float]]] = {"fraction": {}, "site": {}}
        notify = 3600.0
        for key, value in table.items():
            if key in by:
                if not isinstance(value, Mapping):
                    raise FleetConfigError(f"alerts.{key} must be a table of tables")
                for name, sub in value.items():
                    if not isinstance(sub, Mapping):
                        raise FleetConfigError(f"alerts.{key}.{name} must be a table")
                    by[key][str(name)] = _numbers(sub, f"alerts.{key}.{name}")
            elif key == "notify_max_age_s":
                notify = _number(value, "alerts.notify_max_age_s")
            else:
                base.update(_numbers({key: value}, "alerts"))
        return cls(
            _resolve(Thresholds(), base, "alerts"),
            by["fraction"],
            by["site"],
            notify,
        )

    def thresholds_for(
        self, fraction: str | None, site: str | None, full_threshold_pct: float | None = None
    ) -> Thresholds:
        """The device's thresholds (cached: called once per device, not per message)."""
        key = (fraction, site, full_threshold_pct)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        t = self.defaults
        if fraction is not None and fraction in self.by_fraction:
            t = _resolve(t, self.by_fraction[fraction], f"alerts.fraction.{fraction}")
        if site is not None and site in self.by_site:
            t = _resolve(t, self.by_site[site], f"alerts.site.{site}")
        if full_threshold_pct is not None:
            t = _resolve(t, {"full_threshold_pct": full_threshold_pct}, "full_threshold_pct")
        self._cache[key] = t
        return t


def _number(value: object, where: str) -> float:
    if type(value) not in (int, float):
        raise FleetConfigError(f"{where}: expected a number, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _numbers(table: Mapping[str, object], where: str) -> dict[str, float]:
    out = {}
    for name, value in table.items():
        if name not in _FIELDS:
            raise FleetConfigError(
                f"{where}.{name}: unknown setting; known: {', '.join(sorted(_FIELDS))}"
            )
        number = _number(value, f"{where}.{name}")
        if name in _INT_FIELDS and not number.is_integer():
            raise FleetConfigError(f"{where}.{name}: expected a whole number, got {value!r}")
        out[name] = number
    return out


def _resolve(base: Thresholds, override: Mapping[str, float], where: str) -> Thresholds:
    values = _numbers(override, where)
    typed: dict[str, float | int] = {
        k: int(v) if k in _INT_FIELDS else v for k, v in values.items()
    }
    t = dataclasses.replace(base, **typed)  # type: ignore[arg-type]
    t.check(where)
    return t
