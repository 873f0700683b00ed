"""What travels from the pipeline to delivery: points to store and messages to acknowledge."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime

from devices import Reason


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


@dataclass(slots=True)
class Batch:
    """Lines with, per line, the index of its source; and every (mid, connection) to ack.

    ``acks`` is in arrival order: MQTT wants PUBACKs in the order PUBLISHes came.
    """

    lines: list[str] = field(default_factory=list)
    origins: list[int] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    rejects: list[DeadLetter] = field(default_factory=list)
    acks: list[tuple[int, int]] = field(default_factory=list)
    first_received: float = 0.0  # monotonic time of the oldest message

    def __len__(self) -> int:
        return len(self.acks)

    def add_lines(self, source: Source, lines: list[str]) -> None:
        index = len(self.sources)
        self.sources.append(source)
        self.lines.extend(lines)
        self.origins.extend([index] * len(lines))
