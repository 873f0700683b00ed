"""Mutual TLS to the broker: taza-ingest with ``TAZA_MQTT_CERT_FILE``/``TAZA_MQTT_KEY_FILE``
against a real mosquitto that requires a client certificate and takes its CN as the username
(``use_identity_as_username``), certificates made by the test (trustme).

With the certificate the service subscribes and stores what a device publishes; without it the
broker refuses the handshake, the service says so in its log and never becomes ready.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from devices.topics import format_topic
from devstack.ingest_process import http_get, wait_until
from devstack.publisher import fill_payload
from devstack.servers import InfluxDB1, Mosquitto, find_binary
from tests.conftest import MakeIngest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def pem_files(tmp: Path) -> dict[str, Path]:
    ca = trustme.CA()
    names = ("ca", "server", "server-key", "ingest", "ingest-key", "device", "device-key")
    files = {name: tmp / f"{name}.pem" for name in names}
    ca.cert_pem.write_to_path(str(files["ca"]))
    for name, issued in (
        ("server", ca.issue_cert("127.0.0.1")),
        ("ingest", ca.issue_cert("taza-ingest.example", common_name="taza-ingest")),
        ("device", ca.issue_cert("eb-mtls-1.example", common_name="eb-mtls-1")),
    ):
        issued.cert_chain_pems[0].write_to_path(str(files[name]))
        issued.private_key_pem.write_to_path(str(files[f"{name}-key"]))
        files[f"{name}-key"].chmod(0o644)  # mosquitto runs as root here, the key is a test's
    return files


@pytest.mark.parametrize("client", ["lean", "paho"])
def test_client_certificate_as_identity(
    client: str,
    tmp_path: Path,
    make_mosquitto: Callable[..., Mosquitto],
    make_ingest: MakeIngest,
    influxd: InfluxDB1,
    influx_db: str,
) -> None:
    f = pem_files(tmp_path)
    broker = make_mosquitto(
        extra_conf=f"cafile {f['ca']}\ncertfile {f['server']}\nkeyfile {f['server-key']}\n"
        "require_certificate true\nuse_identity_as_username true\nallow_anonymous false\n"
    )
    url = f"mqtts://127.0.0.1:{broker.port}"
    proc = make_ingest(
        url,
        influxd.url,
        TAZA_INFLUX_DB=influx_db,
        TAZA_MQTT_CA_FILE=str(f["ca"]),
        TAZA_MQTT_CERT_FILE=str(f["ingest"]),
        TAZA_MQTT_KEY_FILE=str(f["ingest-key"]),
        TAZA_MQTT_CLIENT=client,
    ).start()
    now = int(time.time() * 1000)
    for seq in range(3):
        subprocess.run(
            [
                find_binary("mosquitto_pub"),
                *("-h", "127.0.0.1", "-p", str(broker.port), "--cafile", str(f["ca"])),
                *("--cert", str(f["device"]), "--key", str(f["device-key"]), "-q", "1"),
                *("-t", format_topic("almaty", "ecobox", "eb-mtls-1", "fill")),
                *("-m", fill_payload(seq, now - (3 - seq) * 1000, 40.0 + seq).decode()),
            ],
            check=True,
            timeout=10,
        )
    wait_until(lambda: influxd.count("fill", influx_db) == 3, 30, "3 rows via mutual TLS")
    assert "u'taza-ingest'" in broker.log_since_start()  # the CN became the username
    assert "retained_sync_failed" not in proc.log_tail(200)

    anonymous = make_ingest(
        url, influxd.url, TAZA_MQTT_CA_FILE=str(f["ca"]), TAZA_MQTT_CLIENT=client
    ).start(wait_ready=False)
    # lean logs the TLS error (mqtt_connect_failed); paho only an unspecified disconnect
    seen = ("mqtt_connect_failed", "mqtt_disconnected")
    wait_until(lambda: any(e in anonymous.log_tail(200) for e in seen), 30, "the refused handshake")
    assert http_get(anonymous.url + "/readyz")[0] == 503
    assert anonymous.proc is not None
    assert anonymous.proc.poll() is None  # retrying, not crashed
