"""Mosquitto password files: ``user:$7$ITERATIONS$SALT$HASH`` lines, as ``mosquitto_passwd``
writes them (Mosquitto 2.0's default, ``-H sha512-pbkdf2``).

``$7$`` is PBKDF2-HMAC-SHA512 over the password with a 12-byte random salt, salt and 64-byte
digest in standard base64. The standard library's ``hashlib.pbkdf2_hmac`` is the same
OpenSSL primitive the broker calls, so no extra dependency; a test has a real mosquitto
accept a password hashed here. 101 iterations, like mosquitto_passwd: the secrets are 192
random bits (nothing to guess, so stretching buys nothing), and every connection pays the
hash — 10,000 devices reconnecting after a broker restart must not cost minutes of CPU.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

ITERATIONS = 101
SALT_BYTES = 12


def new_secret() -> str:
    """A device secret: 192 random bits, URL-safe (32 characters, no ``:`` or spaces)."""
    return secrets.token_urlsafe(24)


def hash_password(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """The ``$7$`` string for ``password`` (a fresh random salt unless one is given)."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def verify(password: str, hashed: str) -> bool:
    """Whether ``password`` matches a ``$7$`` string (what the broker checks at CONNECT)."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7" or not parts[2].isdigit():
        return False
    try:
        salt, digest = base64.b64decode(parts[3]), base64.b64decode(parts[4])
    except ValueError:
        return False
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]))
    return hmac.compare_digest(got, digest)


def parse(text: str, name: str = "passwd") -> dict[str, str]:
    """{user: hash} in file order; raises ValueError naming the line (never its hash)."""
    entries: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user or not hashed.startswith("$"):
            raise ValueError(f"{name}:{n}: not a `user:$7$...` line")
        if user in entries:
            raise ValueError(f"{name}:{n}: user {user!r} appears twice")
        entries[user] = hashed
    return entries


def dumps(entries: dict[str, str]) -> str:
    return "".join(f"{user}:{hashed}\n" for user, hashed in entries.items())
