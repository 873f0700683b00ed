"""Database writers behind one interface; chosen by ``TAZA_INFLUX_API``."""

from __future__ import annotations

from ingest.config import Settings
from ingest.writers.base import Writer, classify_exception, classify_status, retry_after_s
from ingest.writers.v1 import V1Writer
from ingest.writers.v2 import V2Writer

__all__ = [
    "V1Writer",
    "V2Writer",
    "Writer",
    "classify_exception",
    "classify_status",
    "make_writer",
    "retry_after_s",
]


def make_writer(settings: Settings) -> Writer:
    if settings.influx_api == "v1":
        return V1Writer(settings)
    return V2Writer(settings)
