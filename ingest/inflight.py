"""The global bound on memory for in-flight work, stated at start and checked against
``TAZA_MAX_INFLIGHT_BYTES``.

What the service holds between a PUBLISH and its PUBACK:

- QoS 1: at most ``receive_maximum`` messages unacknowledged, whichever stage they are in
  (the broker honours our MQTT 5 Receive Maximum; the intake also pauses reading when its
  queue is full, since mosquitto 2.0.11 was measured sending beyond it);
- QoS 0 (never acknowledged, so outside the window): the intake queue keeps at most
  ``QOS0_HEADROOM`` beyond the window and drops the rest (``intake_full``); past the queue
  they sit in at most five batches (the one being filled, two queued, two in delivery:
  one being stored while the fleet stage has the one before),
  each handed over at ``batch_max_lines`` lines — a batch of rejects, which has no lines, is
  handed over by age (``TAZA_BATCH_MAX_AGE_MS``) instead;
- line-protocol text: at most five batches of ``batch_max_lines`` lines.

So messages ≤ ``receive_maximum + QOS0_HEADROOM + 5 × batch_max_lines``, each holding its
payload (≤ ``max_payload_bytes``; a larger one was received whole to be rejected as
``too_large``, so keep the broker's ``message_size_limit`` near it) plus ``PER_MESSAGE_BYTES``
of objects, and each line ≤ ``LINE_BYTES``. The constants are measured with tracemalloc
(bench/ratelimit.py ``--memory``: 0.3 KB for a rejected message, 0.6–1.5 KB for an accepted
one besides its payload; a line is 150–400 bytes) and rounded up. It is a ceiling: a fleet's
messages are ~150 bytes, so the usual figure is a tenth of it.
"""

from __future__ import annotations

from dataclasses import dataclass

QOS0_HEADROOM = 10000
"""Intake-queue room beyond the Receive Maximum, which QoS 0 messages escape."""
BATCHES_IN_FLIGHT = 5
PER_MESSAGE_BYTES = 2048
LINE_BYTES = 1024


@dataclass(frozen=True, slots=True)
class InflightBound:
    messages: int
    bytes_per_message: int
    lines: int

    @property
    def bytes(self) -> int:
        return self.messages * self.bytes_per_message + self.lines * LINE_BYTES

    def describe(self) -> str:
        return (
            f"{self.bytes / 2**20:.0f} MiB ({self.messages} messages × "
            f"{self.bytes_per_message} bytes + {self.lines} lines × {LINE_BYTES} bytes)"
        )


def inflight_bound(
    receive_maximum: int, max_payload_bytes: int, batch_max_lines: int
) -> InflightBound:
    lines = BATCHES_IN_FLIGHT * batch_max_lines
    return InflightBound(
        messages=receive_maximum + QOS0_HEADROOM + lines,
        bytes_per_message=max_payload_bytes + PER_MESSAGE_BYTES,
        lines=lines,
    )
