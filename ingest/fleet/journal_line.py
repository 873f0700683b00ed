"""One delivered batch as a line of the fleet journal (:mod:`ingest.fleet.persist`):
``{"n": now_ms, "r": [[topic, payload, received_at µs], ...]}``, each message as it arrived.

Built for every batch before its PUBACK, so it is compiled (setup.py): as Python, the loop over
the batch cost ≈ 3,500 instructions a message, more than encoding the line.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

import orjson

from ingest.batch import Source

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
US: Final = timedelta(microseconds=1)


def journal_line(now_ms: int, sources: list[Source]) -> bytes:
    """The batch's line, ``\\n`` included (encoded on the event loop: orjson holds the GIL
    anyway)."""
    rows: list[tuple[str, str, int]] = []
    at: datetime | None = None
    at_us = 0
    for s in sources:
        received = s.received_at
        if received is not at:  # one receive time per intake buffer: shared
            at = received
            at_us = (received - EPOCH) // US
        rows.append((s.topic, s.payload.decode(), at_us))
    return orjson.dumps({"n": now_ms, "r": rows}) + b"\n"
