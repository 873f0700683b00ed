"""What provisioning refuses, with a machine-readable ``reason`` (``--json`` prints it).

Messages name the account and the file, never a secret: they end up in terminals and logs.
"""

from __future__ import annotations

from enum import StrEnum


class Why(StrEnum):
    BAD_NAME = "bad_name"
    """A user name that is neither a device id nor a ``role.name`` account."""
    UNKNOWN_DEVICE = "unknown_device"
    """A device id that is not in the fleet file."""
    EXISTS = "exists"
    """``add`` for an account that already has credentials (use ``rotate``)."""
    NOT_FOUND = "not_found"
    """``rotate``/``revoke`` for an account without credentials."""
    BAD_FILE = "bad_file"
    """The password file, fleet file, profile or a certificate cannot be read or parsed."""
    RELOAD_FAILED = "reload_failed"
    """The files were written but the broker could not be signalled to read them."""


class ProvisionError(Exception):
    """Provisioning could not do what was asked; nothing was written unless ``reason`` is
    ``reload_failed`` (then the files are in place and a reload is all that is missing)."""

    def __init__(self, reason: Why, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
