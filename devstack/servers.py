"""Start, stop, freeze and inspect the real servers taza runs against.

Used by the pytest fixtures (tests/conftest.py), bench/ and the demo (devstack.demo); it needs
nothing beyond the standard library except prometheus_client's text parser (devstack.metrics)
and the broker profile renderer (operators.provision.profile, standard library too).
Every server binds 127.0.0.1 on a free port, keeps its configuration, data and log in one
directory, and is controlled by its PID.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from devstack import metrics
from operators.provision import profile as broker_profile
from operators.provision.profile import PROFILES

PROFILE_MARK = "# >>> profile:"
MTLS_PORT = 8884
"""The shipped production block's optional (commented-out) mutual-TLS listener."""

__all__ = [
    "INSTALL_HINT",
    "SHIPPED_MOSQUITTO_CONF",
    "HTTPStatusError",
    "InfluxDB1",
    "MissingBinary",
    "Mosquitto",
    "QueryError",
    "Server",
    "ServerError",
    "VictoriaMetrics",
    "find_binary",
    "free_port",
    "quote_ident",
]

#: taza's mosquitto.conf: in a checkout a symlink to the top-level file, in an installed wheel
#: a copy (package data), so the broker is configured the same way with or without a checkout.
SHIPPED_MOSQUITTO_CONF = Path(__file__).with_name("mosquitto.conf")
INSTALL_HINT = (
    "apt-get update && apt-get install -y mosquitto mosquitto-clients influxdb victoria-metrics"
    " (or `make setup`)"
)
HOST = "127.0.0.1"

# Debian installs mosquitto in /usr/sbin, which is not on a normal user's PATH.
_EXTRA_BIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin", "/usr/local/bin")


class MissingBinary(RuntimeError):
    """A server binary is not installed: integration tests fail (never skip) with the fix."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        super().__init__(
            f"`{binary}` is not installed (searched PATH and /usr/sbin). {INSTALL_HINT}"
        )


class ServerError(RuntimeError):
    """A server did not start, died, or logged an error that makes the test meaningless."""


class HTTPStatusError(RuntimeError):
    """A server answered an HTTP request with a non-2xx status."""

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        self.status = status
        self.body = body
        super().__init__(f"{method} {url} -> HTTP {status}: {body.strip()[:2000]}")


class QueryError(RuntimeError):
    """InfluxDB accepted the request but a statement failed (the error is inside the JSON)."""


_handed_out: set[int] = set()
_port_lock = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago and not handed out before by us."""
    with _port_lock:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((HOST, 0))
                port: int = s.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port


def find_binary(name: str) -> str:
    """Absolute path of a server binary, or MissingBinary with the install command."""
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_EXTRA_BIN_DIRS))
    if found is None:
        raise MissingBinary(name)
    return found


def _tcp_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _listens(pid: int, port: int) -> bool | None:
    """Whether process `pid` holds the listening socket on `port` (None: /proc cannot tell).

    A probe that succeeds could be answered by someone else's server that grabbed the port.
    """
    try:
        inodes: set[str] = set()
        for table in ("tcp", "tcp6"):
            path = Path(f"/proc/{pid}/net/{table}")
            if not path.exists():
                continue
            for line in path.read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
        if not inodes:
            return False
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in inodes:
                    return True
        return False
    except (OSError, ValueError, IndexError):
        return None


# No proxies: an http_proxy in the environment must never see loopback test traffic.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(
    method: str,
    url: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with _opener.open(request, timeout=timeout) as response:
            status: int = response.status
            return status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _http_ok(
    method: str,
    url: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> bytes:
    status, body = _http(method, url, data, headers, timeout)
    if not 200 <= status < 300:
        raise HTTPStatusError(method, url, status, body.decode("utf-8", "replace"))
    return body


_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class Server:
    """One server process: its own directory, port(s), config, log file and PID."""

    name: ClassVar[str] = "server"
    binary: ClassVar[str] = ""
    host: ClassVar[str] = HOST

    _instances: ClassVar[weakref.WeakSet[Server]] = weakref.WeakSet()

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        if any(c.isspace() for c in str(self.data_dir)):
            raise ValueError(f"{self.data_dir}: server configs cannot hold paths with whitespace")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._auto_port = port is None
        self.port: int = free_port() if port is None else port
        self._proc: subprocess.Popen[bytes] | None = None
        self._reaped = False  # stop() or kill() has collected the current process
        self._log_offset = 0
        #: time.monotonic() of the last successful start (the test harness uses it to find the
        #: servers a failing test touched).
        self.started_at: float | None = None
        Server._instances.add(self)

    # -- to be provided by subclasses -------------------------------------------------------

    def _command(self, binary: str) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _write_config(self) -> None:
        """Write the config file (if any) for the current port(s)."""

    def _new_ports(self) -> None:
        self.port = free_port()

    def _check_log(self) -> None:
        """Raise ServerError if this run's log shows an error a test must not ignore."""

    # -- public -----------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise ServerError(f"{self.name} was never started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """Exit status of the last run (negative: killed by that signal); None while running."""
        return None if self._proc is None else self._proc.poll()

    def start(self, timeout: float = 30.0) -> Self:
        """Spawn the server and wait until it serves; on failure raise with the log tail.

        If the port was chosen automatically and was taken in the meantime (another test run on
        the same machine), retry on fresh ports; an explicit port is never changed.
        """
        if self.running:
            return self
        binary = find_binary(self.binary)
        attempts = 3 if self._auto_port else 1
        for attempt in range(1, attempts + 1):
            self._write_config()
            self._spawn(binary)
            failure = self._wait_ready(timeout)
            if failure is None:
                self.started_at = time.monotonic()
                self._check_log()
                return self
            this_run = self.log_since_start().lower()
            if attempt < attempts and "address already in use" in this_run:
                self._new_ports()
                continue
            raise ServerError(
                f"{self.name} {failure} (port {self.port}, dir {self.data_dir}).\n"
                f"--- last lines of {self.log_path} ---\n{self.log_tail()}"
            )
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (a clean shutdown: mosquitto saves its database), SIGKILL if it hangs.

        Raises ServerError if the server had died on its own, did not stop in time, exited
        non-zero, or logged an error that matters (see _check_log): tests must not pass on a
        server that misbehaved.
        """
        proc = self._proc
        if proc is None or self._reaped:
            return
        died = proc.poll()
        hung = False
        if died is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
                proc.send_signal(signal.SIGCONT)  # a frozen process handles SIGTERM once resumed
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                hung = True
                proc.kill()
                proc.wait()
        self._reaped = True
        _live.discard(self)
        self._check_log()
        problem = None
        if died is not None:
            problem = f"had died on its own (exit code {died})"
        elif hung:
            problem = f"ignored SIGTERM for {timeout:.0f} s and was killed"
        elif proc.returncode != 0:
            problem = f"exited with code {proc.returncode} after SIGTERM"
        if problem:
            raise ServerError(
                f"{self.name} on port {self.port} {problem}.\n"
                f"--- last lines of {self.log_path} ---\n{self.log_tail()}"
            )

    def kill(self) -> None:
        """SIGKILL: a crash, nothing saved (what a power cut does to the server)."""
        proc = self._proc
        if proc is None or self._reaped:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        self._reaped = True
        _live.discard(self)

    def freeze(self) -> None:
        """SIGSTOP: the process keeps its sockets open but answers nothing (a hung server)."""
        self._signal(signal.SIGSTOP)
        self._wait_state(frozen=True)

    def thaw(self) -> None:
        """SIGCONT: resume a frozen server."""
        self._signal(signal.SIGCONT)
        self._wait_state(frozen=False)

    def restart(self, timeout: float = 30.0) -> Self:
        """Clean stop, then start on the same port(s) with the same data directory."""
        self.stop()
        return self.start(timeout)

    def log_tail(self, n: int = 60) -> str:
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return f"(no log at {self.log_path})"
        lines = data.decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])

    def log_since_start(self) -> str:
        """The log written by the current (or last) run only."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self._proc.pid}" if self.running and self._proc else "stopped"
        return f"{type(self).__name__}(port={self.port}, {state}, dir={self.data_dir})"

    # -- internals --------------------------------------------------------------------------

    def _spawn(self, binary: str) -> None:
        try:
            self._log_offset = self.log_path.stat().st_size
        except FileNotFoundError:
            self._log_offset = 0
        with self.log_path.open("ab") as log:
            # Own session: a Ctrl-C in the terminal reaches the script, which then stops the
            # servers in the right order, instead of killing everything at once.
            self._proc = subprocess.Popen(
                self._command(binary),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
            )
        self._reaped = False
        _live.add(self)

    def _wait_ready(self, timeout: float) -> str | None:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                self._reaped = True
                _live.discard(self)
                return f"exited with code {proc.returncode} before it was ready"
            if self._ready() and _listens(proc.pid, self.port) is not False:
                return None
            if time.monotonic() > deadline:
                self.kill()
                return f"was not ready within {timeout:.0f} s"
            time.sleep(0.05)

    def _signal(self, sig: signal.Signals) -> None:
        if not self.running:
            raise ServerError(f"{self.name} is not running")
        os.kill(self.pid, sig)

    def _wait_state(self, frozen: bool, timeout: float = 5.0) -> None:
        stat = Path(f"/proc/{self.pid}/stat")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                state = stat.read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                return
            if (state == "T") == frozen:
                return
            time.sleep(0.01)
        raise ServerError(f"{self.name} did not {'stop' if frozen else 'resume'} in {timeout} s")


_live: set[Server] = set()


@atexit.register
def _stop_leftovers() -> None:
    """A script that dies on an exception must not leave servers behind."""
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.stop(timeout=5)


GUARD = "taza_guard.so"
GUARD_SRC = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto" / "guard"
GUARD_HINT = "apt-get install -y gcc make mosquitto-dev libmosquitto-dev"


def build_guard(out_dir: Path) -> Path:
    """The production profile's guard plugin, built from the checkout's source with
    its own Makefile (what a city runs) into ``out_dir``."""
    out = Path(out_dir) / GUARD
    if not (GUARD_SRC / "Makefile").exists():
        raise ServerError(f"{GUARD_SRC}: the guard's source is not here (a checkout)")
    try:
        subprocess.run(
            [find_binary("make"), "-s", "-C", str(GUARD_SRC), f"OUT={out}"],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.CalledProcessError as exc:
        raise ServerError(
            f"building the guard failed ({GUARD_HINT}):\n{exc.stderr[-2000:]}"
        ) from None
    return out


class Mosquitto(Server):
    """The broker, configured from taza's mosquitto.conf (or ``source_conf``, another file).

    Overridden: the listener (our port on 127.0.0.1), persistence_location (data_dir) and the log
    (a file in data_dir). As root, mosquitto drops to the `mosquitto` user, which cannot write a
    root-owned 0700 temp dir: persistence then fails and a restart silently loses every session.
    So the generated config says `user root` when we are root, and start()/stop() fail loudly if
    the log shows "Error saving".
    """

    name = "mosquitto"
    binary = "mosquitto"
    _ERROR = re.compile(r"(^|: )Error")
    _RELOADED = "Reloading config."

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        extra_conf: str = "",
        source_conf: Path | None = None,
        *,
        profile: str = "development",
        broker_dir: Path | None = None,
        mtls: bool = False,
    ) -> None:
        """``profile``: which block of the shipped file (``development``: anonymous plain MQTT;
        ``production``: TLS, password file and ACL). ``broker_dir`` replaces the production
        block's ``/etc/mosquitto/taza`` (``passwd``, ``acl``, ``tls/``), default ``data_dir``:
        ``taza devices add|tls --dir`` writes those files before start(). ``mtls``: also the
        production block's commented-out mutual-TLS listener, on ``mtls_port``."""
        super().__init__(data_dir, port)
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
        self.extra_conf = extra_conf
        self.source_conf = SHIPPED_MOSQUITTO_CONF if source_conf is None else Path(source_conf)
        self.profile = profile
        self.broker_dir = self.data_dir if broker_dir is None else Path(broker_dir).resolve()
        if mtls and profile != "production":
            raise ValueError("mtls=True needs profile='production'")
        self.mtls_port: int | None = free_port() if mtls else None

    @property
    def tls(self) -> bool:
        """The production profile's one listener speaks TLS only."""
        return self.profile == "production"

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The CA the production listener's certificate is checked against."""
        return self.broker_dir / "tls" / "ca.crt"

    def reload(self, timeout: float = 10.0) -> None:
        """SIGHUP: mosquitto reads its password and ACL files again (and disconnects clients
        they no longer allow) without a restart; returns once the log says it did."""
        before = self.log_since_start().count(self._RELOADED)
        self._signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self.log_since_start().count(self._RELOADED) <= before:
            if time.monotonic() > deadline:
                raise ServerError(f"mosquitto did not log {self._RELOADED!r} within {timeout} s")
            time.sleep(0.02)

    @property
    def conf_path(self) -> Path:
        return self.data_dir / "mosquitto.conf"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "mosquitto.db"

    def config_text(self) -> str:
        """The shipped config's profile with listener, persistence location, log and (for
        production) the broker directory redirected here."""
        out: list[str] = []
        listener_seen = False
        text = self.source_conf.read_text()
        if PROFILE_MARK in text:
            text = broker_profile.render(
                text,
                self.profile,
                broker_dir=self.broker_dir,
                enable_listeners=(MTLS_PORT,) if self.mtls_port else (),
                listeners={MTLS_PORT: (self.mtls_port, self.host)} if self.mtls_port else {},
            )
        for raw in text.splitlines():
            words = raw.split()
            key = words[0] if words else ""
            if key == "plugin" and len(words) == 2 and Path(words[1]).name == GUARD:
                out.append(f"plugin {build_guard(self.data_dir)}")
            elif key == "listener" and self.mtls_port and words[1:2] == [str(self.mtls_port)]:
                out.append(raw)
            elif key == "listener":
                if listener_seen:
                    raise ServerError(
                        f"{self.source_conf} has more than one listener; devstack/servers.py only "
                        "knows how to move one onto a test port: extend Mosquitto.config_text()"
                    )
                listener_seen = True
                out.append(f"listener {self.port} {self.host}")
            elif key == "persistence_location":
                out.append(f"persistence_location {self.data_dir}/")
            elif key in ("log_dest", "pid_file", "user", "daemon"):
                out.append(f"# (test harness) {raw}")
            else:
                out.append(raw)
        if not listener_seen:
            out.append(f"listener {self.port} {self.host}")
        out += ["", "# --- test harness overrides ---", f"log_dest file {self.log_path}"]
        if os.geteuid() == 0:
            out.append("user root")
        if self.extra_conf:
            out.append(self.extra_conf)
        return "\n".join(out) + "\n"

    def _write_config(self) -> None:
        self.conf_path.write_text(self.config_text())

    def _command(self, binary: str) -> list[str]:
        return [binary, "-c", str(self.conf_path)]

    def _ready(self) -> bool:
        return " running" in self.log_since_start() and _tcp_open(self.port)

    def _check_log(self) -> None:
        log = self.log_since_start()
        bad = [line for line in log.splitlines() if self._ERROR.search(line)]
        if bad:
            raise ServerError(
                f'mosquitto on port {self.port} logged errors (e.g. "Error saving": persistence '
                "is broken and a restart loses every session):\n" + "\n".join(bad[:20])
            )


class InfluxDB1(Server):
    """InfluxDB 1.x (`influxd`, v1 HTTP API only) with its own config file."""

    name = "influxd"
    binary = "influxd"

    def __init__(
        self, data_dir: Path, port: int | None = None, *, max_values_per_tag: int = 0
    ) -> None:
        """``max_values_per_tag``: influxd's per-tag-key limit (upstream default 100,000, too
        few for a national fleet's device ids); 0, the default here, means unlimited."""
        super().__init__(data_dir, port)
        self.rpc_port = self._other_port()
        self.max_values_per_tag = max_values_per_tag

    def _other_port(self) -> int:
        while (p := free_port()) == self.port:
            pass
        return p

    def _new_ports(self) -> None:
        super()._new_ports()
        self.rpc_port = self._other_port()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def conf_path(self) -> Path:
        return self.data_dir / "influxdb.conf"

    def config_text(self) -> str:
        d = self.data_dir
        # `reporting-disabled` is upstream's key; Debian's build renamed it `reporting-enabled`
        # (unknown keys are ignored, so both are set). influxd 1.x has no log-file option: its
        # stderr goes to log_path.
        return f"""\
reporting-disabled = true
reporting-enabled = false
bind-address = "{self.host}:{self.rpc_port}"

[meta]
  dir = "{d}/meta"

[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
  max-values-per-tag = {self.max_values_per_tag}

[monitor]
  store-enabled = false

[continuous_queries]
  enabled = false

[subscriber]
  enabled = false

[http]
  enabled = true
  bind-address = "{self.host}:{self.port}"
  log-enabled = false
  pprof-enabled = false

[logging]
  level = "info"
  suppress-logo = true
"""

    def _write_config(self) -> None:
        self.conf_path.write_text(self.config_text())

    def _command(self, binary: str) -> list[str]:
        return [binary, "-config", str(self.conf_path)]

    def _ready(self) -> bool:
        try:
            status, _ = _http("GET", f"{self.url}/ping", timeout=1.0)
        except OSError:
            return False
        return status == 204

    # -- v1 HTTP API ------------------------------------------------------------------------

    def create_database(self, db: str) -> None:
        self.query(f"CREATE DATABASE {quote_ident(db)}")

    def drop_database(self, db: str) -> None:
        self.query(f"DROP DATABASE {quote_ident(db)}")

    def write(
        self,
        lines: str | Iterable[str],
        db: str,
        precision: str = "ns",
        rp: str | None = None,
    ) -> None:
        """POST /write; raises HTTPStatusError (with InfluxDB's message) on anything but 2xx."""
        body = lines if isinstance(lines, str) else "\n".join(lines)
        params = {"db": db, "precision": precision}
        if rp:
            params["rp"] = rp
        _http_ok("POST", f"{self.url}/write?{urllib.parse.urlencode(params)}", body.encode())

    def query(self, q: str, db: str | None = None) -> list[dict[str, object]]:
        """Run InfluxQL; one dict per row (column -> value, plus the series' tags under GROUP BY).

        Times are integer nanoseconds (epoch=ns). Mind that JSON drops the float/int distinction:
        a float field holding 1.0 comes back as the int 1.
        """
        params = {"q": q, "epoch": "ns"}
        if db:
            params["db"] = db
        body = _http_ok("POST", f"{self.url}/query", urllib.parse.urlencode(params).encode(), _FORM)
        doc = json.loads(body)
        if "error" in doc:
            raise QueryError(f"{q!r}: {doc['error']}")
        rows: list[dict[str, object]] = []
        for result in doc.get("results", []):
            if "error" in result:
                raise QueryError(f"{q!r}: {result['error']}")
            for series in result.get("series", []):
                columns = series["columns"]
                tags = series.get("tags") or {}
                for values in series.get("values", []):
                    row: dict[str, object] = dict(zip(columns, values, strict=True))
                    row.update(tags)
                    rows.append(row)
        return rows

    def count(self, measurement: str, db: str, field: str = "*") -> int:
        """Number of points of a measurement (all series).

        With field="*" this is the largest per-field count, which equals the number of points
        whenever one field is present in every point (true for every taza measurement).
        """
        selector = "*" if field == "*" else quote_ident(field)
        rows = self.query(f"SELECT count({selector}) FROM {quote_ident(measurement)}", db)
        counts = [
            v
            for row in rows
            for k, v in row.items()
            if k.startswith("count") and isinstance(v, int | float)
        ]
        return int(max(counts)) if counts else 0


def quote_ident(name: str) -> str:
    """An InfluxQL double-quoted identifier (database, measurement, field)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class VictoriaMetrics(Server):
    """VictoriaMetrics single-node: accepts line protocol on /write and /api/v2/write.

    Measured on 1.79.5: it stores `{measurement}_{field}` per numeric field, millisecond
    timestamps (nanoseconds are truncated, so points 1 ns apart collapse into one millisecond),
    answers 204 to a write before the rows are searchable (~1 s later, on an internal timer that
    /internal/force_flush does not shorten), keeps identical duplicate samples unless
    `dedup=True`, and ignores rows outside the retention window (set to 100 years here).
    """

    name = "victoria-metrics"
    binary = "victoria-metrics"
    _VISIBILITY_DELAY = 1.1

    def __init__(self, data_dir: Path, port: int | None = None, *, dedup: bool = False) -> None:
        super().__init__(data_dir, port)
        self.dedup = dedup

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _command(self, binary: str) -> list[str]:
        cmd = [
            binary,
            f"-storageDataPath={self.data_dir / 'data'}",
            f"-httpListenAddr={self.host}:{self.port}",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-search.disableCache",
            "-memory.allowedPercent=20",
            "-loggerLevel=INFO",
        ]
        if self.dedup:
            cmd.append("-dedup.minScrapeInterval=1ms")
        return cmd

    def _ready(self) -> bool:
        try:
            status, _ = _http("GET", f"{self.url}/health", timeout=1.0)
        except OSError:
            return False
        return status == 200

    def force_flush(self) -> None:
        """Make everything written so far searchable.

        /internal/force_flush alone is not enough on 1.79.5 (measured): rows become searchable
        on a ~1 s timer, so this also waits out one period and for pending rows to drain.
        """
        _http_ok("GET", f"{self.url}/internal/force_flush")
        time.sleep(self._VISIBILITY_DELAY)
        deadline = time.monotonic() + 10
        while (self.metric('vm_pending_rows{type="storage"}') or 0) > 0:
            if time.monotonic() > deadline:
                raise ServerError("victoria-metrics kept pending rows for 10 s")
            time.sleep(0.05)

    def export(
        self,
        match: str = '{__name__=~".+"}',
        start: str | None = None,
        end: str | None = None,
    ) -> list[dict[str, object]]:
        """POST /api/v1/export: one dict per series with `metric`, `values`, `timestamps` (ms)."""
        params = {"match[]": match}
        if start is not None:
            params["start"] = start
        if end is not None:
            params["end"] = end
        body = _http_ok(
            "POST",
            f"{self.url}/api/v1/export",
            urllib.parse.urlencode(params).encode(),
            _FORM,
            timeout=60,
        )
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def sample_count(self, match: str = '{__name__=~".+"}') -> int:
        total = 0
        for series in self.export(match):
            values = series.get("values")
            total += len(values) if isinstance(values, list) else 0
        return total

    def wait_samples(self, match: str, at_least: int, timeout: float = 15.0) -> int:
        """Poll until `match` has at least `at_least` samples; return the count (or the last
        count seen after the timeout — the caller's assertion then shows what is missing)."""
        deadline = time.monotonic() + timeout
        while True:
            n = self.sample_count(match)
            if n >= at_least or time.monotonic() > deadline:
                return n
            time.sleep(0.1)

    def metric(self, name: str) -> float | None:
        """A value from its own /metrics, e.g. `vm_rows_ignored_total` (summed over all label
        sets) or `vm_rows_ignored_total{reason="small_timestamp"}` (exactly that series)."""
        text = _http_ok("GET", f"{self.url}/metrics").decode()
        return metrics.series(text).get(name) if "{" in name else metrics.totals(text).get(name)
