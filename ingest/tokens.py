"""Operator API tokens at rest: the tokens file shared by ``taza tokens`` and taza-ingest.

A token is ``taza_<id>_<secret>``: ``id`` (8 hex digits) names the entry and is not secret;
``secret`` is 32 random bytes (``secrets.token_urlsafe``). The file keeps only the SHA-256 of
the whole token. A fast hash is enough here because the token is 256 bits of randomness, not
a password a person chose: guessing it from its hash is as hard as guessing it; a slow KDF
(bcrypt, argon2) would cost every API request tens of milliseconds for no gain. The presented
token's hash is compared with the entry's in constant time (``hmac.compare_digest``).

The file is JSON, written whole to a temporary file and renamed over the old one (mode 0600),
so a reader (the service reloads it when it changes) never sees half of it. No module here
imports the web framework: the CLI uses it too.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import orjson

from devices.topics import REGION_RE
from ingest.durable import write_atomically

FORMAT_VERSION = 1
_TOKEN_RE = re.compile(r"^taza_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Role(StrEnum):
    operator = "operator"
    """Everything the API serves."""
    crew = "crew"
    """Its region's alerts, fill levels and collection plan; nothing else."""


class TokenFileError(Exception):
    """The tokens file cannot be read or written (missing, unreadable, malformed)."""


@dataclass(frozen=True, slots=True)
class TokenEntry:
    id: str
    name: str
    role: Role
    region: str | None
    sha256: str
    created: str

    def public(self) -> dict[str, str | None]:
        """What ``taza tokens list`` shows: never the hash."""
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role.value,
            "region": self.region,
            "created": self.created,
        }


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def token_id(token: str) -> str | None:
    """The entry id of a well-formed token, or None (then nothing is looked up)."""
    m = _TOKEN_RE.match(token)
    return m.group(1) if m else None


def new_token() -> tuple[str, str]:
    """(id, token)."""
    tid = secrets.token_hex(4)
    return tid, f"taza_{tid}_{secrets.token_urlsafe(32)}"


def matches(entry: TokenEntry, token: str) -> bool:
    return hmac.compare_digest(entry.sha256, digest(token))


class TokenFile:
    """The entries of one tokens file, by id."""

    def __init__(self, entries: list[TokenEntry] | None = None) -> None:
        self.entries: dict[str, TokenEntry] = {e.id: e for e in entries or []}

    @classmethod
    def load(cls, path: Path) -> TokenFile:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise TokenFileError(f"{path}: {exc.strerror or exc}") from None
        try:
            doc = orjson.loads(raw)
            if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
                raise ValueError(f"expected a taza tokens file (version {FORMAT_VERSION})")
            entries = [_entry(e) for e in doc.get("tokens", [])]
        except (orjson.JSONDecodeError, ValueError, TypeError, KeyError) as exc:
            raise TokenFileError(f"{path}: not a valid tokens file ({exc})") from None
        return cls(entries)

    @classmethod
    def load_or_empty(cls, path: Path) -> TokenFile:
        return cls.load(path) if path.exists() else cls()

    def save(self, path: Path) -> None:
        doc = {"version": FORMAT_VERSION, "tokens": [_doc(e) for e in self.entries.values()]}
        data = orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, data, mode=0o600)

    @classmethod
    @contextlib.contextmanager
    def editing(cls, path: Path, *, create: bool) -> Iterator[TokenFile]:
        """Load, change, save — under an exclusive lock beside the file, so that two
        ``taza tokens`` at once cannot lose each other's change (a lost revocation would bring
        a revoked token back). Saved only if the block ends without an exception."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            tokens = cls.load_or_empty(path) if create else cls.load(path)
            yield tokens
            tokens.save(path)

    def add(self, name: str, role: Role, region: str | None) -> tuple[TokenEntry, str]:
        """A new entry and its token (the only time the token exists in clear)."""
        if not _NAME_RE.match(name):
            raise ValueError("a token name is 1-64 letters, digits, '.', '_' or '-'")
        if any(e.name == name for e in self.entries.values()):
            raise ValueError(f"a token named {name!r} exists (revoke it first)")
        if role is Role.crew and region is None:
            raise ValueError("a crew token needs --region")
        if role is Role.operator and region is not None:
            raise ValueError("an operator token sees every region: no --region")
        if region is not None and not REGION_RE.fullmatch(region):
            raise ValueError(f"not a region name: {region!r}")
        tid, token = new_token()
        while tid in self.entries:
            tid, token = new_token()
        created = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        entry = TokenEntry(tid, name, role, region, digest(token), created)
        self.entries[tid] = entry
        return entry, token

    def revoke(self, name_or_id: str) -> TokenEntry:
        for e in self.entries.values():
            if name_or_id in (e.name, e.id):
                del self.entries[e.id]
                return e
        raise KeyError(name_or_id)

    def find(self, token: str) -> TokenEntry | None:
        """The entry this token belongs to, or None (unknown, malformed or revoked)."""
        tid = token_id(token)
        entry = self.entries.get(tid) if tid is not None else None
        if entry is None:
            matches(_DUMMY, token)  # the same work either way: no timing hint of a known id
            return None
        return entry if matches(entry, token) else None


_DUMMY = TokenEntry("00000000", "-", Role.crew, "-", "0" * 64, "")


def _entry(e: dict[str, object]) -> TokenEntry:
    sha = str(e["sha256"])
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ValueError(f"token {e.get('name')!r}: sha256 is not a SHA-256 hex digest")
    region = e.get("region")
    return TokenEntry(
        id=str(e["id"]),
        name=str(e["name"]),
        role=Role(str(e["role"])),
        region=None if region is None else str(region),
        sha256=sha,
        created=str(e.get("created", "")),
    )


def _doc(e: TokenEntry) -> dict[str, object]:
    d = asdict(e)
    d["role"] = e.role.value
    return d
