"""Who connects to the broker, told apart by the user name alone.

A device's user name is its device id (``[A-Za-z0-9][A-Za-z0-9_-]{0,63}``, never a dot); every
other account is ``role.name`` with a dot, so no account can ever be mistaken for a device
(and the ACL's per-device pattern, which applies to every user, is denied to them):

- ``ingest.NAME``: taza-ingest — reads telemetry, writes alerts, feedback, dead-letter copies;
- ``crew.REGION`` or ``crew.REGION.NAME``: reads the alerts of REGION only;
- ``operator.NAME``: reads everything, writes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from devices.topics import DEVICE_ID_RE, REGION_RE, RESERVED_REGIONS
from operators.provision.errors import ProvisionError, Why

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


class Role(StrEnum):
    DEVICE = "device"
    INGEST = "ingest"
    CREW = "crew"
    OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class Account:
    username: str
    role: Role
    region: str | None = None
    """The crew's region; None for other roles."""


def parse_username(username: str) -> Account:
    """The account a user name stands for; :class:`ProvisionError` (``bad_name``) otherwise."""
    if DEVICE_ID_RE.fullmatch(username):
        return Account(username, Role.DEVICE)
    role, _, rest = username.partition(".")
    parts = rest.split(".")
    if role in (Role.INGEST, Role.OPERATOR) and len(parts) == 1 and _NAME.fullmatch(parts[0]):
        return Account(username, Role(role))
    if (
        role == Role.CREW
        and 1 <= len(parts) <= 2
        and REGION_RE.fullmatch(parts[0])
        and parts[0] not in RESERVED_REGIONS
        and (len(parts) == 1 or _NAME.fullmatch(parts[1]))
    ):
        return Account(username, Role.CREW, region=parts[0])
    raise ProvisionError(
        Why.BAD_NAME,
        f"{username[:80]!r} is neither a device id nor an account "
        "(ingest.NAME, crew.REGION[.NAME], operator.NAME; NAME in [a-z0-9_-])",
    )
