"""A development CA and the certificates the broker profile needs (pyca ``cryptography``).

``tls/ca.crt`` + ``ca.key`` (made once, kept), ``tls/server.crt`` + ``server.key`` for the
broker's host names and addresses, and ``tls/clients/USER.crt`` + ``.key`` for mutual TLS,
whose CN is the user name the broker's ACL sees (``use_identity_as_username``). Keys are
ECDSA P-256 (small, fast handshakes on device hardware) and written 0600. For production a
city's own CA is better; these make a working TLS setup in one command and let the tests
check verification for real.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from operators.provision.errors import ProvisionError, Why

CA_DAYS = 3650
LEAF_DAYS = 825


_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "taza"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure_ca(
    tls_dir: Path, name: str = "taza development CA"
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA in ``tls_dir`` (made if missing): certificate and key."""
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    crt, keyf = tls_dir / "ca.crt", tls_dir / "ca.key"
    if crt.exists() and keyf.exists():
        try:
            cert = x509.load_pem_x509_certificate(crt.read_bytes())
            key = serialization.load_pem_private_key(keyf.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise ProvisionError(Why.BAD_FILE, f"cannot load the CA in {tls_dir}: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ProvisionError(Why.BAD_FILE, f"{keyf}: not an EC key")
        return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    _write_key(keyf, key)
    _write_cert(crt, cert)
    return cert, key


def _leaf(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    cn: str,
    *,
    server: bool,
    hosts: list[str],
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if hosts:
        names: list[x509.GeneralName] = []
        for h in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                names.append(x509.DNSName(h))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def server_cert(tls_dir: Path, hosts: list[str]) -> Path:
    """``server.crt``/``server.key`` for ``hosts`` (DNS names or IP addresses, first = CN)."""
    if not hosts:
        raise ProvisionError(Why.BAD_NAME, "a server certificate needs at least one --host")
    cert, key = _leaf(ensure_ca(tls_dir), hosts[0], server=True, hosts=hosts)
    _write_key(tls_dir / "server.key", key)
    _write_cert(tls_dir / "server.crt", cert)
    return tls_dir / "server.crt"


def client_cert(tls_dir: Path, username: str) -> Path:
    """``clients/USER.crt``/``.key``: CN = the user name (mutual TLS)."""
    cert, key = _leaf(ensure_ca(tls_dir), username, server=False, hosts=[])
    out = tls_dir / "clients"
    out.mkdir(exist_ok=True, mode=0o750)
    _write_key(out / f"{username}.key", key)
    _write_cert(out / f"{username}.crt", cert)
    return out / f"{username}.crt"
