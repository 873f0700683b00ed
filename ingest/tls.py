"""TLS client contexts: the broker (mqtts://) and InfluxDB (https://), built in one place.

Always verifying: the server's certificate against ``ca_file`` (or the system's trust store)
and its name against the host. ``cert_file``/``key_file`` add a client certificate (mutual TLS,
e.g. mosquitto's ``use_identity_as_username``).
"""

from __future__ import annotations

import ssl
from pathlib import Path


def client_context(
    ca_file: Path | str | None = None,
    cert_file: Path | str | None = None,
    key_file: Path | str | None = None,
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
    if cert_file is not None:
        context.load_cert_chain(str(cert_file), None if key_file is None else str(key_file))
    return context
