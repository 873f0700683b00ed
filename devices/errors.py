"""Why a message was refused.

Every rejection carries a machine-readable ``reason`` (a :class:`Reason`, used as the
``reason`` label of ``taza_messages_rejected_total`` and as the dead-letter key) and a
human ``detail`` for the firmware engineer reading the dead-letter store.

    Exception
     └── TazaDeviceError
          ├── Rejected            a message broke the device contract (decode)
          ├── Ignored             not a device message: the reserved ``alerts`` namespace, or an
          │                       empty payload that clears a retained ``state`` (decode)
          └── RegistryError       the fleet file is invalid (load time, with line and field)
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Stable rejection codes: dashboards, alerts and dead-letter tooling key on them."""

    BAD_TOPIC = "bad_topic"  # not taza/v1/{region}/{kind}/{device_id}/{channel}
    BAD_CHANNEL = "bad_channel"  # channel not of that kind (e.g. ecobox/deposit)
    TOO_LARGE = "too_large"  # payload above the configured byte limit
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"  # includes NaN/Infinity literals, which JSON does not have
    NOT_OBJECT = "not_object"
    TOO_DEEP = "too_deep"  # nesting beyond the limit
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"  # no lax coercion: "12" is not 12, true is not 1
    NOT_FINITE = "not_finite"  # a number that overflows to ±Infinity
    OUT_OF_RANGE = "out_of_range"
    BAD_VALUE = "bad_value"  # unknown enum member, bad pattern, control characters, too long
    BAD_TS = "bad_ts"  # ts neither RFC 3339 with offset nor integer epoch milliseconds
    TS_IN_FUTURE = "ts_in_future"  # more than 5 minutes ahead of the receive time
    TS_TOO_OLD = "ts_too_old"  # older than the configured maximum age
    DEVICE_MISMATCH = "device_mismatch"  # payload device_id differs from the topic's
    UNKNOWN_FIELD = "unknown_field"  # strict mode only
    BAD_STATE = "bad_state"  # state payload not exactly "online" / "offline"
    UNREGISTERED = "unregistered"  # device not in the fleet file, when configured to reject
    REFUSED_BY_DATABASE = "refused_by_database"  # decoded fine, but the database rejected the point
    INTERNAL_ERROR = "internal_error"  # set by the service: a bug in taza met this message
    RATE_LIMITED = "rate_limited"  # set by the service: the device is over its rate limit


class TazaDeviceError(Exception):
    """Base of the errors raised by :mod:`devices`."""


class Rejected(TazaDeviceError):
    """A message that breaks the contract; ``reason`` is for machines, ``detail`` for people."""

    def __init__(self, reason: Reason, detail: str, *, field: str | None = None) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.field = field


class Ignored(TazaDeviceError):
    """Not a device message, so neither stored nor counted as a rejection.

    Raised for the reserved namespaces (``taza/v1/alerts/...``, which the service itself
    publishes to crews and which the intake filter ``taza/v1/+/+/+/+`` also matches) and for an
    empty ``state`` payload, which is how an operator clears a retained presence message.
    """

    def __init__(self, topic: str, detail: str) -> None:
        super().__init__(f"ignored {topic!r}: {detail}")
        self.topic = topic
        self.detail = detail


class RegistryError(TazaDeviceError):
    """The fleet file is invalid.

    ``line`` is 1-based: the CSV line, or for JSON the line on which the device's object starts
    (the detail also names its array index).
    """

    def __init__(self, path: str, line: int | None, field: str | None, detail: str) -> None:
        where = path + (f":{line}" if line is not None else "") + (f" [{field}]" if field else "")
        super().__init__(f"{where}: {detail}")
        self.path = path
        self.line = line
        self.field = field
        self.detail = detail
