"""The shipped ``mosquitto.conf`` rendered for one profile, with ports and paths replaced.

One function for ``taza devices export`` (a city's production file) and for
``devstack.servers.Mosquitto`` (the demo's and the tests' brokers), so the tests run the very
profile a city installs. Standard library only: devstack imports it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

PROFILES = ("development", "production")
SHIPPED_DIR = "/etc/mosquitto/taza"
"""Where the shipped production block expects the password file, ACL and ``tls/``."""

_MARK = re.compile(r"#\s*(>>>|<<<)\s*profile:\s*(\S+)\s*$")


def select(text: str, profile: str) -> list[str]:
    """The shared lines and the lines of ``profile``'s block; markers and other blocks go."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    out: list[str] = []
    inside: str | None = None
    seen = False
    for line in text.splitlines():
        mark = _MARK.match(line.strip())
        if mark:
            opening, name = mark.group(1) == ">>>", mark.group(2)
            if opening == (inside is not None) or (not opening and name != inside):
                raise ValueError(f"unbalanced profile marker: {line.strip()!r}")
            inside = name if opening else None
            seen = seen or name == profile
            continue
        if inside is None or inside == profile:
            out.append(line)
    if inside is not None:
        raise ValueError(f"profile block {inside!r} is not closed")
    if not seen:
        raise ValueError(f"no `# >>> profile: {profile}` block")
    return out


_COMMENTED_SETTING = re.compile(r"#\s?([a-z_]+ \S+)$")


def enable(lines: list[str], port: int) -> list[str]:
    """Uncomment the commented-out ``# listener PORT`` and the settings right below it (the
    profile's optional mutual-TLS listener), up to the first line that is not a setting."""
    out: list[str] = []
    inside = False
    for line in lines:
        m = _COMMENTED_SETTING.match(line.strip())
        if m and m.group(1) == f"listener {port}":
            inside = True
        elif not m:
            inside = False
        out.append(m.group(1) if inside and m else line)
    if not inside and not any(line == f"listener {port}" for line in out):
        raise ValueError(f"no commented-out `# listener {port}` block")
    return out


def render(
    text: str,
    profile: str,
    *,
    listeners: Mapping[int, tuple[int, str]] | None = None,
    settings: Mapping[str, str] | None = None,
    broker_dir: Path | None = None,
    enable_listeners: tuple[int, ...] = (),
) -> str:
    """``profile`` of ``text`` with the commented-out ``enable_listeners`` blocks switched on,
    listener ``PORT`` moved to ``listeners[PORT]`` = (port, address), the value of every
    active ``settings`` key replaced, and the shipped ``/etc/mosquitto/taza`` directory (in
    active and commented lines) replaced by ``broker_dir``."""
    listeners = listeners or {}
    settings = settings or {}
    out: list[str] = []
    lines = select(text, profile)
    for port in enable_listeners:
        lines = enable(lines, port)
    for line in lines:
        words = line.split()
        key = words[0] if words else ""
        if key == "listener" and len(words) >= 2 and int(words[1]) in listeners:
            port, address = listeners[int(words[1])]
            line = f"listener {port} {address}"
        elif key in settings:
            line = f"{key} {settings[key]}"
        if broker_dir is not None:
            line = line.replace(SHIPPED_DIR, str(broker_dir).rstrip("/"))
        out.append(line)
    return "\n".join(out) + "\n"
