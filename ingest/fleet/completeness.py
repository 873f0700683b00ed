"""Per-device completeness from ``seq``: messages received vs expected, per UTC day.

The device counts every JSON message (+1, wrapping at 2³²). A forward jump of ``n`` means
``n - 1`` messages never arrived; a jump *backwards* of more than half the counter range is a
restart (firmware that cannot keep the counter in flash starts again at 0), not 2³¹ missing. A
64-bit window of the latest seqs tells a redelivered copy from a late message filling a gap.
"""

from __future__ import annotations

from array import array
from enum import Enum
from typing import Any, Final

SEQ_MOD: Final = 2**32
_HALF: Final = SEQ_MOD // 2
WINDOW_BITS: Final = 64
_MASK: Final = (1 << WINDOW_BITS) - 1
DAY_MS: Final = 86_400_000
DAYS_KEPT: Final = 8
NO_DAY: Final = -(2**62)


class Order(Enum):
    NEW = "new"  # newer than anything applied: drives the state machine
    LATE = "late"  # older (store-and-forward, out of order): counted, not applied
    DUPLICATE = "duplicate"  # a redelivered copy: changes nothing


class Completeness:
    """Counters of one device: ``days`` holds day, received, missing for the kept days before
    the newest (flat), the newest in ``day``, ``day_received``, ``day_missing`` — nearly every
    message counts towards it, and compiled those are plain ints, where each ``array`` item
    read or written is a boxed call (five of them were a ninth of ``DeviceState.apply``)."""

    __slots__ = (
        "day",
        "day_missing",
        "day_received",
        "days",
        "last_seq",
        "last_ts_ms",
        "missing",
        "received",
        "restarts",
        "window",
    )

    def __init__(self) -> None:
        self.last_seq = -1
        self.last_ts_ms = -(2**62)
        self.window = 0
        self.received = 0
        self.missing = 0
        self.restarts = 0
        self.days = array("q")
        self.day = NO_DAY  # none counted yet
        self.day_received = 0
        self.day_missing = 0

    def classify(self, ts_ms: int, seq: int) -> Order:
        """Count one JSON message and say how the state machine must treat it."""
        last = self.last_seq
        if last < 0:
            self.last_seq, self.last_ts_ms, self.window = seq, ts_ms, 1
            self._count(ts_ms, 1, 0)
            return Order.NEW
        back = (last - seq) % SEQ_MOD
        if ts_ms < self.last_ts_ms or (ts_ms == self.last_ts_ms and 0 <= back < WINDOW_BITS):
            if back == 0:
                return Order.DUPLICATE
            if back < WINDOW_BITS:
                bit = 1 << back
                if self.window & bit:
                    return Order.DUPLICATE
                self.window |= bit
                self._count(ts_ms, 1, -1)
            else:
                self._count(ts_ms, 1, 0)
            return Order.LATE
        forward = (seq - last) % SEQ_MOD
        if 0 < forward < _HALF:
            self.window = ((self.window << forward) | 1) & _MASK
            self._count(ts_ms, 1, forward - 1)
        else:  # backwards (or the same seq with a newer ts): the device restarted
            self.restarts += 1
            self.window = 1
            self._count(ts_ms, 1, 0)
        self.last_seq, self.last_ts_ms = seq, ts_ms
        return Order.NEW

    def _count(self, ts_ms: int, received: int, missing: int) -> None:
        day = ts_ms // DAY_MS
        self.received += received
        if missing < 0 and self.missing == 0:
            missing = 0
        self.missing += missing
        if day == self.day:  # the common case: today, the newest day
            self.day_received += received
            self.day_missing = max(0, self.day_missing + missing)
            return
        if self.day == NO_DAY:
            self._new_day(day, received, missing)
            return
        days = self.days  # flat: day, received, missing, day, ... (oldest first)
        if day < self.day:  # a late message of an earlier day
            for i in range(len(days) - 3, -1, -3):
                if days[i] == day:
                    days[i + 1] += received
                    days[i + 2] = max(0, days[i + 2] + missing)
                    return
                if days[i] < day:
                    break
        if day < (days[0] if days else self.day):
            return  # a late message of a day before the first kept: totals only
        self._new_day(day, received, missing)

    def _new_day(self, day: int, received: int, missing: int) -> None:
        """The newest entry becomes ``day`` (after the one it was, as the flat form kept it)."""
        days = self.days
        if self.day != NO_DAY:
            days.extend((self.day, self.day_received, self.day_missing))
            if len(days) > 3 * (DAYS_KEPT - 1):
                del days[:3]
        self.day, self.day_received, self.day_missing = day, received, max(0, missing)

    def _flat(self) -> list[int]:
        """Every kept day as day, received, missing, ... (oldest first; the snapshot form)."""
        flat = self.days.tolist()
        if self.day != NO_DAY:
            flat += [self.day, self.day_received, self.day_missing]
        return flat

    def per_day(self) -> list[tuple[int, int, int]]:
        """``(day start epoch ms, received, expected)`` for the kept days, oldest first."""
        d = self._flat()
        return [(d[i] * DAY_MS, d[i + 1], d[i + 1] + d[i + 2]) for i in range(0, len(d), 3)]

    def snapshot(self) -> list[object]:
        return [self.last_seq, self.last_ts_ms, self.window, self.received, self.missing,
                self.restarts, self._flat()]  # fmt: skip

    @classmethod
    def restore(cls, data: Any) -> Completeness:
        c = cls()
        seq, ts, window, received, missing, restarts, days = data
        c.last_seq, c.last_ts_ms, c.window = int(seq), int(ts), int(window)
        c.received, c.missing, c.restarts = int(received), int(missing), int(restarts)
        flat = [int(x) for x in days]
        if len(flat) % 3:
            raise ValueError("the days hold (day, received, missing) triples")
        if flat:
            c.day, c.day_received, c.day_missing = flat[-3], flat[-2], flat[-1]
            del flat[-3:]
        c.days = array("q", flat)
        return c
