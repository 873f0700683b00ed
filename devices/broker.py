"""The MQTT broker URL, parsed by one set of rules for the service and the simulator.

``mqtt://[user[:password]@]host[:port]`` (port 1883) or ``mqtts://`` (TLS, port 8883); an
IPv6 address goes in brackets (``mqtt://[::1]:1883``); user and password are percent-decoded
(``p%40ss`` is ``p@ss``). A bare ``host[:port]`` means ``mqtt://``. Anything else (another
scheme, a path, a query, a port outside 1..65535) is refused with a message naming the part
to fix. Standard library only, like the rest of the contract package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

SCHEMES = {"mqtt": (False, 1883), "mqtts": (True, 8883)}
"""Scheme → (TLS, default port)."""


class BrokerURLError(ValueError):
    """The broker URL cannot be used; the message says which part is wrong."""


@dataclass(frozen=True, slots=True)
class BrokerURL:
    """Where the broker is and how to log in; ``str()`` never shows the password."""

    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> BrokerURL:
        """Parse ``url``; raise :class:`BrokerURLError` (a ``ValueError``) when it is unusable."""
        text = url.strip()
        if not text:
            raise BrokerURLError("empty broker URL: expected mqtt://host:port or mqtts://host")
        if "://" not in text:
            text = f"mqtt://{text}"
        try:
            parts = urlsplit(text)
        except ValueError as exc:  # an unclosed bracket
            raise BrokerURLError(f"broker URL {url!r}: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise BrokerURLError(
                f"broker URL {url!r}: scheme must be mqtt:// or mqtts://, got {parts.scheme}://"
            )
        tls, default_port = SCHEMES[scheme]
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise BrokerURLError(f"broker URL {url!r}: takes no path, query or fragment")
        where = parts.netloc.rpartition("@")[2]
        if where.count(":") > 1 and not where.startswith("["):
            raise BrokerURLError(f"broker URL {url!r}: put an IPv6 address in brackets, [::1]:1883")
        host = parts.hostname
        if not host:
            raise BrokerURLError(f"broker URL {url!r}: no host")
        if parts.password is not None and not parts.username:
            raise BrokerURLError(f"broker URL {url!r}: a password without a user name")
        try:
            port = parts.port
        except ValueError:
            port_text = parts.netloc.rpartition(":")[2]
            raise BrokerURLError(
                f"broker URL {url!r}: port {port_text!r} is not a number in 1..65535"
            ) from None
        if port == 0:
            raise BrokerURLError(f"broker URL {url!r}: port 0 is not a port to connect to")
        return cls(
            host=host,
            port=port or default_port,
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )

    @property
    def scheme(self) -> str:
        return "mqtts" if self.tls else "mqtt"

    def redacted(self) -> str:
        """The URL for logs and summaries: the user is shown, the password is not."""
        user = f"{self.username}:***@" if self.password else f"{self.username}@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{user if self.username else ''}{host}:{self.port}"

    def __str__(self) -> str:
        return self.redacted()
