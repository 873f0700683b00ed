"""Errors of the ingest service.

    Exception
     └── IngestError
          ├── ConfigError          invalid settings: reported at start, exit code 2
          ├── BrokerRefused        broker refused credentials / client id: retrying won't help
          ├── StageFailed          a stage's task died of an unexpected error: exit 1, restart
          ├── StoreUnwritable      the spool or dead-letter store cannot write (disk full, I/O
          │                        error): hold acknowledgements, retry until it can
          └── WriteError           one write attempt to the database failed
               ├── WriteRefused      4xx for the data: split, dead-letter; never retried as is
               └── WriteUnavailable  timeout, connection, 429, 5xx, auth: retry, then spool

The delivery loop decides from the class alone what to do with a batch, as Telegraf's
influxdb_v2 output does from the status code. Foreign errors (aiohttp, influxdb-client,
OSError) are mapped in ``ingest/writers/base.py`` and in the stores, nowhere else.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass


class IngestError(Exception):
    """Base of the errors raised by :mod:`ingest`."""


class ConfigError(IngestError):
    """Settings that cannot work; the message names the setting and what is wrong."""


class BrokerRefused(IngestError):
    """CONNACK with a permanent refusal (bad credentials, not authorised, bad client id)."""


class StoreUnwritable(IngestError):
    """A durable store could not record something; nothing of it was kept.

    ``store`` is ``spool`` or ``deadletter``; ``reason`` a machine-readable code (the errno
    name, e.g. ``ENOSPC``)."""

    def __init__(self, store: str, exc: OSError) -> None:
        self.store = store
        self.reason = errno.errorcode.get(exc.errno or 0, "EIO")
        self.message = f"{store}: {self.reason} {exc.strerror or exc}"
        super().__init__(self.message)


@dataclass(frozen=True, slots=True)
class LimitRefusal:
    """The database refused points because a configured limit was reached: ``setting`` is
    its name in influxdb.conf; measurement/tag/value name the first refused series key."""

    setting: str
    measurement: str | None = None
    tag: str | None = None
    value: str | None = None


class StageFailed(IngestError):
    """A stage ended unexpectedly; the service stopped so that a supervisor restarts it."""

    def __init__(self, stage: str, why: str) -> None:
        super().__init__(f"stage {stage} failed: {why}")
        self.stage = stage
        self.why = why


class WriteError(IngestError):
    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class WriteRefused(WriteError):
    """The database will not take this data as it is (bad line, type conflict, too large)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        too_large: bool = False,
        dropped: int | None = None,
        limit: LimitRefusal | None = None,
    ) -> None:
        super().__init__(message, status=status)
        self.too_large = too_large
        self.dropped = dropped
        self.limit = limit


class WriteUnavailable(WriteError):
    """The database did not take the data this time; the same write may succeed later,
    not before ``retry_after`` seconds if the database said so."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after
