"""The ground-truth log: one JSON line per message the simulator published.

"Published" means the broker acknowledged the message (PUBACK for QoS 1): from then on the
broker is responsible for it — it is delivered to every matching subscriber, or queued in the
persistent session of one that is away. A line is written only at that moment, so the log never
claims a message the broker did not take. The one exception is marked: a message whose PUBACK
never came (the connection died and the run ended before the device could retry it) is logged
with ``"acked": false`` — the broker may or may not have it, and ``taza-sim verify`` counts it
as neither lost nor duplicated.

Keys of a line: ``topic``, ``payload`` (the exact bytes as UTF-8 text) or ``payload_b64`` (when
they are not UTF-8), ``fault`` (null, or the deliberate fault's label), and ``t`` (wall time of
the PUBACK, RFC 3339 UTC, µs), ``device_id``, ``qos``, ``retain``, ``acked``; for JSON channels
also ``seq`` and ``ts_ms`` (the message's identity, kept even when the payload is broken), and
for deliberate faults ``expect`` (``"reject"``) and ``reason`` (the contract's rejection reason).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import orjson

from simulator.stream import Outgoing


def iso_utc(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry(out: Outgoing, wall: float, *, acked: bool = True, qos: int = 1) -> dict[str, object]:
    line: dict[str, object] = {"t": iso_utc(wall), "device_id": out.device_id, "topic": out.topic}
    try:
        line["payload"] = out.payload.decode("utf-8")
    except UnicodeDecodeError:
        line["payload_b64"] = base64.b64encode(out.payload).decode("ascii")
    line["fault"] = out.fault
    line["qos"] = qos
    line["retain"] = out.retain
    line["acked"] = acked
    if out.seq is not None:
        line["seq"] = out.seq
        line["ts_ms"] = out.ts_ms
    if out.expect == "reject":
        line["expect"] = "reject"
        line["reason"] = out.reason
    if out.skew_ms:
        line["skew_ms"] = out.skew_ms
    return line


class LogWriter:
    """Appends log lines; buffered, flushed once a second by the run and at close."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh: IO[bytes] = self.path.open("wb")
        self.lines = 0

    def write(self, out: Outgoing, wall: float, *, acked: bool = True, qos: int = 1) -> None:
        self._fh.write(orjson.dumps(entry(out, wall, acked=acked, qos=qos)) + b"\n")
        self.lines += 1

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.flush()
        self._fh.close()


@dataclass(frozen=True, slots=True)
class LogEntry:
    line: int  # 1-based line number in the log
    t: datetime
    device_id: str
    topic: str
    payload: bytes
    fault: str | None
    retain: bool
    acked: bool
    seq: int | None
    ts_ms: int | None
    expect: str | None
    reason: str | None

    @property
    def channel(self) -> str:
        return self.topic.rsplit("/", 1)[-1]


class LogFormatError(ValueError):
    pass


def _device_from_topic(topic: str) -> str:
    parts = topic.split("/")
    return parts[4] if len(parts) >= 5 else ""


def read_log(path: str | Path) -> Iterator[LogEntry]:
    """Parse a ground-truth log; raise :class:`LogFormatError` naming the bad line."""
    with Path(path).open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = orjson.loads(raw)
                topic = str(obj["topic"])
                if "payload" in obj:
                    payload = str(obj["payload"]).encode("utf-8")
                else:
                    payload = base64.b64decode(obj["payload_b64"], validate=True)
                t_text = str(obj.get("t") or "")
                t = (
                    datetime.fromisoformat(t_text.replace("Z", "+00:00"))
                    if t_text
                    else datetime.now(UTC)
                )
                seq = obj.get("seq")
                ts_ms = obj.get("ts_ms")
                yield LogEntry(
                    line=number,
                    t=t,
                    device_id=str(obj.get("device_id") or _device_from_topic(topic)),
                    topic=topic,
                    payload=payload,
                    fault=obj.get("fault"),
                    retain=bool(obj.get("retain", False)),
                    acked=bool(obj.get("acked", True)),
                    seq=seq if isinstance(seq, int) else None,
                    ts_ms=ts_ms if isinstance(ts_ms, int) else None,
                    expect=obj.get("expect"),
                    reason=obj.get("reason"),
                )
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise LogFormatError(f"{path}:{number}: not a taza-sim log line ({exc})") from exc
