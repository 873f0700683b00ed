"""`taza devices add|rotate|revoke|export|tls`: the files the broker profile reads.

No broker here (tests/test_broker_profile.py has a real mosquitto use these files); what a
city's operator relies on: secrets shown once and never at rest, mosquitto_passwd's format,
an ACL that does not grow with the fleet, refusals with a reason that change nothing.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.x509.oid import NameOID

from devices import ExitCode
from devstack.servers import find_binary
from operators.cli import main as taza
from operators.provision import passwd

FLEET = """\
device_id,kind,region,lat,lon,capacity_l,fraction,site,report_interval_s
eb-1,ecobox,almaty,43.2,76.9,240,plastic,residential,60
eb-2,ecobox,almaty,43.3,76.9,240,plastic,residential,60
rvm-7,rvm,astana,51.1,71.4,,,Mega,60
"""


def run(broker: Path, *args: str) -> Result:
    return CliRunner().invoke(taza, ["devices", *args, "--dir", str(broker), "--json"])


def ok(broker: Path, *args: str) -> dict[str, Any]:
    result = run(broker, *args)
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.csv"
    path.write_text(FLEET)
    return path


def _secrets(doc: dict[str, Any]) -> dict[str, str]:
    return {a["username"]: a["password"] for a in doc["accounts"]}


def _at_rest(broker: Path) -> bytes:
    return b"".join(p.read_bytes() for p in broker.rglob("*") if p.is_file())


def test_mosquitto_passwd_hashes_and_ours_are_the_same_format(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    subprocess.run(
        [find_binary("mosquitto_passwd"), "-b", "-c", str(pw), "alice", "s3cret"], check=True
    )
    theirs = passwd.parse(pw.read_text())["alice"]
    assert passwd.verify("s3cret", theirs)
    assert not passwd.verify("S3cret", theirs)
    ours = passwd.hash_password("s3cret")
    shape = r"\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}=="
    assert re.fullmatch(shape, theirs)
    assert re.fullmatch(shape, ours)
    assert ours != passwd.hash_password("s3cret"), "a fresh salt each time"


def test_add_shows_each_secret_once_and_stores_only_hashes(tmp_path: Path, fleet: Path) -> None:
    broker = tmp_path / "broker"
    doc = ok(broker, "add", "--fleet", str(fleet), "--account", "ingest.main",
             "--account", "crew.almaty", "--account", "operator.ops")  # fmt: skip
    secrets = _secrets(doc)
    assert set(secrets) == {"eb-1", "eb-2", "rvm-7", "ingest.main", "crew.almaty", "operator.ops"}
    assert {a["role"] for a in doc["accounts"]} == {"device", "ingest", "crew", "operator"}
    stored = passwd.parse((broker / "passwd").read_text())
    for user, secret in secrets.items():
        assert passwd.verify(secret, stored[user])
        assert secret.encode() not in _at_rest(broker), f"{user}'s secret is at rest"
    assert (broker / "passwd").stat().st_mode & 0o077 == 0o040, "owner rw, group r, others none"

    again = ok(broker, "add", "--fleet", str(fleet))
    assert again["accounts"] == []
    assert sorted(again["skipped"]) == ["eb-1", "eb-2", "rvm-7"]
    assert passwd.parse((broker / "passwd").read_text()) == stored, "nothing re-keyed"


def test_a_new_device_in_the_fleet_file_is_added_alone(tmp_path: Path, fleet: Path) -> None:
    broker = tmp_path / "broker"
    ok(broker, "add", "--fleet", str(fleet))
    before = passwd.parse((broker / "passwd").read_text())
    fleet.write_text(FLEET + "eb-3,ecobox,almaty,43.4,76.9,240,glass,residential,60\n")
    doc = ok(broker, "add", "--fleet", str(fleet))
    assert list(_secrets(doc)) == ["eb-3"]
    after = passwd.parse((broker / "passwd").read_text())
    assert {k: after[k] for k in before} == before


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["add", "eb-1"], "exists"),
        (["add", "eb-404"], "unknown_device"),
        (["add", "--account", "crew.Almaty"], "bad_name"),
        (["add", "--account", "admin"], "bad_name"),
        (["add", "--account", "crew.alerts"], "bad_name"),
        (["add", "--account", "ingest.a.b"], "bad_name"),
        (["rotate", "eb-404"], "not_found"),
        (["revoke", "eb-404"], "not_found"),
    ],
)
def test_refusals_have_a_reason_and_change_nothing(
    tmp_path: Path, fleet: Path, args: list[str], reason: str
) -> None:
    broker = tmp_path / "broker"
    ok(broker, "add", "--fleet", str(fleet))
    before = (broker / "passwd").read_bytes(), (broker / "acl").read_bytes()
    extra = ["--fleet", str(fleet)] if args[0] == "add" else []
    result = run(broker, *args, *extra)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert json.loads(result.stdout)["error"] == reason
    assert ((broker / "passwd").read_bytes(), (broker / "acl").read_bytes()) == before


def test_rotate_replaces_one_secret_and_revoke_removes_the_account(
    tmp_path: Path, fleet: Path
) -> None:
    broker = tmp_path / "broker"
    first = _secrets(ok(broker, "add", "--fleet", str(fleet), "--account", "crew.astana.night"))
    (rotated,) = ok(broker, "rotate", "eb-1")["accounts"]
    stored = passwd.parse((broker / "passwd").read_text())
    assert passwd.verify(rotated["password"], stored["eb-1"])
    assert not passwd.verify(first["eb-1"], stored["eb-1"])
    assert passwd.verify(first["eb-2"], stored["eb-2"]), "others keep theirs"

    assert "user crew.astana.night" in (broker / "acl").read_text()
    doc = ok(broker, "revoke", "eb-2", "crew.astana.night")
    assert doc["revoked"] == ["eb-2", "crew.astana.night"]
    assert doc["accounts"] == []
    stored = passwd.parse((broker / "passwd").read_text())
    assert set(stored) == {"eb-1", "rvm-7"}
    assert "crew.astana.night" not in (broker / "acl").read_text()


def test_the_acl_does_not_grow_with_the_fleet(tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    rows = [f"eb-{i},ecobox,almaty,43.2,76.9,240,plastic,residential,60" for i in range(2000)]
    big.write_text(FLEET.splitlines()[0] + "\n" + "\n".join(rows) + "\n")
    one = tmp_path / "one.csv"
    one.write_text(FLEET.splitlines()[0] + "\n" + rows[0] + "\n")
    acls = []
    for name, f in (("small", one), ("large", big)):
        ok(tmp_path / name, "add", "--fleet", str(f), "--account", "crew.almaty")
        acls.append((tmp_path / name / "acl").read_text())
    assert acls[0] == acls[1]
    acl = acls[0]
    assert "pattern write taza/v1/+/+/%u/fill" in acl
    assert "%c" not in acl, "never keyed on the client id a device chooses"
    crew = acl[acl.index("user crew.almaty") :]
    assert "topic read taza/v1/alerts/almaty/#" in crew
    assert "topic deny taza/v1/+/+/crew.almaty/#" in crew, "the device pattern is denied to it"


def test_export_writes_the_production_profile_for_this_directory(
    tmp_path: Path, fleet: Path
) -> None:
    broker = tmp_path / "broker"
    ok(broker, "add", "eb-1", "--fleet", str(fleet), "--account", "ingest.main")
    doc = ok(broker, "export", "--fleet", str(fleet))
    conf = (broker / "mosquitto.conf").read_text()
    active = [line for line in conf.splitlines() if line and not line.startswith("#")]
    assert "allow_anonymous false" in active
    assert "allow_anonymous true" not in active
    assert [line for line in active if line.startswith("listener")] == ["listener 8883"]
    assert f"password_file {broker.resolve()}/passwd" in active
    assert f"acl_file {broker.resolve()}/acl" in active
    assert "/etc/mosquitto/taza" not in conf
    assert doc["devices_without_credentials"] == ["eb-2", "rvm-7"]
    assert doc["accounts_by_role"]["ingest"] == 1
    assert doc["tls"] == {"ca.crt": False, "server.crt": False, "server.key": False}


def test_tls_makes_a_ca_a_server_certificate_and_client_certificates(tmp_path: Path) -> None:
    broker = tmp_path / "broker"
    ok(broker, "tls", "--host", "broker.city.example", "--host", "10.0.0.5", "--client", "eb-1")
    tls = broker / "tls"
    ca_before = (tls / "ca.crt").read_bytes()
    ok(broker, "tls", "--client", "crew.almaty")
    assert (tls / "ca.crt").read_bytes() == ca_before, "the CA is made once"
    for key in ("ca.key", "server.key", "clients/eb-1.key", "clients/crew.almaty.key"):
        assert (tls / key).stat().st_mode & 0o777 == 0o600, key

    server = x509.load_pem_x509_certificate((tls / "server.crt").read_bytes())
    ca = x509.load_pem_x509_certificate(ca_before)
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.city.example"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    client = x509.load_pem_x509_certificate((tls / "clients" / "eb-1.crt").read_bytes())
    client.verify_directly_issued_by(ca)
    cn = client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "eb-1", "the CN is the user name the broker's ACL sees (mutual TLS)"
    ctx = ssl.create_default_context(cafile=str(tls / "ca.crt"))
    ctx.load_cert_chain(tls / "clients" / "eb-1.crt", tls / "clients" / "eb-1.key")


def test_secrets_never_appear_in_errors_or_help(tmp_path: Path, fleet: Path) -> None:
    broker = tmp_path / "broker"
    secrets = _secrets(ok(broker, "add", "--fleet", str(fleet)))
    hashes = passwd.parse((broker / "passwd").read_text())
    failed = run(broker, "revoke", "eb-1", "--pid-file", str(tmp_path / "no.pid"))
    assert failed.exit_code == ExitCode.FAILURE
    doc = json.loads(failed.stdout)
    assert doc["error"] == "reload_failed"
    assert doc["revoked"] == ["eb-1"]
    assert "eb-1" not in passwd.parse((broker / "passwd").read_text()), "written all the same"
    (broker / "passwd").write_text((broker / "passwd").read_text() + "broken line\n")
    corrupt = run(broker, "rotate", "eb-2")
    assert corrupt.exit_code == ExitCode.FAILURE
    assert "passwd:3" in corrupt.output, "the line to fix is named"
    helps = [
        CliRunner().invoke(taza, ["devices", c, "--help"]).output
        for c in ("add", "rotate", "revoke", "export", "tls")
    ]
    for text in [failed.output, corrupt.output, *helps]:
        for s in [*secrets.values(), *hashes.values()]:
            assert s not in text
