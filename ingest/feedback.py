"""Device feedback: each rejected message is also told to its device, on
``taza/v1/_feedback/{device_id}`` (QoS 0, not retained), so a firmware engineer learns at once
why a message was refused — before, every bad message got a PUBACK and the device never knew.

Order (as delivery's): only after the dead-letter record is fsynced, from delivery's
after-store hook; the message is acknowledged right after. Never blocking: QoS 0 through the
intake's ``publish`` (a write to the socket's buffer, dropped while disconnected), and both
limits are checked before the document is built, so a flood of rejections costs a look-up
each. Bounded: per device a token bucket (``TAZA_FEEDBACK_RATE_PER_S``,
``TAZA_FEEDBACK_BURST``, at most as many devices as the rate limit tracks), and one for all
devices together (``TAZA_FEEDBACK_TOTAL_PER_S``).

Which rejections name a device: those whose topic has the device id at its fifth level
(``taza/v1/{any}/{any}/{device_id}/...``, the level the broker's ACL binds to the account) —
so a bad region, kind, channel or an extra level still reach the device; a topic too short or
with an invalid id names nobody (counted as ``no_device``).

The document (docs/protocol.md "Feedback") carries only the message's own data: the reason,
the detail, the field, the topic, the receive time, and ``seq`` / ``ts`` when the payload is a
JSON object that has them. ``refused_by_database`` and ``internal_error`` get a fixed detail:
the database's message may name another device's series, and a bug's text is for operators.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import orjson
import structlog
from prometheus_client import CollectorRegistry, Counter

from devices import Reason
from ingest.batch import DeadLetter
from ingest.ratelimit import Buckets, device_in

log = structlog.get_logger("ingest.feedback")

FEEDBACK_TOPIC = "taza/v1/_feedback/{device_id}"
SUPPRESSED = ("no_device", "device_rate", "total_rate", "publish_failed")
DETAIL_MAX = 500
FIXED_DETAIL = {
    Reason.REFUSED_BY_DATABASE: "the database refused this message's points (a field type "
    "conflict or a database limit); the operators have the message in the dead-letter store",
    Reason.INTERNAL_ERROR: "taza failed on this message (a bug, not your fault); the operators "
    "have the message in the dead-letter store",
}
_NO_PAYLOAD = frozenset({Reason.TOO_LARGE, Reason.NOT_UTF8, Reason.NOT_JSON})
_SEQ_MAX = 2**32 - 1

Publish = Callable[[str, bytes, int, bool], None]


class Feedback:
    def __init__(
        self,
        publish: Publish,
        *,
        rate_per_s: float,
        burst: int,
        total_per_s: float,
        max_devices: int = 250_000,
        max_payload_bytes: int = 4096,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._publish = publish
        self._per_device = Buckets(rate_per_s, burst, max_devices)
        self._total = Buckets(total_per_s, max(1, int(total_per_s)), 1)
        self._max_payload = max_payload_bytes
        self._publish_failed_logged = False
        self.published = Counter(
            "taza_feedback_published_total",
            "rejections told to their device on taza/v1/_feedback/{device_id}",
            registry=registry,
        )
        self.suppressed = Counter(
            "taza_feedback_suppressed_total",
            "rejections not told to a device, by why (no_device, device_rate, total_rate, "
            "publish_failed)",
            ["why"],
            registry=registry,
        )
        for why in SUPPRESSED:
            self.suppressed.labels(why=why)

    def send(self, letters: Sequence[DeadLetter]) -> None:
        """Tell each letter's device, within the limits. Called once per stored batch."""
        now = time.monotonic()
        published = 0
        skipped = dict.fromkeys(SUPPRESSED, 0)
        for letter in letters:
            known = device_in(letter.topic)
            if known is None:
                skipped["no_device"] += 1
                continue
            device = known[0]
            if not self._per_device.allow(device, now):
                skipped["device_rate"] += 1
                continue
            if not self._total.allow("", now):
                skipped["total_rate"] += 1
                continue
            payload = orjson.dumps(self.document(letter))
            try:
                self._publish(FEEDBACK_TOPIC.format(device_id=device), payload, 0, False)
            except Exception as exc:  # a closing socket must not fail delivery
                skipped["publish_failed"] += 1
                if not self._publish_failed_logged:
                    log.warning("feedback_publish_failed", error=repr(exc), logged="once")
                    self._publish_failed_logged = True
                continue
            published += 1
        if published:
            self.published.inc(published)
        for why, n in skipped.items():
            if n:
                self.suppressed.labels(why=why).inc(n)

    def document(self, letter: DeadLetter) -> dict[str, object]:
        """What the device reads: its own message's rejection, nothing of anyone else's."""
        detail = FIXED_DETAIL.get(letter.reason, letter.detail)
        doc: dict[str, object] = {
            "reason": letter.reason.value,
            "detail": detail[:DETAIL_MAX],
            "field": letter.field,
            "topic": letter.topic,
            "received_at": letter.received_at.isoformat(),
        }
        if letter.reason not in _NO_PAYLOAD and len(letter.payload) <= self._max_payload:
            doc.update(_seq_and_ts(letter.payload))
        return doc


def _seq_and_ts(payload: bytes) -> dict[str, object]:
    """``seq`` and ``ts`` as the device sent them, when the payload is a JSON object and they
    have the contract's types (so the device can tell which message it was)."""
    try:
        parsed = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    out: dict[str, object] = {}
    seq = parsed.get("seq")
    if type(seq) is int and 0 <= seq <= _SEQ_MAX:
        out["seq"] = seq
    ts = parsed.get("ts")
    if (type(ts) is int and -(2**63) <= ts < 2**63) or (type(ts) is str and len(ts) <= 64):
        out["ts"] = ts
    return out
