"""taza-ingest: MQTT telemetry → validated → InfluxDB, acknowledged only once stored."""

from ingest.config import Settings, load_settings
from ingest.errors import (
    BrokerRefused,
    ConfigError,
    IngestError,
    WriteError,
    WriteRefused,
    WriteUnavailable,
)

__all__ = [
    "BrokerRefused",
    "ConfigError",
    "IngestError",
    "Settings",
    "WriteError",
    "WriteRefused",
    "WriteUnavailable",
    "load_settings",
]
