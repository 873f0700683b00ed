"""Per-device rate limit: a flooding device is throttled, the others keep their throughput.

mosquitto 2.0 cannot limit one client's publish rate, and holding back a flooder's PUBACKs
would spend the Receive Maximum window that every device shares. So "throttled" means: a
message over the device's budget is **rejected** — reason ``rate_limited``, acknowledged once
its dead letter is stored (payload kept, replayable), counted, and fed back to the device
(itself rate-limited). It is checked before anything is decoded, from the topic alone.

The budget is a token bucket of ``rate`` messages per second and ``burst`` at once, kept as
GCRA (the generic cell rate algorithm, as in ATM networks and API gateways): one float per
device — its theoretical arrival time — instead of a token count and a clock. A device whose
float lies in the past is indistinguishable from one never seen, so such entries are dropped
first when the table reaches ``max_devices``. A dozen lines, so no library: general-purpose
limiters (pyrate-limiter, limits) are built around storage back ends for per-request use; on
this hot path a dict look-up and a comparison are the whole budget.

The clock is the message's monotonic receive time: no clock read of our own per message.
The limit applies to arrival at the service: a device's backlog that the broker queued while
taza was down arrives at the broker's pace, so ``burst`` must cover the messages one device
piles up during the outages you plan for (docs/ingest.md).
"""

from __future__ import annotations

from collections.abc import Container

from prometheus_client import CollectorRegistry, Counter

from devices.topics import DEVICE_ID_RE, RESERVED_REGIONS

KINDS = ("ecobox", "rvm")
_TOPIC_CACHE_MAX = 65536


class Buckets:
    """Token buckets of ``rate`` per second and ``burst`` at once, one per key, as GCRA.

    ``allow(key, now)`` spends a token or says no. At most ``max_keys`` entries: on overflow
    idle keys go first (their bucket is full again: forgetting them changes nothing), then, if
    most are active, the least indebted down to three quarters (a sort per ``max_keys / 4``
    new keys: amortised O(log n)); a flooder is the most indebted, so it is never the one
    forgotten while it floods."""

    def __init__(self, rate_per_s: float, burst: int, max_keys: int) -> None:
        if rate_per_s <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate_per_s > 0, burst >= 1 and max_keys >= 1 are required")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        self._interval = 1.0 / rate_per_s
        # A millionth of an interval of slack: (now + i) + i - now can round to just above
        # 2 * i, which refused the last message of a burst (a flaky test caught it).
        self._tolerance = (burst - 1 + 1e-6) * self._interval
        self._tat: dict[str, float] = {}

    def allow(self, key: str, now: float) -> bool:
        tat = self._tat.get(key, now)
        if tat < now:
            tat = now
        elif tat - now > self._tolerance:
            return False
        self._tat[key] = tat + self._interval
        if len(self._tat) > self.max_keys:
            self._shrink(now)
        return True

    def _shrink(self, now: float) -> None:
        tat = self._tat
        for key in [k for k, t in tat.items() if t <= now]:
            del tat[key]
        keep = self.max_keys * 3 // 4
        if len(tat) > keep:
            # The most indebted stay: a flooder sits at the top of its tolerance.
            kept = sorted(tat.items(), key=lambda item: item[1])[len(tat) - keep :]
            tat.clear()
            tat.update(kept)

    def __len__(self) -> int:
        return len(self._tat)

    def __contains__(self, key: object) -> bool:
        return key in self._tat


def device_in(topic: str, known: Container[str] = ()) -> tuple[str, str] | None:
    """(device id, kind label) of a topic that names a device, else None.

    The device is the fifth level, which the broker's ACL pattern ``taza/v1/+/+/{id}/#`` binds
    to the account whatever the other levels say (a bad channel or an extra level is still that
    device's message). Reserved namespaces are taza's own and name no device. An id in
    ``known`` was checked before (the pattern match is half the cost)."""
    parts = topic.split("/", 5)
    if (
        len(parts) >= 5
        and parts[0] == "taza"
        and parts[1] == "v1"
        and parts[2] not in RESERVED_REGIONS
        and (parts[4] in known or DEVICE_ID_RE.fullmatch(parts[4]) is not None)
    ):
        return parts[4], parts[3] if parts[3] in KINDS else "other"
    return None


class DeviceRateLimit:
    """``allow(topic, now)`` → False when the topic's device is over its budget; topics that
    name no device are not limited (under the broker profile's ACLs no device can publish one).

    Cost per message: a topic-cache look-up and one :class:`Buckets` check (bench/ratelimit.py).
    Memory: at most ``max_devices`` buckets (≈ 120 bytes each with the device id) and a
    topic cache of at most 65,536 entries, cleared when full.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        max_devices: int = 250_000,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.buckets = Buckets(rate_per_s, burst, max_devices)
        self._device_of: dict[str, tuple[str, str] | None] = {}
        self._limited: dict[str, int] = dict.fromkeys((*KINDS, "other"), 0)
        self.detail = (
            f"over the device's rate limit ({rate_per_s:g} messages/s, burst {burst}): "
            "slow down (TAZA_RATE_LIMIT_PER_S / TAZA_RATE_LIMIT_BURST)"
        )
        self.counter = Counter(
            "taza_rate_limited_total",
            "messages rejected as rate_limited, by the kind in their topic",
            ["kind"],
            registry=registry,
        )
        for kind in self._limited:
            self.counter.labels(kind=kind)

    def allow(self, topic: str, now: float) -> bool:
        try:
            known = self._device_of[topic]
        except KeyError:
            known = self._learn(topic)
        if known is None or self.buckets.allow(known[0], now):
            return True
        self._limited[known[1]] += 1
        return False

    def _learn(self, topic: str) -> tuple[str, str] | None:
        if len(self._device_of) >= _TOPIC_CACHE_MAX:
            self._device_of.clear()
        known = self._device_of[topic] = device_in(topic, self.buckets)
        return known

    def flush_counts(self) -> None:
        """Into the metric, once per batch (a prometheus ``inc`` takes a lock)."""
        for kind, n in self._limited.items():
            if n:
                self.counter.labels(kind=kind).inc(n)
                self._limited[kind] = 0

    def __len__(self) -> int:
        return len(self.buckets)
