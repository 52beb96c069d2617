"""Throw-away certificates for the DICOM TLS tests, made with ``cryptography``: a hospital CA,
the node's server certificate for 127.0.0.1/localhost, client certificates, a second
("wrong") CA with its own certificates, an expired certificate and one for another host.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOCALHOST = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]


@dataclass(frozen=True)
class Pair:
    """A certificate and its private key, as PEM files."""

    certificate: Path
    private_key: Path


@dataclass(frozen=True)
class TLSFiles:
    ca: Path  # the hospital CA's certificate
    server: Pair  # signed by ca, for 127.0.0.1 and localhost
    client: Pair  # signed by ca: a scanner's, or the node's towards PACS
    wrong_ca: Path  # another CA
    wrong_server: Pair  # signed by wrong_ca, for 127.0.0.1 and localhost
    wrong_client: Pair  # signed by wrong_ca
    expired: Pair  # signed by ca, expired yesterday
    other_host: Pair  # signed by ca, for pacs.example.org only (no 127.0.0.1)


class _Authority:
    def __init__(self, name: str) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
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
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )

    def issue(
        self,
        common_name: str,
        names: list[x509.GeneralName],
        *,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - dt.timedelta(days=1))
            .not_valid_after(not_after or now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key


def _write_certificate(path: Path, certificate: x509.Certificate) -> Path:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def _write_pair(folder: Path, name: str, issued) -> Pair:  # type: ignore[no-untyped-def]
    certificate, key = issued
    key_path = folder / f"{name}.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return Pair(_write_certificate(folder / f"{name}.pem", certificate), key_path)


def make_tls_files(folder: Path) -> TLSFiles:
    """Write every certificate and key the TLS tests use into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, wrong = _Authority("ctp-node test hospital CA"), _Authority("ctp-node test wrong CA")
    now = dt.datetime.now(dt.UTC)
    return TLSFiles(
        ca=_write_certificate(folder / "ca.pem", ca.certificate),
        server=_write_pair(folder, "server", ca.issue("ctp-node", LOCALHOST)),
        client=_write_pair(folder, "client", ca.issue("scanner", [])),
        wrong_ca=_write_certificate(folder / "wrong-ca.pem", wrong.certificate),
        wrong_server=_write_pair(folder, "wrong-server", wrong.issue("impostor", LOCALHOST)),
        wrong_client=_write_pair(folder, "wrong-client", wrong.issue("impostor", [])),
        expired=_write_pair(
            folder,
            "expired",
            ca.issue(
                "expired",
                LOCALHOST,
                not_before=now - dt.timedelta(days=60),
                not_after=now - dt.timedelta(days=1),
            ),
        ),
        other_host=_write_pair(
            folder, "other-host", ca.issue("pacs", [x509.DNSName("pacs.example.org")])
        ),
    )
