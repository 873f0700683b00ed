"""What travels along the message path, and the two interfaces at delivery's far end.

``Incoming`` (from the broker) → pipeline → ``Batch`` (points to store, dead letters, acks,
and the decoded ``Accepted`` messages) → delivery → ``Acknowledger`` (PUBACK) and, once
stored, a ``DeliveredSink`` (the consumer of delivered messages; none by default).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, Protocol, overload

from devices import DeviceInfo, Message, Reason
from devices.construct import fast_constructor


class Incoming(NamedTuple):
    """One MQTT delivery. ``generation`` names the connection it came on: its ack is void
    on any other (the broker redelivers it after a reconnect).

    A ``NamedTuple``, like ``Source``: built once per message, and ``tuple.__new__`` builds
    one in a quarter of the time a frozen dataclass's slots take (``new_tuple``)."""

    mid: int
    qos: int
    generation: int
    topic: str
    payload: bytes
    received_at: datetime
    received_mono: float
    retained: bool = False


class Source(NamedTuple):
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
    """A message that passed the contract, as decoded, with its registry entry (if any) and
    what it came as: what a consumer of delivered messages reads, so it never decodes twice
    and can keep the message as received (the fleet journal keeps ``source``)."""

    message: Message
    device: DeviceInfo | None
    source: Source


# Built per message: a frozen dataclass's own __init__ costs ~0.4 µs more (devices.construct).
_new_accepted = fast_constructor(Accepted)
new_tuple = tuple.__new__
"""``new_tuple(Incoming, (...))``: a ``NamedTuple`` without its Python-level ``__new__``
(0.14 against 0.65 µs for the frozen dataclass of eight slots it replaced)."""


@dataclass(slots=True)
class Batch:
    """Lines with, per line, the index of its source; and every (mid, connection) to ack.

    ``acks`` is in arrival order: MQTT wants PUBACKs in the order PUBLISHes came.
    ``messages[i]`` (with ``devices[i]``, its registry entry) is the decoded form of
    ``sources[i]``, in memory only, never spooled; :meth:`delivered` pairs them up only for a
    consumer of delivered messages, so without one no per-message object is built for it.
    """

    lines: list[str] = field(default_factory=list)
    origins: list[int] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    rejects: list[DeadLetter] = field(default_factory=list)
    acks: list[tuple[int, int]] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    devices: list[DeviceInfo | None] = field(default_factory=list)
    refused: set[int] = field(default_factory=set)  # sources the database refused
    first_received: float = 0.0  # monotonic time of the oldest message

    def __len__(self) -> int:
        return len(self.acks)

    def add_lines(self, source: Source, lines: list[str]) -> None:
        index = len(self.sources)
        self.sources.append(source)
        self.lines.extend(lines)
        self.origins.extend([index] * len(lines))

    def add_accepted(
        self, msg: Incoming, lines: list[str], message: Message, device: DeviceInfo | None
    ) -> None:
        """A decoded message and its lines (``message`` must follow every source added).
        ``Pipeline.process`` does the same inline (tests/test_ingest_units.py compares them)."""
        self.add_lines(new_tuple(Source, (msg.topic, msg.payload, msg.received_at)), lines)
        self.messages.append(message)
        self.devices.append(device)

    def delivered(self) -> Delivered:
        """The accepted messages the database stored (not ``refused``), in batch order."""
        if not self.refused:
            return Delivered(self.messages, self.devices, self.sources)
        skip = self.refused
        keep = [i for i in range(len(self.messages)) if i not in skip]
        return Delivered(
            [self.messages[i] for i in keep],
            [self.devices[i] for i in keep],
            [self.sources[i] for i in keep],
        )


class Delivered(Sequence[Accepted]):
    """A stored batch's accepted messages as three parallel columns. A ``Sequence`` of
    ``Accepted`` for any sink, built per item only when one is read; the fleet stage reads the
    columns (an ``Accepted`` per message was ≈ 0.5 µs of its cost, docs/performance.md)."""

    __slots__ = ("devices", "messages", "sources")

    def __init__(
        self, messages: list[Message], devices: list[DeviceInfo | None], sources: list[Source]
    ) -> None:
        if not len(messages) == len(devices) == len(sources):
            raise ValueError("Delivered: columns of different lengths")
        self.messages = messages
        self.devices = devices
        self.sources = sources

    @classmethod
    def of(cls, accepted: Sequence[Accepted]) -> Delivered:
        """The columns of any sequence of ``Accepted`` (itself if it already is one)."""
        if isinstance(accepted, Delivered):
            return accepted
        return cls(
            [a.message for a in accepted],
            [a.device for a in accepted],
            [a.source for a in accepted],
        )

    def __len__(self) -> int:
        return len(self.messages)

    @overload
    def __getitem__(self, index: int) -> Accepted: ...
    @overload
    def __getitem__(self, index: slice) -> Delivered: ...
    def __getitem__(self, index: int | slice) -> Accepted | Delivered:
        if isinstance(index, slice):
            return Delivered(self.messages[index], self.devices[index], self.sources[index])
        return _new_accepted(self.messages[index], self.devices[index], self.sources[index])

    def __iter__(self) -> Iterator[Accepted]:
        make = _new_accepted
        for m, d, s in zip(self.messages, self.devices, self.sources, strict=True):
            yield make(m, d, s)


class Acknowledger(Protocol):
    """One job: acknowledge the messages of a stored batch (``(mid, generation)`` pairs, in
    arrival order), dropping those of an older connection."""

    def ack(self, acks: Sequence[tuple[int, int]]) -> None: ...


class DeliveredSink(Protocol):
    """Where a consumer of *delivered* messages attaches (fleet state, alerts): called by
    delivery once per stored batch, after it is durable and before its PUBACK, in order, with the
    batch's accepted messages. An exception here fails delivery, so the service stops."""

    async def delivered(self, messages: Sequence[Accepted]) -> None: ...
