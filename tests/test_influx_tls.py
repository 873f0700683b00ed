"""InfluxDB over HTTPS with certificate verification, against a real influxd 1.6.7 serving a
certificate made by the test (trustme's CA).

With ``TAZA_INFLUX_CA_FILE`` the writer stores every message and the API's history reader
answers. Without it (the system's trust store does not know the test's CA) the service does not
crash and does not lose anything: each failed write is reported (log ``certificate verify
failed``, ``taza_write_errors_total{kind="unavailable"}``), the batches go to the durable spool
and are acknowledged from there, history answers 503 ``database_unavailable`` — and a restart
with the CA replays the spool into the database, exactly once.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from devices.topics import format_topic
from devstack.ingest_process import IngestProcess, http_get, wait_until
from devstack.publisher import Publisher, fill_payload
from devstack.servers import InfluxDB1, MissingBinary, Mosquitto, VictoriaMetrics, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

DB = "tls_test"
USER, PASSWORD = "taza", "pw-never-logged-7f3a"


class InfluxHTTPS(InfluxDB1):
    """influxd with ``https-enabled`` and a certificate for 127.0.0.1 signed by ``ca``, and
    ``auth-enabled``: the service's writer and history reader send credentials too."""

    def __init__(self, data_dir: Path, ca: trustme.CA) -> None:
        super().__init__(data_dir)
        self.ca = ca
        self.client_ssl = ssl.create_default_context()
        ca.configure_trust(self.client_ssl)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def config_text(self) -> str:
        cert, key = self.data_dir / "server.pem", self.data_dir / "server.key"
        issued = self.ca.issue_cert("127.0.0.1")
        issued.cert_chain_pems[0].write_to_path(str(cert))
        issued.private_key_pem.write_to_path(str(key))
        https = (
            f'  https-enabled = true\n  https-certificate = "{cert}"\n'
            f'  https-private-key = "{key}"\n  auth-enabled = true\n'
        )
        text = super().config_text()
        assert "[http]\n  enabled = true\n" in text
        return text.replace("[http]\n  enabled = true\n", "[http]\n  enabled = true\n" + https)

    def _ready(self) -> bool:
        try:
            return self._call("GET", "/ping")[0] == 204
        except OSError:
            return False

    def _call(self, method: str, path: str, data: bytes | None = None) -> tuple[int, bytes]:
        basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        headers = {"Authorization": f"Basic {basic}"}
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=5, context=self.client_ssl) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def rows(self, measurement: str) -> int:
        q = urllib.parse.urlencode(
            {"db": DB, "q": f'SELECT count("fill_pct") FROM "{measurement}"'}
        )
        status, body = self._call("POST", "/query", q.encode())
        assert status == 200, body
        series = json.loads(body)["results"][0].get("series", [])
        return int(series[0]["values"][0][1]) if series else 0


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def influx(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxHTTPS]:
    server = InfluxHTTPS(tmp_path_factory.mktemp("influxd-tls"), ca)
    try:
        server.start()
    except MissingBinary as exc:
        pytest.fail(str(exc), pytrace=False)
    # the first admin may be created without credentials (influxd 1.x), then they are needed
    q = f"q=CREATE USER {USER} WITH PASSWORD '{PASSWORD}' WITH ALL PRIVILEGES"
    status, body = server._call("POST", "/query", q.encode())
    assert status == 200, body
    status, body = server._call("POST", "/query", f"q=CREATE DATABASE {DB}".encode())
    assert status == 200, body
    yield server
    server.stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    try:
        server = Mosquitto(tmp_path_factory.mktemp("tls-mosquitto")).start()
    except MissingBinary as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


class VictoriaHTTPS(VictoriaMetrics):
    """VictoriaMetrics with ``-tls``: the v2 write API (influxdb-client) over HTTPS."""

    def __init__(self, data_dir: Path, ca: trustme.CA) -> None:
        super().__init__(data_dir)
        self.ca = ca
        self.client_ssl = ssl.create_default_context()
        ca.configure_trust(self.client_ssl)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def _command(self, binary: str) -> list[str]:
        cert, key = self.data_dir / "server.pem", self.data_dir / "server.key"
        issued = self.ca.issue_cert("127.0.0.1")
        issued.cert_chain_pems[0].write_to_path(str(cert))
        issued.private_key_pem.write_to_path(str(key))
        return [*super()._command(binary), "-tls", f"-tlsCertFile={cert}", f"-tlsKeyFile={key}"]

    def _ready(self) -> bool:
        try:
            return self._call("GET", "/health")[0] == 200
        except OSError:
            return False

    def _call(self, method: str, path: str, data: bytes | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=10, context=self.client_ssl) as resp:
            return resp.status, resp.read()

    def samples(self, device_id: str) -> int:
        self._call("GET", "/internal/force_flush")
        time.sleep(1.5)  # rows become searchable on a ~1 s timer (devstack.servers)
        match = urllib.parse.urlencode({"match[]": f'fill_fill_pct{{device_id="{device_id}"}}'})
        _, body = self._call("POST", "/api/v1/export", match.encode())
        return sum(len(json.loads(line)["values"]) for line in body.splitlines() if line.strip())


def ingest(
    path: Path, broker: Mosquitto, influx: InfluxHTTPS | VictoriaHTTPS, ca_file: Path | None
) -> IngestProcess:
    env = {
        "TAZA_MQTT_URL": broker.url,
        "TAZA_MQTT_CLIENT_ID": f"taza-test-tls-{path.name}",
        "TAZA_INFLUX_URL": influx.url,
        "TAZA_INFLUX_DB": DB,
        "TAZA_INFLUX_USER": USER,
        "TAZA_INFLUX_PASSWORD": PASSWORD,
        "TAZA_WRITE_ATTEMPTS": "1",
    }
    if ca_file is not None:
        env["TAZA_INFLUX_CA_FILE"] = str(ca_file)
    return IngestProcess(path, env, free_port())


def publish(broker: Mosquitto, device_id: str, n: int) -> None:
    pub = Publisher("127.0.0.1", broker.port, f"{device_id}-pub")
    now = int(time.time() * 1000)
    topic = format_topic("almaty", "ecobox", device_id, "fill")
    pub.publish((topic, fill_payload(i, now - (n - i) * 1000, 10.0 + i)) for i in range(n))
    pub.wait_all_acked(30)  # PUBACK: stored, or spooled
    pub.close()


def test_writes_and_history_over_https_with_the_ca(
    broker: Mosquitto, influx: InfluxHTTPS, ca: trustme.CA, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    proc = ingest(tmp_path / "with-ca", broker, influx, ca_file).start()
    try:
        publish(broker, "eb-tls-1", 30)
        wait_until(lambda: influx.rows("fill") >= 30, 30, "30 rows over https")
        assert influx.rows("fill") == 30
        status, body = http_get(proc.url + "/api/v1/devices/eb-tls-1/history", timeout=10)
        assert status == 200, body
        assert sum(p["readings"] for p in json.loads(body)["points"]) == 30
        assert proc.metrics().get('taza_write_errors_total{kind="unavailable"}', 0) == 0
    finally:
        assert proc.stop() == 0
    assert PASSWORD not in proc.log_path.read_text()


def test_without_the_ca_writes_fail_reported_spooled_and_replayed_later(
    broker: Mosquitto, influx: InfluxHTTPS, ca: trustme.CA, tmp_path: Path
) -> None:
    before = influx.rows("fill")
    data = tmp_path / "no-ca"
    proc = ingest(data, broker, influx, None).start()  # ready: the spool has room
    try:
        publish(broker, "eb-tls-2", 20)  # every message acknowledged...
        wait_until(
            lambda: proc.metrics().get("taza_spooled_batches_total", 0) >= 1, 30, "a spooled batch"
        )
        m = proc.metrics()
        assert m['taza_write_errors_total{kind="unavailable"}'] >= 1
        assert m["taza_database_up"] == 0
        assert influx.rows("fill") == before  # ...and none written unverified
        assert "certificate verify failed" in proc.log_tail(200).lower()
        status, body = http_get(proc.url + "/api/v1/devices/eb-tls-2/history", timeout=20)
        assert status == 503, body
        assert json.loads(body)["reason"] == "database_unavailable"
        assert http_get(proc.url + "/healthz")[0] == 200
        assert proc.proc is not None
        assert proc.proc.poll() is None
    finally:
        assert proc.stop() == 0
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    again = ingest(data, broker, influx, ca_file)
    again.env["TAZA_MQTT_CLIENT_ID"] = f"taza-test-tls-{data.name}"
    again.start()
    try:
        wait_until(lambda: influx.rows("fill") >= before + 20, 30, "the spool replayed")
        time.sleep(1)
        assert influx.rows("fill") == before + 20
    finally:
        assert again.stop() == 0


def test_v2_writer_verifies_too(
    broker: Mosquitto, ca: trustme.CA, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    vm = VictoriaHTTPS(tmp_path_factory.mktemp("victoria-tls"), ca)
    try:
        vm.start()
    except MissingBinary as exc:
        pytest.fail(str(exc), pytrace=False)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    try:
        for name, ca_or_none in (("v2-ca", ca_file), ("v2-no-ca", None)):
            proc = ingest(tmp_path / name, broker, vm, ca_or_none)
            proc.env.update(TAZA_INFLUX_API="v2", TAZA_ALERTS_ENABLED="false")
            proc.start()
            try:
                publish(broker, f"eb-{name}", 10)
                if ca_or_none is not None:
                    wait_until(lambda n=name: vm.samples(f"eb-{n}") == 10, 30, "10 samples")
                    assert proc.metrics().get('taza_write_errors_total{kind="unavailable"}', 0) == 0
                else:
                    wait_until(
                        lambda p=proc: p.metrics().get("taza_spooled_batches_total", 0) >= 1,
                        30,
                        "a spooled batch",
                    )
                    assert proc.metrics()['taza_write_errors_total{kind="unavailable"}'] >= 1
                    assert "certificate verify failed" in proc.log_tail(200).lower()
                    assert vm.samples(f"eb-{name}") == 0
            finally:
                assert proc.stop() == 0
    finally:
        vm.stop()
