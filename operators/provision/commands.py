"""``taza devices add|rotate|revoke|export|tls``: the click commands (registered in
:mod:`operators.cli` under the ``devices`` group).

Secrets are printed once, on stdout, by ``add`` and ``rotate`` (``--json`` for scripts) and
stored only as hashes; every other message names accounts and files only. Exit statuses:
0 done, 2 a bad name or a refused request (nothing written), 1 files unreadable or the
reload failed (files written).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from devices import ExitCode, Registry, RegistryError
from operators.provision import passwd, profile, store, tls
from operators.provision.accounts import Account, Role, parse_username
from operators.provision.errors import ProvisionError, Why

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_DIR = profile.SHIPPED_DIR
_USAGE = {Why.BAD_NAME, Why.UNKNOWN_DEVICE, Why.EXISTS, Why.NOT_FOUND}


def _dir_opts(f: F) -> F:
    f = click.option("--json", "as_json", is_flag=True, help="print the result as JSON")(f)
    f = click.option(
        "--dir",
        "broker_dir",
        envvar="TAZA_BROKER_DIR",
        type=click.Path(file_okay=False, path_type=Path),
        default=DEFAULT_DIR,
        show_default=True,
        help="broker directory: passwd, acl, tls/ (env TAZA_BROKER_DIR)",
    )(f)
    return f


def _opts(f: F) -> F:
    """``--dir``, ``--json`` and ``--pid-file`` (the commands the broker reloads for)."""
    f = click.option(
        "--pid-file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="send SIGHUP to the broker whose PID this file holds (else reload it yourself)",
    )(f)
    return _dir_opts(f)


def _fail(exc: ProvisionError, as_json: bool) -> NoReturn:
    if as_json:
        click.echo(json.dumps({"error": exc.reason.value, "detail": exc.message}))
    click.echo(f"taza: {exc.message}", err=True)
    sys.exit(ExitCode.USAGE if exc.reason in _USAGE else ExitCode.FAILURE)


def _finish(
    result: dict[str, Any], secrets: list[tuple[Account, str]], pid_file: Path | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Print the result (the secrets once), then reload the broker if asked; a failed reload
    still prints the secrets: the files are written and the accounts exist."""
    result["accounts"] = [
        {"username": a.username, "role": a.role.value, "password": s} for a, s in secrets
    ]
    error: ProvisionError | None = None
    result["reloaded_pid"] = None
    if pid_file is not None:
        try:
            result["reloaded_pid"] = store.reload_broker(pid_file)
        except ProvisionError as exc:
            error = exc
            result.update(error=exc.reason.value, detail=exc.message)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        for a, s in secrets:
            click.echo(f"{a.username}\t{s}")
        for key in ("added", "rotated", "revoked", "skipped"):
            if result.get(key):
                click.echo(f"{key}: {len(result[key])}", err=True)
        if secrets:
            click.echo("secrets are shown only now: taza stores their hashes only", err=True)
    if error is not None:
        click.echo(f"taza: {error.message}", err=True)
        sys.exit(ExitCode.FAILURE)
    if pid_file is None and any(result.get(k) for k in ("added", "rotated", "revoked")):
        click.echo("reload the broker to apply: systemctl reload mosquitto", err=True)


def _fleet(path: Path | None) -> Registry:
    if path is None:
        raise ProvisionError(Why.BAD_FILE, "devices need the fleet file: --fleet or TAZA_REGISTRY")
    try:
        return Registry.load(path)
    except RegistryError as exc:
        raise ProvisionError(Why.BAD_FILE, str(exc)) from None


def _wanted(names: Iterable[str]) -> list[Account]:
    seen: dict[str, Account] = {}
    for n in names:
        seen.setdefault(n, parse_username(n))
    return list(seen.values())


@click.command("add")
@click.argument("device_ids", nargs=-1)
@click.option(
    "--fleet",
    envvar="TAZA_REGISTRY",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="fleet file (CSV or JSON); without DEVICE_IDS, every device in it not yet added",
)
@click.option(
    "--account",
    "accounts",
    multiple=True,
    help="also an account: ingest.NAME, crew.REGION[.NAME] or operator.NAME (repeatable)",
)
@_opts
def add(
    device_ids: tuple[str, ...],
    fleet: Path | None,
    accounts: tuple[str, ...],
    broker_dir: Path,
    pid_file: Path | None,
    as_json: bool,
) -> None:
    """Credentials for devices of the fleet file and for accounts; prints each secret once."""
    try:
        wanted = _wanted(accounts)
        devices_named = [a.username for a in wanted if a.role is Role.DEVICE]
        if devices_named:
            raise ProvisionError(
                Why.BAD_NAME,
                f"--account {devices_named[0]!r}: accounts are ingest.NAME, crew.REGION[.NAME] "
                "or operator.NAME; devices come from the fleet file (DEVICE_IDS)",
            )
        if device_ids or fleet is not None or not accounts:
            registry = _fleet(fleet)
            unknown = [d for d in device_ids if d not in registry]
            if unknown:
                raise ProvisionError(
                    Why.UNKNOWN_DEVICE, f"not in {fleet}: {', '.join(unknown[:10])}"
                )
            wanted = _wanted(device_ids or list(registry)) + wanted
        skipped: list[str] = []
        secrets: list[tuple[Account, str]] = []
        with store.opened(broker_dir) as d:
            explicit = set(device_ids) | set(accounts)
            taken = [a.username for a in wanted if a.username in d.entries]
            if explicit & set(taken):
                raise ProvisionError(
                    Why.EXISTS,
                    "already provisioned (use `taza devices rotate`): "
                    + ", ".join(sorted(explicit & set(taken))[:10]),
                )
            for a in wanted:
                if a.username in d.entries:
                    skipped.append(a.username)
                    continue
                secret = passwd.new_secret()
                d.entries[a.username] = passwd.hash_password(secret)
                secrets.append((a, secret))
            if secrets:
                d.save()
        added = [a.username for a, _ in secrets]
        _finish({"added": added, "skipped": skipped}, secrets, pid_file, as_json)
    except ProvisionError as exc:
        _fail(exc, as_json)


@click.command("rotate")
@click.argument("usernames", nargs=-1, required=True)
@_opts
def rotate(
    usernames: tuple[str, ...], broker_dir: Path, pid_file: Path | None, as_json: bool
) -> None:
    """New secrets for devices or accounts (the old ones stop working at the reload)."""
    try:
        wanted = _wanted(usernames)
        secrets: list[tuple[Account, str]] = []
        with store.opened(broker_dir, create=False) as d:
            missing = [a.username for a in wanted if a.username not in d.entries]
            if missing:
                raise ProvisionError(Why.NOT_FOUND, f"no credentials for {', '.join(missing[:10])}")
            for a in wanted:
                secret = passwd.new_secret()
                d.entries[a.username] = passwd.hash_password(secret)
                secrets.append((a, secret))
            d.save()
        _finish({"rotated": [a.username for a in wanted]}, secrets, pid_file, as_json)
    except ProvisionError as exc:
        _fail(exc, as_json)


@click.command("revoke")
@click.argument("usernames", nargs=-1, required=True)
@_opts
def revoke(
    usernames: tuple[str, ...], broker_dir: Path, pid_file: Path | None, as_json: bool
) -> None:
    """Remove devices or accounts: refused at the next CONNECT, disconnected at the reload."""
    try:
        wanted = _wanted(usernames)
        with store.opened(broker_dir, create=False) as d:
            missing = [a.username for a in wanted if a.username not in d.entries]
            if missing:
                raise ProvisionError(Why.NOT_FOUND, f"no credentials for {', '.join(missing[:10])}")
            for a in wanted:
                del d.entries[a.username]
            d.save()
        _finish({"revoked": [a.username for a in wanted]}, [], pid_file, as_json)
    except ProvisionError as exc:
        _fail(exc, as_json)


@click.command("export")
@click.option(
    "--fleet",
    envvar="TAZA_REGISTRY",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="also list the fleet file's devices that have no credentials yet",
)
@_opts
def export(fleet: Path | None, broker_dir: Path, pid_file: Path | None, as_json: bool) -> None:
    """Write DIR/mosquitto.conf (the shipped production profile, paths in DIR) and DIR/acl."""
    from devstack.servers import SHIPPED_MOSQUITTO_CONF

    try:
        with store.opened(broker_dir) as d:
            try:
                text = SHIPPED_MOSQUITTO_CONF.read_text()
                conf = profile.render(text, "production", broker_dir=d.path.resolve())
            except (OSError, ValueError) as exc:
                raise ProvisionError(Why.BAD_FILE, f"shipped profile: {exc}") from None
            d.save()
            store.write_text(d.path / store.CONF, conf, default_mode=0o644)
            by_role: dict[str, int] = {r.value: 0 for r in Role}
            for a in d.accounts():
                by_role[a.role.value] += 1
            missing = [x for x in _fleet(fleet) if x not in d.entries] if fleet else []
        tls_dir = d.path / store.TLS
        result: dict[str, Any] = {
            "conf": str(d.path / store.CONF),
            "passwd": str(d.passwd_path),
            "acl": str(d.acl_path),
            "tls": {f: (tls_dir / f).exists() for f in ("ca.crt", "server.crt", "server.key")},
            "accounts_by_role": by_role,
            "devices_without_credentials": missing,
        }
        if as_json:
            click.echo(json.dumps(result, indent=2))
        else:
            click.echo(f"wrote {result['conf']} and {result['acl']}")
            click.echo("accounts: " + ", ".join(f"{n} {r}" for r, n in by_role.items()))
            if missing:
                click.echo(f"{len(missing)} fleet devices have no credentials: taza devices add")
            absent = [f for f, ok in result["tls"].items() if not ok]
            if absent:
                click.echo(f"missing in {tls_dir}: {', '.join(absent)} (taza devices tls)")
        if pid_file is not None:
            store.reload_broker(pid_file)
    except ProvisionError as exc:
        _fail(exc, as_json)


@click.command("tls")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    help="the broker's DNS name or IP address as clients dial it (repeatable; first = CN)",
)
@click.option(
    "--client", "clients", multiple=True, help="a client certificate, CN = this user name"
)
@_dir_opts
def tls_command(
    hosts: tuple[str, ...], clients: tuple[str, ...], broker_dir: Path, as_json: bool
) -> None:
    """A development CA (made once) and the server's and clients' certificates in DIR/tls.

    Mosquitto 2.0 loads certificates at start only: restart it after a new server certificate.
    """
    try:
        tls_dir = Path(broker_dir) / store.TLS
        written = [str(tls_dir / "ca.crt")]
        tls.ensure_ca(tls_dir)
        if hosts:
            written.append(str(tls.server_cert(tls_dir, list(hosts))))
        for c in clients:
            written.append(str(tls.client_cert(tls_dir, parse_username(c).username)))
        if as_json:
            click.echo(json.dumps({"written": written}, indent=2))
        else:
            click.echo("\n".join(written))
    except ProvisionError as exc:
        _fail(exc, as_json)


COMMANDS = (add, rotate, revoke, export, tls_command)
