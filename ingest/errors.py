"""Errors of the ingest service.

    Exception
     └── IngestError
          ├── ConfigError          invalid settings: reported at start, exit code 2
          ├── BrokerRefused        broker refused credentials / client id: retrying won't help
          ├── StageFailed          a stage's task died of an unexpected error: exit 1, restart
          └── WriteError           one write attempt to the database failed
               ├── WriteRefused      4xx for the data: split, dead-letter; never retried as is
               └── WriteUnavailable  timeout, connection, 429, 5xx, auth: retry, then spool

The delivery loop decides from the class alone what to do with a batch, as Telegraf's
influxdb_v2 output does from the status code.
"""

from __future__ import annotations


class IngestError(Exception):
    """Base of the errors raised by :mod:`ingest`."""


class ConfigError(IngestError):
    """Settings that cannot work; the message names the setting and what is wrong."""


class BrokerRefused(IngestError):
    """CONNACK with a permanent refusal (bad credentials, not authorised, bad client id)."""


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

    def __init__(self, message: str, *, status: int | None = None, too_large: bool = False) -> None:
        super().__init__(message, status=status)
        self.too_large = too_large


class WriteUnavailable(WriteError):
    """The database did not take the data this time; the same write may succeed later."""
