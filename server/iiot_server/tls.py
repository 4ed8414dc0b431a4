"""TLS for the platform's two listeners (HTTPS and MQTT over TLS).

Either the operator gives a certificate and key (``--tls-cert``/``--tls-key``), or
:func:`development_certificates` makes a development CA on first start in
``<data dir>/tls/`` and a server certificate for the loopback names signed by it. Devices
trust the CA file (``ca.pem``), never the server certificate itself, so the server
certificate can be re-issued (another host name) without touching the devices. A second
start on the same directory reuses both, so devices that trust the CA keep working.

Keys are ECDSA P-256 (made in about a millisecond, accepted by OpenSSL, rustls and
mbedTLS alike) and written with 0600 permissions.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     files = development_certificates(Path(d))
...     files.ca_cert.name, files.cert.name, oct(files.key.stat().st_mode & 0o777)
('ca.pem', 'server.pem', '0o600')
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .clock import SystemClock

TLS_DIR = "tls"
CA_LIFETIME = timedelta(days=3650)
SERVER_CERT_LIFETIME = timedelta(days=825)
"""The longest server-certificate validity Apple's TLS stack accepts (macOS clients)."""
DEFAULT_SERVER_NAMES = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class TlsFiles:
    """What the listeners serve: a certificate chain and its key (PEM files), and the CA
    devices should trust (None when the operator gave a certificate of their own CA)."""

    cert: Path
    key: Path
    ca_cert: Path | None = None


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only (created 0600, never wider)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _subject_alternative_names(names: tuple[str, ...]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _new_ca(now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "iiotsim development CA")])
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))  # a device clock slightly behind
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _new_server_cert(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    names: tuple[str, ...],
    now: datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(min(now + SERVER_CERT_LIFETIME, ca.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_subject_alternative_names(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _server_cert_fits(
    path: Path, ca: x509.Certificate, names: tuple[str, ...], now: datetime
) -> bool:
    """Whether the stored server certificate was signed by ``ca``, covers ``names`` and
    is still valid for a while (a week): otherwise a new one is issued."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return False
    if cert.issuer != ca.subject or cert.not_valid_after_utc < now + timedelta(days=7):
        return False
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return set(_subject_alternative_names(names)) <= set(sans)


def development_certificates(
    data_dir: Path, names: tuple[str, ...] = DEFAULT_SERVER_NAMES
) -> TlsFiles:
    """The development CA and a server certificate for ``names`` in ``data_dir/tls/``:
    made on first call, reused after (the server certificate re-issued by the same CA
    when it lacks a name, or is about to expire). Certificates are dated by the wall
    clock (TLS peers check them against theirs), never by a simulated one."""
    directory = data_dir / TLS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, ca_key_path = directory / "ca.pem", directory / "ca-key.pem"
    cert_path, key_path = directory / "server.pem", directory / "server-key.pem"
    names = tuple(dict.fromkeys((*names, *DEFAULT_SERVER_NAMES)))
    now = SystemClock().now()
    if ca_path.exists() and ca_key_path.exists():
        ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
        loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{ca_key_path} is not the development CA's EC key")
        ca_key = loaded
    else:
        ca, ca_key = _new_ca(now)
        _write_private(ca_key_path, _pem_key(ca_key))
        ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    if not (key_path.exists() and _server_cert_fits(cert_path, ca, names, now)):
        cert, key = _new_server_cert(ca, ca_key, names, now)
        _write_private(key_path, _pem_key(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return TlsFiles(cert=cert_path, key=key_path, ca_cert=ca_path)
