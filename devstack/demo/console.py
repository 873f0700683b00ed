"""What the user sees while the demo runs: plain lines, one live status line, the progress table.

On a terminal the current progress row is rewritten in place and kept every few seconds, so
the output stays a page long (no walls of logs); off a terminal only the kept rows appear.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import IO

KZ = timezone(timedelta(hours=5), "UTC+5")  # every built-in region is in Kazakhstan


class Console:
    """Plain lines, plus on a terminal one status line rewritten in place (no walls of logs)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._status_open = False
        self._lock = threading.Lock()

    def line(self, text: str = "") -> None:
        with self._lock:
            if self._status_open:
                self.stream.write("\r\x1b[K")
                self._status_open = False
            self.stream.write(text + "\n")
            self.stream.flush()

    def status(self, text: str) -> None:
        if not self.tty:
            return
        with self._lock:
            self.stream.write("\r" + text + "\x1b[K")
            self.stream.flush()
            self._status_open = True


def rel(path: Path) -> str:
    """A path as the user would type it from where they are."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(path)


def fmt(n: float) -> str:
    return f"{int(n):,}"


def progress_header() -> list[str]:
    """The two header lines of the live table: the simulator's side | taza-ingest's side."""
    return [
        f"  {'':<5}  {'── taza-sim ':─<45}   {'── taza-ingest ':─<38}",
        f"  {'time':>5}  {'simulated (UTC+5)':<17}  {'published':>9}  {'msg/s':>5}  "
        f"{'online':>9} │ {'received':>9}  {'rejected':>8}  {'points':>9}  {'queue':>5}",
    ]


def progress_row(
    progress: Mapping[str, object], metrics: Mapping[str, float], elapsed: float
) -> str:
    """One row: the latest ``taza-sim run --progress jsonl`` record beside taza-ingest's
    counters (sample name → value summed over labels); missing figures show as 0 or -."""
    sim_time = "starting"
    when = progress.get("sim_time")
    if isinstance(when, str):
        with contextlib.suppress(ValueError):
            sim_time = (
                datetime.fromisoformat(when)
                .replace(tzinfo=UTC)
                .astimezone(KZ)
                .strftime("%a %d %b %H:%M")
            )
    online = f"{progress['online']}/{progress['devices']}" if "devices" in progress else "-"
    return (
        f"  {elapsed:>4.0f}s  {sim_time:<17}  {fmt(_num(progress.get('published'))):>9}  "
        f"{fmt(_num(progress.get('rate_per_s'))):>5}  {online:>9} │ "
        f"{fmt(metrics.get('taza_messages_received_total', 0)):>9}  "
        f"{fmt(metrics.get('taza_messages_rejected_total', 0)):>8}  "
        f"{fmt(metrics.get('taza_points_written_total', 0)):>9}  "
        f"{fmt(metrics.get('taza_queue_depth', 0)):>5}"
    )


def _num(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0
