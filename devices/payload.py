"""A :class:`~devices.Message` -> the MQTT payload a conforming device would publish.

The inverse of :func:`devices.decode` (``decode(str(m.topic), to_payload(m), ...) == m`` for
any valid message): the simulator publishes with it and the tests round-trip through it, so
the two sides of the contract cannot drift apart. ``ts`` is written as epoch milliseconds.
"""

from __future__ import annotations

import orjson

from devices.message import Deposit, Fill, Message, Presence, Status


def to_payload(message: Message) -> bytes:
    """Canonical payload bytes: compact JSON (absent optional fields omitted), or ``state`` text."""
    body = message.body
    if isinstance(body, Presence):
        return b"online" if body.online else b"offline"
    doc: dict[str, object] = {"ts": message.ts_ms, "seq": message.seq}
    if isinstance(body, Fill | Status):
        for name in body.__slots__:
            value = getattr(body, name)
            if value is None or (name in ("faults", "bins") and not value):
                continue
            if name == "bins":
                value = dict(value)
            doc[name] = value
    elif isinstance(body, Deposit):
        doc["txn_id"] = body.txn_id
        doc["items"] = [
            {"material": i.material, "count": i.count}
            | ({} if i.volume_ml is None else {"volume_ml": i.volume_ml})
            for i in body.items
        ]
        doc["rejected"] = body.rejected
        doc["refund_minor"] = body.refund_minor
        doc["currency"] = body.currency
    return orjson.dumps(doc)
