"""What travels along the message path, and the two interfaces at delivery's far end.

``Incoming`` (from the broker) → pipeline → ``Batch`` (points to store, dead letters, acks,
and the decoded ``Accepted`` messages) → delivery → ``Acknowledger`` (PUBACK) and, once
stored, a ``DeliveredSink`` (the consumer of delivered messages; none by default).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from devices import DeviceInfo, Message, Reason


@dataclass(frozen=True, slots=True)
class Incoming:
    """One MQTT delivery. ``generation`` names the connection it came on: its ack is void
    on any other (the broker redelivers it after a reconnect)."""

    mid: int
    qos: int
    generation: int
    topic: str
    payload: bytes
    received_at: datetime
    received_mono: float
    retained: bool = False


@dataclass(frozen=True, slots=True)
class Source:
    """The message a line came from, kept so a refused line can be dead-lettered whole."""

    topic: str
    payload: bytes
    received_at: datetime


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    payload: bytes
    reason: Reason
    detail: str
    received_at: datetime
    field: str | None = None

    def to_record(self) -> dict[str, object]:
        return {
            "received_at": self.received_at.isoformat(),
            "topic": self.topic,
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "reason": self.reason.value,
            "detail": self.detail,
            "field": self.field,
        }


@dataclass(frozen=True, slots=True)
class Accepted:
    """A message that passed the contract, as decoded, with its registry entry (if any):
    what a consumer of delivered messages reads, so it never decodes twice."""

    message: Message
    device: DeviceInfo | None


@dataclass(slots=True)
class Batch:
    """Lines with, per line, the index of its source; and every (mid, connection) to ack.

    ``acks`` is in arrival order: MQTT wants PUBACKs in the order PUBLISHes came.
    ``accepted[i]`` is the decoded form of ``sources[i]`` (in memory only, never spooled).
    """

    lines: list[str] = field(default_factory=list)
    origins: list[int] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    rejects: list[DeadLetter] = field(default_factory=list)
    acks: list[tuple[int, int]] = field(default_factory=list)
    accepted: list[Accepted] = field(default_factory=list)
    refused: set[int] = field(default_factory=set)  # sources the database refused
    first_received: float = 0.0  # monotonic time of the oldest message

    def __len__(self) -> int:
        return len(self.acks)

    def add_lines(self, source: Source, lines: list[str], accepted: Accepted | None = None) -> None:
        index = len(self.sources)
        self.sources.append(source)
        self.lines.extend(lines)
        self.origins.extend([index] * len(lines))
        if accepted is not None:
            self.accepted.append(accepted)


class Acknowledger(Protocol):
    """One job: acknowledge the messages of a stored batch (``(mid, generation)`` pairs, in
    arrival order), dropping those of an older connection."""

    def ack(self, acks: Sequence[tuple[int, int]]) -> None: ...


class DeliveredSink(Protocol):
    """Where a consumer of *delivered* messages attaches (fleet state, alerts): called by
    delivery once per stored batch, after it is durable and before its PUBACK, in order, with the
    batch's accepted messages. An exception here fails delivery, so the service stops."""

    async def delivered(self, messages: Sequence[Accepted]) -> None: ...
