"""Broker provisioning: device and account credentials, the ACL, certificates, the profile.

``taza devices add|rotate|revoke|export|tls`` (registered in :mod:`operators.cli`) write the
files the shipped broker profile (``mosquitto.conf``, production block) reads: a
``mosquitto_passwd``-compatible password file, an ACL file keyed on the authenticated user
name, and a development CA with server and client certificates. Mosquitto reads the first two
again on SIGHUP, so adding or revoking a device never restarts the broker (docs/security.md).
Unlike the rest of :mod:`operators`, this works on files, not through the service's API: the
broker is the one that enforces them.
"""

from operators.provision.errors import ProvisionError

__all__ = ["ProvisionError"]
