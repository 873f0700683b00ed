"""``taza tokens add|list|revoke``: the API tokens file taza-ingest reads (TAZA_API_TOKENS_FILE).

Run on the host that holds the file. ``add`` prints the new token once, on stdout alone (so
``TOKEN=$(taza tokens add …)`` works); only its SHA-256 is kept. taza-ingest notices a changed
file on the next request: a revoked token is refused at once, without a restart.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from devices import ExitCode
from ingest.tokens import Role, TokenFile, TokenFileError

FILE_ENV = "TAZA_API_TOKENS_FILE"


def _file_option(f: Any) -> Any:
    return click.option(
        "--file",
        "path",
        type=click.Path(path_type=Path, dir_okay=False),
        envvar=FILE_ENV,
        required=True,
        help=f"the tokens file taza-ingest reads (env {FILE_ENV})",
    )(f)


def _fail(message: str, code: int = ExitCode.FAILURE) -> NoReturn:
    click.echo(f"taza: {message}", err=True)
    sys.exit(code)


def _problem(path: Path, exc: OSError | TokenFileError) -> str:
    return str(exc) if isinstance(exc, TokenFileError) else f"{path}: {exc.strerror or exc}"


@click.group()
def tokens() -> None:
    """Operator API tokens: add (shown once), list, revoke."""


@tokens.command()
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice([r.value for r in Role]),
    required=True,
    help="operator: everything; crew: its region's alerts, fill levels and plan",
)
@click.option("--region", default=None, help="the crew's region (crew tokens only)")
@_file_option
def add(name: str, role: str, region: str | None, path: Path) -> None:
    """Create a token called NAME and print it once (only its hash is stored)."""
    try:
        with TokenFile.editing(path, create=True) as store:
            entry, token = store.add(name, Role(role), region)
    except ValueError as exc:
        _fail(str(exc), ExitCode.USAGE)
    except (OSError, TokenFileError) as exc:
        _fail(_problem(path, exc))
    where = f" for {entry.region}" if entry.region else ""
    click.echo(
        f"token {entry.name} ({entry.role.value}{where}, id {entry.id}) added to {path}; "
        "it is shown once, below — keep it now",
        err=True,
    )
    click.echo(token)


@tokens.command("list")
@_file_option
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def list_tokens(path: Path, as_json: bool) -> None:
    """The tokens in the file: name, id, role, region, created (never the token or its hash)."""
    try:
        rows = [e.public() for e in TokenFile.load(path).entries.values()]
    except TokenFileError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps({"items": rows}, indent=2))
        return
    table = Table(title=f"API tokens ({len(rows)})", title_justify="left", header_style="bold")
    for col in ("name", "id", "role", "region", "created"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        table.add_row(*(r[c] or "" for c in ("name", "id", "role", "region", "created")))
    Console(soft_wrap=False).print(table)


@tokens.command()
@click.argument("name_or_id")
@_file_option
def revoke(name_or_id: str, path: Path) -> None:
    """Remove a token (by name or id); taza-ingest refuses it from its next request."""
    try:
        with TokenFile.editing(path, create=False) as store:
            entry = store.revoke(name_or_id)
    except KeyError:
        _fail(f"no token named {name_or_id!r} in {path}")
    except (OSError, TokenFileError) as exc:
        _fail(_problem(path, exc))
    click.echo(f"token {entry.name} (id {entry.id}) revoked", err=True)
