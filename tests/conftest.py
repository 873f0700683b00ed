"""Real-server fixtures: mosquitto, influxd 1.x and victoria-metrics on free loopback ports.

The servers and the taza-ingest process are driven by the installed ``devstack`` package
(devstack.servers, devstack.ingest_process), which bench/ and the demo use too.

Session fixtures (`mosquitto`, `influxd`, `victoria`) start on first use and stop at the end of
the run; tests that restart, kill or freeze a server take their own from `make_mosquitto`,
`make_influxd` or `make_victoria`. A missing binary fails the test with the install command;
a failing test shows the log tail of every server it used.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

import pytest

from devstack.ingest_process import IngestProcess
from devstack.servers import InfluxDB1, MissingBinary, Mosquitto, Server, VictoriaMetrics, free_port

#: The checkout the suite runs from (subprocesses that need a working directory use it).
REPO = Path(__file__).resolve().parents[1]

S = TypeVar("S", bound=Server)

_USED: pytest.StashKey[list[Server]] = pytest.StashKey()
_STARTED_AT: pytest.StashKey[float] = pytest.StashKey()


def _start(server: S) -> S:
    try:
        return server.start()
    except MissingBinary as exc:
        pytest.fail(str(exc), pytrace=False)


def _session_server(
    factory: pytest.TempPathFactory, make: Callable[[Path], S], name: str
) -> Iterator[S]:
    server = _start(make(factory.mktemp(name)))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """The broker for the whole run, from the repo's mosquitto.conf. Do not restart it."""
    yield from _session_server(tmp_path_factory, Mosquitto, "mosquitto")


@pytest.fixture(scope="module")
def module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A broker of this module's own, for modules that run taza-ingest with the alert stage: the
    retained alert topics it leaves behind must not reach the tests that share `mosquitto`."""
    yield from _session_server(tmp_path_factory, Mosquitto, "module-mosquitto")


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB1]:
    """InfluxDB 1.x for the whole run; use `influx_db` for a database of your own."""
    yield from _session_server(tmp_path_factory, InfluxDB1, "influxd")


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    """VictoriaMetrics for the whole run (shared: select your own series by label)."""
    yield from _session_server(tmp_path_factory, VictoriaMetrics, "victoria")


class ServerFactory(Generic[S]):
    """Calling it returns a fresh started server in its own temp dir; all stop after the test."""

    def __init__(
        self,
        cls: Callable[..., S],
        name: str,
        tmp_path_factory: pytest.TempPathFactory,
        used: list[Server],
    ) -> None:
        self._cls = cls
        self._name = name
        self._tmp = tmp_path_factory
        self._used = used
        self.servers: list[S] = []

    def __call__(self, **kwargs: Any) -> S:
        server = self._cls(self._tmp.mktemp(self._name), **kwargs)
        self.servers.append(server)
        self._used.append(server)
        return _start(server)

    def stop_all(self) -> None:
        errors: list[str] = []
        for server in self.servers:
            try:
                server.stop()
            except Exception as exc:
                errors.append(str(exc))
        if errors:
            pytest.fail("\n\n".join(errors), pytrace=False)


def _factory(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    cls: Callable[..., S],
    name: str,
) -> Iterator[ServerFactory[S]]:
    used = request.node.stash.setdefault(_USED, [])
    factory = ServerFactory(cls, name, tmp_path_factory, used)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def make_mosquitto(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerFactory[Mosquitto]]:
    """`make_mosquitto(extra_conf="...")` → a broker of this test's own, free to restart/kill."""
    yield from _factory(request, tmp_path_factory, Mosquitto, "mosquitto")


@pytest.fixture
def make_influxd(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerFactory[InfluxDB1]]:
    """`make_influxd()` → an influxd of this test's own, free to stop/kill/freeze."""
    yield from _factory(request, tmp_path_factory, InfluxDB1, "influxd")


@pytest.fixture
def make_victoria(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerFactory[VictoriaMetrics]]:
    """`make_victoria(dedup=True)` → a VictoriaMetrics of this test's own."""
    yield from _factory(request, tmp_path_factory, VictoriaMetrics, "victoria")


_db_counter = itertools.count(1)


@pytest.fixture
def influx_db(influxd: InfluxDB1, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database on the session influxd, named after the test; dropped afterwards."""
    stem = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:40]
    name = f"t{next(_db_counter)}_{stem}"
    influxd.create_database(name)
    yield name
    if influxd.running:
        influxd.drop_database(name)


# -- show the servers' logs when a test fails --------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    item.stash[_STARTED_AT] = time.monotonic()
    return (yield)


def _servers_of(item: pytest.Item) -> list[Server]:
    """Servers the test used: fixtures it received, factories' servers, and any server it
    started itself (e.g. `with Mosquitto(tmp_path) as m:`)."""
    found: list[Server] = []
    funcargs: dict[str, object] = getattr(item, "funcargs", {}) or {}
    for value in funcargs.values():
        if isinstance(value, Server):
            found.append(value)
        elif isinstance(value, ServerFactory):
            found.extend(value.servers)
    used: list[Server] = item.stash.get(_USED, [])
    found.extend(used)
    since = item.stash.get(_STARTED_AT, None)
    if since is not None:
        found.extend(s for s in list(Server._instances) if s.started_at and s.started_at >= since)
    unique: dict[int, Server] = {}
    for server in found:
        unique.setdefault(id(server), server)
    return list(unique.values())


_INGESTS = pytest.StashKey[list[IngestProcess]]()
MakeIngest = Callable[..., IngestProcess]


@pytest.fixture
def make_ingest(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[MakeIngest]:
    """``make_ingest(mqtt_url, influx_url, **TAZA_env)`` → a not yet started taza-ingest
    process with its own client id, data dir and HTTP port; stopped after the test, its log
    shown when the test fails."""
    made = request.node.stash.setdefault(_INGESTS, [])

    def make(mqtt_url: str, influx_url: str, **env: str) -> IngestProcess:
        n = len(made)
        proc = IngestProcess(
            tmp_path / f"ingest{n}",
            {
                "TAZA_MQTT_URL": mqtt_url,
                "TAZA_MQTT_CLIENT_ID": f"taza-test-{request.node.name[:40]}-{n}",
                "TAZA_INFLUX_URL": influx_url,
                **env,
            },
            free_port(),
        )
        made.append(proc)
        return proc

    yield make
    for proc in made:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        for server in _servers_of(item):
            if not server.log_path.exists():
                continue
            state = f"running, pid {server.pid}" if server.running else "not running"
            report.sections.append(
                (
                    f"{server.name} log tail ({server.log_path}, port {server.port}, {state})",
                    server.log_tail(),
                )
            )
        for ingest in item.stash.get(_INGESTS, []):
            report.sections.append((f"taza-ingest log ({ingest.log_path})", ingest.log_tail(80)))
    return report
