"""``taza tokens add|list|revoke`` as an operator runs them (the installed console script).

The token is printed once, alone on stdout, and never again (not by ``list``, not in the file);
refusals say why with exit 2 (usage) or 1; several ``taza tokens`` at once lose no change — a
lost revocation would bring a revoked token back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from devices import ExitCode

TAZA = Path(sys.executable).parent / "taza"


def taza(*args: str) -> subprocess.CompletedProcess[str]:
    assert TAZA.exists(), f"{TAZA} is not installed: run make venv"
    return subprocess.run([str(TAZA), *args], capture_output=True, text=True, timeout=60)


def names(file: Path) -> set[str]:
    done = taza("tokens", "list", "--json", "--file", str(file))
    assert done.returncode == 0, done.stderr
    return {t["name"] for t in json.loads(done.stdout)["items"]}


def test_add_shows_the_token_once_and_list_never(tmp_path: Path) -> None:
    file = tmp_path / "tokens.json"
    done = taza("tokens", "add", "alice", "--role", "operator", "--file", str(file))
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert done.stdout == token + "\n"  # stdout is the token alone: TOKEN=$(taza tokens add …)
    assert token.startswith("taza_")
    assert "shown once" in done.stderr
    assert token not in done.stderr
    listed = taza("tokens", "list", "--file", str(file))
    assert "alice" in listed.stdout
    assert token not in listed.stdout + file.read_text()
    assert taza("tokens", "--help").stdout.count("taza_") == 0


def test_refusals_say_why(tmp_path: Path) -> None:
    file = str(tmp_path / "tokens.json")
    crew = taza("tokens", "add", "c", "--role", "crew", "--file", file)
    assert crew.returncode == ExitCode.USAGE
    assert "needs --region" in crew.stderr
    assert crew.stdout == ""
    assert taza("tokens", "add", "a", "--role", "operator", "--file", file).returncode == 0
    again = taza("tokens", "add", "a", "--role", "operator", "--file", file)
    assert again.returncode == ExitCode.USAGE
    assert "exists" in again.stderr
    gone = taza("tokens", "revoke", "nobody", "--file", file)
    assert gone.returncode == ExitCode.FAILURE
    assert "no token named 'nobody'" in gone.stderr
    missing = taza("tokens", "list", "--file", str(tmp_path / "none.json"))
    assert missing.returncode == ExitCode.FAILURE


def test_concurrent_edits_lose_nothing(tmp_path: Path) -> None:
    file = tmp_path / "tokens.json"
    assert taza("tokens", "add", "old", "--role", "operator", "--file", str(file)).returncode == 0
    procs = [
        subprocess.Popen(
            [
                str(TAZA),
                "tokens",
                "add",
                f"t{i}",
                "--role",
                "crew",
                "--region",
                "almaty",
                "--file",
                str(file),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(8)
    ]
    procs.append(
        subprocess.Popen(
            [str(TAZA), "tokens", "revoke", "old", "--file", str(file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    )
    for p in procs:
        assert p.wait(60) == 0, p.stderr.read() if p.stderr else ""
    assert names(file) == {f"t{i}" for i in range(8)}
