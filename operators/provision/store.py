"""The broker directory (``--dir``): ``passwd``, ``acl`` and ``tls/``, changed atomically.

Every change rewrites both files through a temporary file and ``os.replace`` under an
exclusive lock, so a broker reloading at any moment reads either the old pair or the new one,
and two operators provisioning at once cannot lose each other's accounts. The password file
keeps its mode and group (the broker's user must read it: ``root:mosquitto 0640``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from operators.provision import acl, passwd
from operators.provision.accounts import Account, parse_username
from operators.provision.errors import ProvisionError, Why

PASSWD = "passwd"
ACL = "acl"
CONF = "mosquitto.conf"
TLS = "tls"


@dataclass
class BrokerDir:
    path: Path
    entries: dict[str, str] = field(default_factory=dict)
    """{user name: $7$ hash}, in file order."""

    @property
    def passwd_path(self) -> Path:
        return self.path / PASSWD

    @property
    def acl_path(self) -> Path:
        return self.path / ACL

    def accounts(self) -> list[Account]:
        return [parse_username(u) for u in self.entries]

    def save(self) -> None:
        """Write the password file and the ACL generated from it (ACL first: a new account's
        rules are in place before its password is)."""
        accounts = self.accounts()
        write_text(self.acl_path, acl.render(accounts), default_mode=0o644)
        write_text(self.passwd_path, passwd.dumps(self.entries), default_mode=0o640)


@contextlib.contextmanager
def opened(path: Path, *, create: bool = True) -> Iterator[BrokerDir]:
    """The directory's accounts under an exclusive lock (created if missing and ``create``)."""
    path = Path(path)
    if not path.is_dir():
        if not create:
            raise ProvisionError(Why.BAD_FILE, f"{path}: no such broker directory")
        path.mkdir(parents=True, mode=0o750)
    with (path / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pw = path / PASSWD
        try:
            text = pw.read_text(encoding="utf-8") if pw.exists() else ""
            entries = passwd.parse(text, str(pw))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ProvisionError(Why.BAD_FILE, f"cannot read {pw}: {exc}") from None
        for user in entries:
            parse_username(user)
        yield BrokerDir(path, entries)


def write_text(path: Path, text: str, *, default_mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        st = path.stat()
        mode, owner = st.st_mode & 0o777, (st.st_uid, st.st_gid)
    except FileNotFoundError:
        mode, owner = default_mode, None
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if owner is not None and os.geteuid() == 0:
            os.chown(tmp, *owner)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def reload_broker(pid_file: Path) -> int:
    """SIGHUP to the broker whose PID ``pid_file`` holds (mosquitto's ``pid_file``)."""
    try:
        pid = int(Path(pid_file).read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        raise ProvisionError(
            Why.RELOAD_FAILED,
            f"files written, but the broker was not reloaded ({pid_file}: {exc}); "
            "run `systemctl reload mosquitto` (or send it SIGHUP)",
        ) from None
    return pid
