"""What the intake keeps per device: a fleet of 100k devices must not grow the service's memory.

Every cache on the decode/encode path (parsed topics, tag sets, escaped tag values) is bounded
and holds small entries, so once the caches are full a new device costs nothing more. Counted
in allocated blocks (cheap and deterministic, unlike RSS); before the bound, each first-seen
topic compiled its own constructor: 24 blocks (~3 KB) per device.
"""

from __future__ import annotations

import gc
import sys
from datetime import UTC, datetime

import devices

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
NOW_MS = 1_777_636_800_000
PAYLOADS = {
    "fill": b'{"ts": %d, "seq": 1, "fill_pct": 50.5}' % NOW_MS,
    "status": b'{"ts": %d, "seq": 2, "battery_v": 3.6, "faults": ["lid_open"]}' % NOW_MS,
}


def feed(prefix: str, n: int) -> None:
    for i in range(n):
        for channel, payload in PAYLOADS.items():
            topic = f"taza/v1/almaty/ecobox/{prefix}-{i:06d}/{channel}"
            assert devices.encode(devices.decode(topic, payload, NOW))


def allocated_blocks() -> int:
    gc.collect()
    return sys.getallocatedblocks()


def test_100k_devices_cost_under_3_allocated_blocks_each() -> None:
    feed("warm", 10)
    before = allocated_blocks()
    feed("a", 100_000)
    after_first = allocated_blocks()
    feed("b", 100_000)
    after_second = allocated_blocks()
    assert (after_first - before) / 100_000 < 3
    # Caches full: the next 100k devices replace entries instead of adding them.
    assert (after_second - after_first) / 100_000 < 0.5
