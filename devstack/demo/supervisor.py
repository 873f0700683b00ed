"""The demo's process control: child processes, signals, ports, and the directory it owns.

Every child runs in its own session, so a Ctrl-C reaches only the demo, which stops them in
order (tools and the simulator, then taza-ingest, then the broker and the database). Children
are recorded by PID and start time in the demo directory, so a later run can stop what a
killed one left behind without ever touching an unrelated process.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

from devstack.demo.console import Console, rel
from devstack.servers import HOST, Server

_MARKER = ".taza-demo"  # lock file; a directory holding it may be wiped by the demo
_PIDS = ".pids"  # processes of the current run, to stop leftovers of one that was killed


class DemoError(RuntimeError):
    """A step failed; the message says which and carries the log tail of that component."""


def tail(path: Path, n: int = 30) -> str:
    try:
        lines = path.read_bytes().decode("utf-8", "replace").splitlines()
    except FileNotFoundError:
        return f"    (no log at {rel(path)})"
    if not lines:
        return f"    ({rel(path)} is empty)"
    return "\n".join("    " + line for line in lines[-n:])


def failure(what: str, log: Path, n: int = 30) -> DemoError:
    return DemoError(f"{what}\n  --- last lines of {rel(log)} ---\n{tail(log, n)}")


class Signals:
    """SIGINT, SIGTERM and SIGHUP become KeyboardInterrupt, except inside `deferred()` (while a
    child is spawned and recorded, so none escapes the clean-up) and once stopping has begun."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.stopping = False
        self._depth = 0
        self._pending = False
        self._noted = False

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._handler)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            if not self._noted:
                self._noted = True
                self.console.line("  (already stopping everything, please wait)")
            return
        if self._depth:
            self._pending = True
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth and self._pending and not self.stopping:
                self._pending = False
                raise KeyboardInterrupt


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def pick_port(standard: int) -> int | None:
    """The standard port if free, else standard + 10000, else None (any free port)."""
    for port in (standard, standard + 10_000):
        if port_free(port):
            return port
    return None


def proc_starttime(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (guards against PID reuse)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return None if fields[0] == "Z" else int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def flags(**options: object) -> list[str]:
    """`--long-name value` pairs for a child's command line, in the order given."""
    out: list[str] = []
    for key, value in options.items():
        out += ["--" + key.replace("_", "-"), str(value)]
    return out


def exit_text(rc: int) -> str:
    if rc < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-rc).name
    return f"exit {rc}"


def tool(name: str) -> list[str]:
    """The console script next to this interpreter (what a user types), or `python -m`
    (``-c`` for ``taza``)."""
    script = Path(sys.executable).with_name(name)
    if script.exists():
        return [str(script)]
    if name == "taza":  # operators/ has no __main__ module
        return [sys.executable, "-c", "from operators.cli import main; main(prog_name='taza')"]
    return [sys.executable, "-m", {"taza-ingest": "ingest", "taza-sim": "simulator.cli"}[name]]


def shown(name: str) -> str:
    script = Path(sys.executable).with_name(name)
    return rel(script) if script.exists() else name


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


class Supervisor:
    """Owns the demo directory and everything started in it, and stops it all in order.

    ``servers`` (by name, in start order) and ``service`` (taza-ingest) are set by whoever
    starts them; every other child is a tool or the simulator, stopped first.
    """

    def __init__(self, var: Path, console: Console, signals: Signals) -> None:
        self.var = var.resolve()
        self.out = console
        self.signals = signals
        self.children: list[Child] = []
        self.servers: dict[str, Server] = {}
        self.service: Child | None = None
        self._lock: IO[str] | None = None

    @property
    def owns_dir(self) -> bool:
        return self._lock is not None

    def prepare_dir(self) -> None:
        """Lock the directory, stop leftovers of a demo that was killed, start from empty."""
        var = self.var
        if any(c.isspace() for c in str(var)):
            raise DemoError(f"{var}: the servers' configs cannot hold paths with spaces; use --var")
        if var.exists() and any(var.iterdir()) and not (var / _MARKER).exists():
            raise DemoError(
                f"{rel(var)} exists and was not made by the demo; the demo empties its directory "
                "at every start, so choose another --var or remove it yourself"
            )
        var.mkdir(parents=True, exist_ok=True)
        lock = (var / _MARKER).open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            owner = lock.read().strip() or "?"
            lock.close()
            raise DemoError(
                f"another demo (pid {owner}) is using {rel(var)}; stop it (Ctrl-C in its "
                "terminal) or give this one its own --var"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock
        self.stop_leftovers()
        for entry in var.iterdir():
            if entry.name == _MARKER:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def stop_leftovers(self) -> None:
        """Processes recorded by an earlier run of this directory that are still alive (that
        run was SIGKILLed): SIGTERM, then SIGKILL. PID + start time, so never a stranger."""
        try:
            records = (self.var / _PIDS).read_text().split("\n")
        except FileNotFoundError:
            return
        alive: list[tuple[int, int, str]] = []
        for record in records:
            parts = record.split()
            if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
                continue
            pid, start, name = int(parts[0]), int(parts[1]), parts[2]
            if proc_starttime(pid) == start:
                alive.append((pid, start, name))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                    os.kill(pid, signal.SIGCONT)
        if not alive:
            return
        deadline = time.monotonic() + 15
        while any(proc_starttime(pid) == start for pid, start, _ in alive):
            if time.monotonic() > deadline:
                for pid, start, _ in alive:
                    if proc_starttime(pid) == start:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.1)
        names = ", ".join(f"{name} ({pid})" for pid, _, name in alive)
        self.out.line(f"  stopped what an earlier, killed demo left running: {names}")

    def record(self, pid: int, name: str) -> None:
        start = proc_starttime(pid)
        if start is not None:
            with (self.var / _PIDS).open("a") as f:
                f.write(f"{pid} {start} {name}\n")

    def spawn(
        self,
        name: str,
        argv: list[str],
        log: Path,
        *,
        env: dict[str, str],
        stdout: IO[bytes] | None = None,
        stderr_pipe: bool = False,
    ) -> Child:
        """A child in its own session: a Ctrl-C reaches only the demo, which stops the
        children in order (simulator, ingest, broker, database) instead of all at once."""
        with self.signals.deferred(), log.open("ab") as logf:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=stdout if stdout is not None else logf,
                stderr=subprocess.PIPE if stderr_pipe else logf,
                cwd=self.var,
                env=env,
                start_new_session=True,
            )
            child = Child(name, proc, log)
            self.children.append(child)
            self.record(proc.pid, name)
        return child

    def run_tool(
        self, name: str, argv: list[str], timeout: float, env: dict[str, str]
    ) -> tuple[int, str]:
        """A short command: stdout captured, stderr to var/<name>.log; interruptible."""
        out_path = self.var / f"{name}.out"
        with out_path.open("wb") as stdout:
            child = self.spawn(name, argv, self.var / f"{name}.log", env=env, stdout=stdout)
        deadline = time.monotonic() + timeout
        while child.proc.poll() is None:
            if time.monotonic() > deadline:
                self.terminate(child, signal.SIGTERM, 5)
                raise failure(f"{name} took longer than {timeout:.0f} s", child.log)
            time.sleep(0.05)
        return child.proc.returncode, out_path.read_text(errors="replace")

    def terminate(self, child: Child, sig: signal.Signals, timeout: float) -> int:
        proc = child.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
                self.out.line(f"  {child.name} ignored {sig.name} for {timeout:.0f} s: killed")
        return proc.returncode

    def stop_all(self) -> bool:
        """Simulator and tools, then taza-ingest (SIGTERM: flush, ack, exit 0), then the broker
        and the database. True when every part stopped cleanly."""
        self.signals.stopping = True
        clean = True
        stopped: list[str] = []
        for child in reversed(self.children):
            if child is self.service or child.proc.poll() is not None:
                continue
            sig = signal.SIGINT if child.name == "taza-sim" else signal.SIGTERM
            stopped.append(f"{child.name} ({exit_text(self.terminate(child, sig, 40))})")
        if self.service is not None and self.service.proc.poll() is None:
            rc = self.terminate(self.service, signal.SIGTERM, 30)
            stopped.append(f"{self.service.name} ({exit_text(rc)})")
            if rc != 0:
                clean = False
                what = f"{self.service.name} exited with code {rc}"
                self.out.line(str(failure(what, self.service.log)))
        for server in self.servers.values():
            try:
                running = server.running
                server.stop()  # raises if it had died or stopped uncleanly
                if running:
                    stopped.append(server.name)
            except RuntimeError as exc:
                clean = False
                self.out.line(f"  {exc}")
        if stopped:
            self.out.line(f"  stopped {', '.join(stopped)}")
        if self._lock is not None:  # the directory is ours (another demo may hold it)
            if clean:
                with contextlib.suppress(OSError):
                    (self.var / _PIDS).unlink()
            self._lock.close()
        return clean
