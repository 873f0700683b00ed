"""The device contract: topics, payload validation, line-protocol encoding, the fleet registry.

Everything from the outside world enters taza through :func:`decode`; everything that goes to
the database leaves through :func:`encode`. The firmware-facing description of the same rules
is docs/protocol.md.
"""

from devices.broker import BrokerURL, BrokerURLError
from devices.decode import decode
from devices.errors import Ignored, Reason, RegistryError, Rejected, TazaDeviceError
from devices.exitcodes import ExitCode
from devices.limits import DEFAULT_LIMITS, Limits
from devices.lineprotocol import encode, timestamp_ns
from devices.message import (
    CHANNELS,
    Body,
    Channel,
    Deposit,
    Fill,
    Item,
    Kind,
    Message,
    Presence,
    Status,
    Topic,
)
from devices.payload import to_payload
from devices.registry import DeviceInfo, Registry
from devices.schema import FAULT_CODES, FRACTIONS, MATERIALS, MAX_ITEMS, MODES
from devices.topics import INTAKE_FILTER, format_topic, parse_topic

__all__ = [
    "CHANNELS",
    "DEFAULT_LIMITS",
    "FAULT_CODES",
    "FRACTIONS",
    "INTAKE_FILTER",
    "MATERIALS",
    "MAX_ITEMS",
    "MODES",
    "Body",
    "BrokerURL",
    "BrokerURLError",
    "Channel",
    "Deposit",
    "DeviceInfo",
    "ExitCode",
    "Fill",
    "Ignored",
    "Item",
    "Kind",
    "Limits",
    "Message",
    "Presence",
    "Reason",
    "Registry",
    "RegistryError",
    "Rejected",
    "Status",
    "TazaDeviceError",
    "Topic",
    "decode",
    "encode",
    "format_topic",
    "parse_topic",
    "timestamp_ns",
    "to_payload",
]
