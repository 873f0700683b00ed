"""The state of one device and the rules that turn its readings into events.

Pure and synchronous: :meth:`DeviceState.apply` takes one stored message (in the order the
device's messages were stored) and returns the events it causes; nothing else is touched, so
devices can be partitioned across replicas by ``device_id``.

Order. Only a message newer than everything applied (device time, then ``seq``) moves the
state machine; a late one (store-and-forward, out of order) is counted for completeness and
proves the device alive, a redelivered copy changes nothing at all.

Fill level, plausibility and emptying (rules in docs/alerts.md):

- A rise of ``spike_rise_pct`` or more, a rise into the ``full`` range of ``rate_min_rise_pct``
  or more, or a rise faster than ``max_fill_rate_pct_per_h`` is *held*. If the next reading is
  back (less than half of the jump remains), the held one was a ``spike``: that anomaly is
  emitted when the next reading arrives (one reading late), with the held reading's own time.
  A reading that stays up is held too, up to ``spike_max_readings`` (2: independent 2 %
  glitches come in pairs about once per 2,500 readings); the next one that stays up proves the
  jump real: the held readings are applied then, the first flagged ``impossible_rate`` if the
  rise was too fast.
- A fall of at least ``collection_min_drop_pct`` *and* ``collection_min_drop_ratio`` of the
  level is an emptying (a ``Collection``; partial ones too); it is applied at once, without
  look-ahead, because the known glitches read high (an object under the sensor), never low.
- A smaller fall beyond ``fall_tolerance_pct`` is ``fall_without_collection``: flagged, the
  level is kept; a second reading agreeing with it re-bases the level (compaction, settling).
- The very first reading of a device waits for the second: a first reading far above it
  is a ``spike``, not the level an emptying is measured from.
- The same value ``stuck_readings`` times in a row (not at the clamped ends 0 / 100) is
  ``stuck``: those readings are flagged and ``sensor_fault`` fires.

A flagged reading never fires or clears an alert by itself.
"""

from __future__ import annotations

import base64
import binascii
from array import array
from collections.abc import Iterator
from typing import Any, Final

import numpy as np

from devices.construct import fast_constructor
from devices.lineprotocol import timestamp_ns
from devices.message import Deposit, Fill, Message, Presence, Status
from devices.registry import DeviceInfo
from devices.timestamps import ms_to_ns
from ingest.fleet import forecast as fc
from ingest.fleet.completeness import Completeness, Order
from ingest.fleet.errors import SnapshotError
from ingest.fleet.events import (
    AlertState,
    AlertTransition,
    Anomaly,
    AnomalyKind,
    Cause,
    Collection,
    Event,
    Forecast,
    Severity,
    Source,
    episode_id,
)
from ingest.fleet.settings import Thresholds

# Events are frozen dataclasses: their own __init__ sets each field through object.__setattr__,
# ≈ 11,000 instructions for an AlertTransition (devices.construct's constructors: ≈ 1,000).
_new_transition: Final = fast_constructor(AlertTransition)
_new_collection: Final = fast_constructor(Collection)
_new_anomaly: Final = fast_constructor(Anomaly)
_new_forecast: Final = fast_constructor(Forecast)

SEVERITY: Final[dict[str, Severity]] = {
    "fire": Severity.CRITICAL,
    "overheat": Severity.MAJOR,
    "full": Severity.MAJOR,
    "full_soon": Severity.MINOR,
    "tilted": Severity.MAJOR,
    "lid_open": Severity.MINOR,
    "sensor_fault": Severity.MINOR,
    "battery_low": Severity.MINOR,
    "offline": Severity.MAJOR,
    "jam": Severity.MAJOR,
    "out_of_service": Severity.MAJOR,
    "door_open": Severity.MINOR,
    "printer_error": Severity.MINOR,
}
"""Severity per alert; ``bin_full_{material}`` is major."""

RVM_FAULT_ALERTS: Final = ("door_open", "printer_error")
FORECAST_REACH_PCT: Final = 40.0
"""The forecast runs only for bins within this of their threshold (or with full_soon firing):
no bin fills 40 points within a 6 h horizon, and the fit is the costliest step."""


class Episode:
    """One firing alert (only firing ones are kept: bounded by the number of alert kinds)."""

    __slots__ = ("cause", "ok", "since_ms", "since_ns", "threshold", "value")

    def __init__(
        self,
        since_ms: int,
        since_ns: int,
        value: float,
        threshold: float | None,
        cause: Cause,
        ok: int = 0,
    ) -> None:
        self.since_ms = since_ms
        self.since_ns = since_ns
        self.value = value
        self.threshold = threshold
        self.cause = cause
        self.ok = ok


def _severity(alert: str) -> Severity:
    return SEVERITY.get(alert, Severity.MAJOR)


class DeviceState:
    """Everything taza knows about one device now; bounded (see docs/alerts.md, Memory)."""

    __slots__ = (
        "alerts",
        "battery_pct",
        "battery_v",
        "bins",
        "fallen",
        "faults",
        "fit_ms",
        "forecast",
        "full_run",
        "held",
        "hist_t",
        "hist_t0_ms",
        "hist_y",
        "last_collection_ms",
        "last_heard_ms",
        "last_seen_ms",
        "level",
        "level_ts_ms",
        "mode",
        "profile",
        "seq",
        "source",
        "stuck_count",
        "stuck_value",
        "temperature_c",
        "th",
        "tilt_deg",
    )

    def __init__(self, source: Source, th: Thresholds) -> None:
        self.source = source
        self.th = th
        self.seq = Completeness()
        self.last_heard_ms = -1  # wall clock of the latest message from the device
        self.last_seen_ms = -1  # device time of the latest applied message
        self.level: float | None = None
        self.level_ts_ms = 0
        self.held: tuple[tuple[float, int, int], ...] = ()
        self.fallen: float | None = None
        self.full_run = 0
        self.stuck_value: float | None = None
        self.stuck_count = 0
        # Readings since the last collection (float32, as the fit reads them): seconds
        # after hist_t0_ms, and the levels.
        self.hist_t = array("f")
        self.hist_y = array("f")
        self.hist_t0_ms = 0
        self.profile = array("f", bytes(4 * 24))  # fill rate %/h per UTC hour, learnt
        self.last_collection_ms: int | None = None
        self.forecast: Forecast | None = None
        self.fit_ms: int | None = None  # device time of the fit behind ``forecast``
        self.battery_pct: float | None = None
        self.battery_v: float | None = None
        self.temperature_c: float | None = None
        self.tilt_deg: float | None = None
        self.faults: tuple[str, ...] = ()
        self.mode: str | None = None
        self.bins: tuple[tuple[str, float], ...] = ()
        self.alerts: dict[str, Episode] = {}

    # ----- public view --------------------------------------------------------------------

    @property
    def online(self) -> bool:
        return "offline" not in self.alerts

    @property
    def info(self) -> DeviceInfo | None:
        return self.source.info

    def firing(self) -> Iterator[AlertTransition]:
        """The alerts firing now, as their firing transitions (to rebuild retained topics)."""
        for name, ep in self.alerts.items():
            yield self._transition(
                name, AlertState.FIRING, ep, ep.since_ms, ep.since_ns, ep.cause, self.forecast
            )

    # ----- input ----------------------------------------------------------------------------

    def apply(self, message: Message, now_ms: int | None = None) -> list[Event]:
        """The events one stored message causes. ``now_ms``: wall clock of its delivery
        (default: its own ``ts``), used for ``offline``, which is judged on the wall clock."""
        out: list[Event] = []
        body = message.body
        heard = message.ts_ms if now_ms is None else now_ms
        if type(body) is Presence:
            if body.online:
                self._heard(heard, out)
            elif "offline" not in self.alerts:
                limit = self._offline_limit_s()
                self._fire("offline", 0.0, limit, Cause.LAST_WILL, heard, ms_to_ns(heard), out)
            return out
        if message.seq is None:
            return out
        order = self.seq.classify(message.ts_ms, message.seq)
        if order is Order.DUPLICATE:
            return out
        self._heard(heard, out)
        if order is Order.LATE:
            return out
        ts = message.ts_ms
        ns = timestamp_ns(message)
        self.last_seen_ms = ts
        if type(body) is Fill:
            if body.temperature_c is not None:
                self.temperature_c = body.temperature_c
                self._temperature(ts, ns, out)
            if body.tilt_deg is not None:
                self.tilt_deg = body.tilt_deg
                self._tilt(ts, ns, out)
            self._fill(body.fill_pct, ts, ns, out)
        elif type(body) is Status:
            self._status(body, ts, ns, out)
        elif type(body) is Deposit:
            pass  # proves the machine alive; bins come with its status
        return out

    def tick(self, now_ms: int) -> list[Event]:
        """``offline`` by silence: nothing heard for ``offline_factor`` × the report interval."""
        if "offline" in self.alerts or self.last_heard_ms < 0 or self.source.info is None:
            return []
        limit_s = self._offline_limit_s()
        if limit_s is None:
            return []
        due = self.last_heard_ms + int(limit_s * 1000)
        if now_ms <= due:
            return []
        out: list[Event] = []
        self._fire("offline", (now_ms - self.last_heard_ms) / 1000, limit_s, Cause.SILENT,
                   due, ms_to_ns(due), out)  # fmt: skip
        return out

    def forecast_now(self) -> Forecast | None:
        """The forecast from the readings since the last collection (computed on demand)."""
        return self._forecast(self.level_ts_ms)

    # ----- presence -------------------------------------------------------------------------

    def _offline_limit_s(self) -> float | None:
        info = self.source.info
        return None if info is None else self.th.offline_factor * info.report_interval_s

    def _heard(self, heard: int, out: list[Event]) -> None:
        if heard > self.last_heard_ms:
            self.last_heard_ms = heard
        if "offline" in self.alerts:
            self._resolve("offline", Cause.BACK_ONLINE, heard, ms_to_ns(heard), out)

    # ----- fill -----------------------------------------------------------------------------

    def _fill(self, r: float, ts: int, ns: int, out: list[Event]) -> None:
        th = self.th
        if r == self.stuck_value and 0.5 < r < 99.5:
            self.stuck_count += 1
            if self.stuck_count >= th.stuck_readings:
                if self.stuck_count == th.stuck_readings:
                    out.append(_new_anomaly(self.source, AnomalyKind.STUCK, r, ts, ns))
                self._sensor(ts, ns, out)
                return
        else:
            self.stuck_value, self.stuck_count = r, 1
            if "sensor_fault" in self.alerts:
                self._sensor(ts, ns, out)

        held = self.held
        level = self.level
        if level is None:  # the first reading ever: nothing to judge it by, so it waits
            if not held:
                self.held = ((r, ts, ns),)
                return
            self.held = ()
            hf, hts, hns = held[0]
            if hf - r >= th.spike_rise_pct:
                out.append(_new_anomaly(self.source, AnomalyKind.SPIKE, hf, hts, hns))
                self._accept(r, ts, ns, out, plausible=True)
                return
            self._accept(hf, hts, hns, out, plausible=True)
            level = hf
        elif held:
            low = min(h[0] for h in held)
            if r - level < (low - level) / 2:
                self.held = ()
                for hf, hts, hns in held:
                    out.append(_new_anomaly(self.source, AnomalyKind.SPIKE, hf, hts, hns))
            elif len(held) < th.spike_max_readings:
                self.held = (*held, (r, ts, ns))
                return
            else:
                self.held = ()
                hf, hts, hns = held[0]
                too_fast = self._rate(hf - level, hts) > th.max_fill_rate_pct_per_h
                if too_fast:
                    out.append(_new_anomaly(self.source, AnomalyKind.IMPOSSIBLE_RATE, hf, hts, hns))
                self._accept(hf, hts, hns, out, plausible=not too_fast)
                for hf, hts, hns in held[1:]:
                    self._accept(hf, hts, hns, out, plausible=True)
                level = held[-1][0]
        d = r - level
        if d >= th.rate_min_rise_pct and (
            d >= th.spike_rise_pct
            or r >= th.full_threshold_pct
            or self._rate(d, ts) > th.max_fill_rate_pct_per_h
        ):
            self.held = ((r, ts, ns),)
            return
        if d <= -th.fall_tolerance_pct:
            if -d >= max(th.collection_min_drop_pct, th.collection_min_drop_ratio * level):
                self._collection(level, r, ts, ns, out)
                return
            fallen = self.fallen
            if fallen is not None and abs(r - fallen) <= th.fall_tolerance_pct:
                self.fallen = None
                self._reset_history()
                self._accept(r, ts, ns, out, plausible=True)
                return
            self.fallen = r
            out.append(_new_anomaly(self.source, AnomalyKind.FALL_WITHOUT_COLLECTION, r, ts, ns))
            return
        self.fallen = None
        self._accept(r, ts, ns, out, plausible=True)

    def _rate(self, rise: float, ts: int) -> float:
        """%/h from the current level's reading to ``ts``."""
        hours = (ts - self.level_ts_ms) / 3_600_000
        return rise / hours if hours > 0 else float("inf")

    def _accept(self, r: float, ts: int, ns: int, out: list[Event], *, plausible: bool) -> None:
        self.level, self.level_ts_ms = r, ts
        if not plausible:
            return
        self._history_add(ts, r)
        th = self.th
        self.full_run = self.full_run + 1 if r >= th.full_threshold_pct else 0
        full = self.alerts.get("full")
        if full is None:
            if self.full_run >= th.full_consecutive:
                self._resolve("full_soon", Cause.FULL, ts, ns, out)
                self._fire("full", r, th.full_threshold_pct, Cause.THRESHOLD, ts, ns, out)
                self.forecast = self.fit_ms = None
                return
        elif r < th.full_clear_pct:
            self._resolve("full", Cause.BELOW_CLEAR, ts, ns, out)
        else:
            full.value = r
            return
        self._full_soon(r, ts, ns, out)

    def _collection(self, before: float, r: float, ts: int, ns: int, out: list[Event]) -> None:
        out.append(_new_collection(self.source, before, r, ts, ns))
        self.level, self.level_ts_ms = r, ts
        self.full_run = 0
        self.fallen = None
        self.held = ()
        self.last_collection_ms = ts
        self._reset_history()
        self._history_add(ts, r)
        self._resolve("full", Cause.COLLECTED, ts, ns, out)
        self._resolve("full_soon", Cause.COLLECTED, ts, ns, out)

    # ----- forecast -----------------------------------------------------------------------

    def _reset_history(self) -> None:
        del self.hist_t[:]
        del self.hist_y[:]
        self.forecast = self.fit_ms = None

    def _history_add(self, ts: int, r: float) -> None:
        """Per plausible reading: plain ``array`` appends and a pure-Python profile update
        (numpy per reading was ≈ 3 µs of ``apply``'s 7); numpy only for the fit."""
        ht = self.hist_t
        if not ht:
            self.hist_t0_ms = ts
        else:
            prev_ms = self.hist_t0_ms + int(ht[-1] * 1000)
            hours = (ts - prev_ms) / 3_600_000
            if 0 < hours <= 2:
                fc.learn(self.profile, prev_ms, (r - self.hist_y[-1]) / hours)
            if len(ht) >= fc.WINDOW:
                # Full: keep every other reading, so the fit still spans the whole time since
                # the emptying in bounded memory; recent ones stay dense.
                ht = self.hist_t = ht[::2]
                self.hist_y = self.hist_y[::2]
        ht.append((ts - self.hist_t0_ms) / 1000)
        self.hist_y.append(r)

    def _forecast(self, now_ms: int) -> Forecast | None:
        th = self.th
        ht = self.hist_t
        n = len(ht)
        if n < th.forecast_min_points or ht[-1] - ht[0] < th.forecast_min_span_s:
            return None
        rate, at = fc.crossing_ms(
            ht, self.hist_y, self.hist_t0_ms, now_ms, th.full_threshold_pct, self.profile
        )
        return _new_forecast(round(rate, 3), at, th.full_threshold_pct, n)

    def _full_soon(self, r: float, ts: int, ns: int, out: list[Event]) -> None:
        """Judged only when the forecast is refitted, at most once per
        ``forecast_interval_s`` of device time (the fit is the costliest step of ``apply``):
        each judgement is one a fit per reading would make too, so ``full_soon`` fires or
        clears at most that much later (measured in docs/alerts.md)."""
        th = self.th
        ep = self.alerts.get("full_soon")
        if ep is None and r < th.full_threshold_pct - FORECAST_REACH_PCT:
            self.forecast = self.fit_ms = None
            return
        fit_ms = self.fit_ms
        if fit_ms is not None and ts - fit_ms < th.forecast_interval_s * 1000:
            if ep is not None:
                ep.value = r
            return
        f = self.forecast = self._forecast(ts)
        self.fit_ms = None if f is None else ts  # too few readings: try the next one
        horizon_ms = th.full_soon_horizon_s * 1000
        lead = None if f is None or f.full_at_ms is None else f.full_at_ms - ts
        if ep is None:
            if lead is not None and lead <= horizon_ms:
                self._fire("full_soon", r, th.full_threshold_pct, Cause.FORECAST, ts, ns, out)
        elif lead is None or lead > horizon_ms * th.full_soon_clear_factor:
            self._resolve("full_soon", Cause.FORECAST_OUT, ts, ns, out)
        else:
            ep.value = r

    # ----- status and the fault-like alerts -------------------------------------------------

    def _status(self, s: Status, ts: int, ns: int, out: list[Event]) -> None:
        self.faults = s.faults
        if s.battery_pct is not None:
            self.battery_pct = s.battery_pct
        if s.battery_v is not None:
            self.battery_v = s.battery_v
        if s.temperature_c is not None:
            self.temperature_c = s.temperature_c
        faults = s.faults
        th = self.th
        self._temperature(ts, ns, out)
        if self.source.kind == "rvm":
            self.mode = s.mode if s.mode is not None else self.mode
            self.bins = s.bins or self.bins
            n = th.rvm_clear_reports
            jam = "jam" in faults or self.mode == "jam"
            self._rule("jam", jam, jam, 1.0, None, Cause.MODE, n, ts, ns, out)
            oos = self.mode == "out_of_service"
            self._rule("out_of_service", oos, oos, 1.0, None, Cause.MODE, n, ts, ns, out)
            for name in RVM_FAULT_ALERTS:
                on = name in faults
                self._rule(name, on, on, 1.0, None, Cause.FAULT, n, ts, ns, out)
            for material, pct in s.bins:
                self._rule(
                    f"bin_full_{material}",
                    pct >= th.rvm_bin_full_pct,
                    pct >= th.rvm_bin_clear_pct,
                    pct,
                    th.rvm_bin_full_pct,
                    Cause.THRESHOLD,
                    1,
                    ts,
                    ns,
                    out,
                    Cause.COLLECTED,
                )
        else:
            self._tilt(ts, ns, out)
            lid = "lid_open" in faults
            n = th.clear_reports
            self._rule("lid_open", lid, lid, 1.0, None, Cause.FAULT, n, ts, ns, out)
            self._sensor(ts, ns, out)
        low = "low_battery" in faults
        battery = self.battery_pct
        set_low = low or (battery is not None and battery < th.battery_low_pct)
        hold_low = low or (battery is not None and battery < th.battery_clear_pct)
        cause = Cause.FAULT if low else Cause.BATTERY
        value = battery if battery is not None else 1.0
        self._rule("battery_low", set_low, hold_low, value, th.battery_low_pct, cause,
                   th.clear_reports, ts, ns, out)  # fmt: skip

    def _temperature(self, ts: int, ns: int, out: list[Event]) -> None:
        th = self.th
        temp = self.temperature_c
        alerts, faults = self.alerts, self.faults
        if (
            (temp is None or (temp < th.fire_temp_c and temp < th.overheat_temp_c))
            and "fire" not in alerts
            and "overheat" not in alerts
            and "fire" not in faults
            and "overheat" not in faults
        ):
            return  # neither can fire nor is firing: the two rules below would do nothing
        t = -1000.0 if temp is None else temp
        value = 1.0 if temp is None else temp
        for name, limit, clear in (
            ("fire", th.fire_temp_c, th.fire_clear_temp_c),
            ("overheat", th.overheat_temp_c, th.overheat_clear_temp_c),
        ):
            fault = name in self.faults
            cause = Cause.FAULT if fault else Cause.TEMPERATURE
            self._rule(name, fault or t >= limit, fault or t >= clear, value, limit, cause,
                       th.clear_reports, ts, ns, out)  # fmt: skip

    def _tilt(self, ts: int, ns: int, out: list[Event]) -> None:
        th = self.th
        fault = "tilted" in self.faults
        if (
            not fault
            and "tilted" not in self.alerts
            and (self.tilt_deg is None or self.tilt_deg < th.tilt_deg)
        ):
            return  # cannot fire, is not firing: the rule below would do nothing
        tilt = -1.0 if self.tilt_deg is None else self.tilt_deg
        value = 1.0 if self.tilt_deg is None else self.tilt_deg
        cause = Cause.FAULT if fault else Cause.TILT
        self._rule("tilted", fault or tilt >= th.tilt_deg, fault or tilt >= th.tilt_clear_deg,
                   value, th.tilt_deg, cause, th.clear_reports, ts, ns, out)  # fmt: skip

    def _sensor(self, ts: int, ns: int, out: list[Event]) -> None:
        fault = "sensor_error" in self.faults
        stuck = self.stuck_count >= self.th.stuck_readings
        cause = Cause.FAULT if fault else Cause.STUCK
        on = fault or stuck
        self._rule("sensor_fault", on, on, 1.0, None, cause, self.th.clear_reports, ts, ns, out)

    # ----- episodes -------------------------------------------------------------------------

    def _rule(
        self,
        name: str,
        set_when: bool,
        hold_when: bool,
        value: float,
        threshold: float | None,
        cause: Cause,
        clear_after: int,
        ts: int,
        ns: int,
        out: list[Event],
        clear_cause: Cause = Cause.CLEARED,
    ) -> None:
        """Set on ``set_when``; clear after ``clear_after`` reports in a row without
        ``hold_when`` (the hysteresis: ``hold_when`` is the weaker condition)."""
        ep = self.alerts.get(name)
        if ep is None:
            if set_when:
                self._fire(name, value, threshold, cause, ts, ns, out)
        elif hold_when:
            ep.ok = 0
            ep.value = value
        else:
            ep.ok += 1
            if ep.ok >= clear_after:
                self._resolve(name, clear_cause, ts, ns, out)

    def _fire(
        self,
        name: str,
        value: float,
        threshold: float | None,
        cause: Cause,
        ts: int,
        ns: int,
        out: list[Event],
    ) -> None:
        ep = self.alerts[name] = Episode(ts, ns, value, threshold, cause)
        forecast = self.forecast if name == "full_soon" else None
        out.append(self._transition(name, AlertState.FIRING, ep, ts, ns, cause, forecast))

    def _resolve(self, name: str, cause: Cause, ts: int, ns: int, out: list[Event]) -> None:
        ep = self.alerts.pop(name, None)
        if ep is None:
            return
        ts, ns = max(ts, ep.since_ms), max(ns, ep.since_ns)
        out.append(self._transition(name, AlertState.RESOLVED, ep, ts, ns, cause, None))

    def _transition(
        self,
        name: str,
        state: AlertState,
        ep: Episode,
        ts: int,
        ns: int,
        cause: Cause,
        forecast: Forecast | None,
    ) -> AlertTransition:
        return _new_transition(
            self.source,
            name,
            state,
            _severity(name),
            ep.value,
            ep.threshold,
            ep.since_ms,
            ts,
            ns,
            episode_id(self.source.device_id, name, ep.since_ms),
            cause,
            forecast if name == "full_soon" else None,
        )

    # ----- snapshot -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, object]:
        """Plain JSON-able data; everything needed so that a restart fires and loses nothing."""
        return {
            "r": self.source.region,
            "k": self.source.kind,
            "q": self.seq.snapshot(),
            "h": self.last_heard_ms,
            "s": self.last_seen_ms,
            "l": self.level,
            "lt": self.level_ts_ms,
            "hd": [list(h) for h in self.held],
            "f": self.fallen,
            "fr": self.full_run,
            "sv": self.stuck_value,
            "sc": self.stuck_count,
            "ht": self.hist_t0_ms,
            "hi": base64.b64encode(_interleave(self.hist_t, self.hist_y)).decode("ascii"),
            "c": self.last_collection_ms,
            "fc": self._fit_snapshot(),
            "p": base64.b64encode(self.profile.tobytes()).decode("ascii"),
            "b": [self.battery_pct, self.battery_v, self.temperature_c, self.tilt_deg],
            "fa": list(self.faults),
            "m": self.mode,
            "bn": [list(b) for b in self.bins],
            "a": {
                n: [e.since_ms, e.since_ns, e.value, e.threshold, e.cause.value, e.ok]
                for n, e in self.alerts.items()
            },
        }

    def _fit_snapshot(self) -> list[object] | None:
        f = self.forecast
        if f is None:
            return None
        return [f.rate_pct_per_h, f.full_at_ms, f.threshold_pct, f.points, self.fit_ms]

    @classmethod
    def restore(
        cls, device_id: str, data: dict[str, object], info: DeviceInfo | None, th: Thresholds
    ) -> DeviceState:
        """Inverse of :meth:`snapshot`; :class:`SnapshotError` if the data is not one."""
        try:
            d: Any = data
            st = cls(Source(device_id, str(d["r"]), str(d["k"]), info), th)
            st.seq = Completeness.restore(d["q"])
            st.last_heard_ms = int(d["h"])
            st.last_seen_ms = int(d["s"])
            st.level = _opt_float(d["l"])
            st.level_ts_ms = int(d["lt"])
            st.held = tuple((float(hf), int(hts), int(hns)) for hf, hts, hns in d["hd"])
            st.fallen = _opt_float(d["f"])
            st.full_run = int(d["fr"])
            st.stuck_value = _opt_float(d["sv"])
            st.stuck_count = int(d["sc"])
            st.hist_t0_ms = int(d["ht"])
            hist = array("f", base64.b64decode(d["hi"], validate=True))
            if len(hist) % 2:
                raise ValueError("the history holds (time, level) pairs")
            st.hist_t, st.hist_y = hist[0::2], hist[1::2]
            st.last_collection_ms = None if d["c"] is None else int(d["c"])
            st.profile = array("f", base64.b64decode(d["p"], validate=True))
            if len(st.profile) != 24:
                raise ValueError("the fill profile has 24 hours")
            st.battery_pct, st.battery_v, st.temperature_c, st.tilt_deg = (
                _opt_float(x) for x in d["b"]
            )
            st.faults = tuple(str(x) for x in d["fa"])
            st.mode = None if d["m"] is None else str(d["m"])
            st.bins = tuple((str(a), float(b)) for a, b in d["bn"])
            for name, (since, since_ns, value, threshold, cause, ok) in d["a"].items():
                st.alerts[str(name)] = Episode(
                    int(since), int(since_ns), float(value), _opt_float(threshold), Cause(cause),
                    int(ok),
                )  # fmt: skip
            if "fc" in d:  # the last fit, as it was: a restart changes no refit
                if d["fc"] is not None:
                    rate, at, threshold, points, fit_ms = d["fc"]
                    st.forecast = Forecast(float(rate), None if at is None else int(at),
                                           float(threshold), int(points))  # fmt: skip
                    st.fit_ms = None if fit_ms is None else int(fit_ms)
            elif "full_soon" in st.alerts:  # a snapshot of a taza that fitted per reading
                st.forecast = st.forecast_now()
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
            raise SnapshotError(f"device {device_id}: not a fleet-state snapshot ({exc})") from None
        return st


def _interleave(t: array[float], y: array[float]) -> bytes:
    """The snapshot's history form: float32 time, level, time, level, ..."""
    xy = np.empty((len(t), 2), dtype=np.float32)
    xy[:, 0] = np.frombuffer(t, dtype=np.float32)
    xy[:, 1] = np.frombuffer(y, dtype=np.float32)
    return xy.tobytes()


def _opt_float(x: Any) -> float | None:
    return None if x is None else float(x)
