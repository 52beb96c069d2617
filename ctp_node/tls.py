"""DICOM TLS: the ``ssl.SSLContext`` of the TLS listener and of each TLS destination, and the
checks of the PEM files they are built from.

Profile: the BCP 195 Non-Downgrading TLS Secure Transport Connection Profile (DICOM PS3.15
B.9), the one DCMTK uses by default (``+py``). TLS 1.2 or newer only, no compression, no
renegotiation; in TLS 1.2 only forward-secret AEAD cipher suites (:data:`BCP195_ND_CIPHERS`);
the TLS 1.3 suites stay allowed (all of them are AEAD and forward-secret). The listener
offers the ECDHE suites only: the DHE ones would need Diffie-Hellman parameters, and every
BCP 195 client supports TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 (RFC 9325 4.2). DCMTK 3.6.7's
``+py`` negotiates TLS 1.3 with the node either way; a TLS 1.2 client (``openssl s_client
-tls1_2``) gets ECDHE-RSA-AES128-GCM-SHA256, and CBC suites or TLS 1.1 are refused.

Either side verifies the other's certificate against a configured CA bundle, never against
the system's store: a hospital's DICOM peers are vouched for by the hospital's own CA.

A refused handshake (no certificate, a certificate from another CA, a plain DICOM connection
to the TLS port) is logged on one line with the peer's address and the reason; no traceback.

This module builds contexts and reads files; it opens no connection (``receive/`` and
``send/`` do).
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

log = logging.getLogger(__name__)

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2

#: The TLS 1.2 cipher suites of BCP 195 non-downgrading (RFC 9325 4.2, as DCMTK 3.6.7 lists
#: them for ``+py``), in OpenSSL's names: ephemeral (EC)DH key exchange, AES-GCM.
BCP195_ND_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",  # TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        "ECDHE-RSA-AES128-GCM-SHA256",  # TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        "ECDHE-ECDSA-AES256-GCM-SHA384",  # TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        "ECDHE-RSA-AES256-GCM-SHA384",  # TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
        "DHE-RSA-AES128-GCM-SHA256",  # TLS_DHE_RSA_WITH_AES_128_GCM_SHA256
        "DHE-RSA-AES256-GCM-SHA384",  # TLS_DHE_RSA_WITH_AES_256_GCM_SHA384
    ]
)

#: Seconds a server-side handshake may take on a socket without a timeout of its own. The
#: node's listener hands a TLS connection to its own thread once its ClientHello arrives and
#: bounds the handshake by ``node.request_timeout_s`` (:mod:`ctp_node.receive.listener`); this
#: is the limit for any other server built on these contexts (pynetdicom's own handshakes in
#: its accept thread).
HANDSHAKE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ServerTLS:
    """The TLS listener's files and whether callers must present a certificate.

    Attributes
    ----------
    certificate : PEM file with the node's certificate (its chain may follow it).
    private_key : PEM file with the certificate's private key, unencrypted.
    ca_certificates : PEM bundle of the CAs whose certificates callers may present; ``None``
        when callers are not asked for one.
    require_client_certificate : refuse a caller without a certificate signed by one of
        ``ca_certificates``.
    """

    certificate: Path
    private_key: Path
    ca_certificates: Path | None = None
    require_client_certificate: bool = True


@dataclass(frozen=True)
class ClientTLS:
    """How the node connects to a TLS destination.

    Attributes
    ----------
    ca_certificates : PEM bundle of the CAs that may have signed the destination's certificate.
    certificate, private_key : the node's client certificate and its unencrypted key, for a
        destination that asks for one; both or neither.
    verify_host_name : check that the destination's certificate names the configured host (a
        DNS name or IP address in its subjectAltName).
    """

    ca_certificates: Path
    certificate: Path | None = None
    private_key: Path | None = None
    verify_host_name: bool = True


class _HandshakeReporting(ssl.SSLSocket):
    """An SSL socket whose failed handshake is reported by its context, on one line."""

    def do_handshake(self, block: bool = False) -> None:
        context = self.context
        peer = _peer(self)  # before the handshake: a peer that gives up may be gone after it
        bounded = self.server_side and self.gettimeout() is None
        if bounded:
            self.settimeout(HANDSHAKE_TIMEOUT_S)
        try:
            super().do_handshake(block)
        except OSError as exc:  # ssl.SSLError is an OSError; so are resets and timeouts
            if isinstance(context, _ReportingContext):
                context.handshake_failed(peer, handshake_failure_reason(exc))
            raise
        finally:
            if bounded:
                self.settimeout(None)

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        try:
            return super().recv(buflen, flags)
        except ssl.SSLError as exc:
            # In TLS 1.3 a server refuses the client's certificate (or its absence) after the
            # client's handshake is done: the alert comes with the first answer.
            context = self.context
            if isinstance(context, _ReportingContext) and not context.listener:
                context.last_failure = handshake_failure_reason(exc)
            raise


class _ReportingContext(ssl.SSLContext):
    """An ``SSLContext`` that reports each failed handshake: the listener's logs it and hands
    it on to ``on_refused``; a destination's keeps the reason for the sender's message."""

    listener = False
    on_refused: Callable[[str, str], None] | None = None
    last_failure: str | None = None

    def handshake_failed(self, peer: str, reason: str) -> None:
        self.last_failure = reason
        if not self.listener:  # a destination's refusal is the sender's to report
            return
        log.warning("TLS connection from %s refused: %s", peer, reason)
        try:
            if self.on_refused is not None:
                self.on_refused(peer, reason)
        except Exception as exc:  # recording must not change what the caller sees
            log.error("could not record the refused TLS connection from %s: %s", peer, exc)


def _peer(sock: ssl.SSLSocket) -> str:
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return "an unknown address"
    return f"{host}:{port}"


def _profile(context: ssl.SSLContext) -> None:
    context.minimum_version = MINIMUM_VERSION
    context.set_ciphers(BCP195_ND_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.sslsocket_class = _HandshakeReporting


def server_context(
    tls: ServerTLS, on_refused: Callable[[str, str], None] | None = None
) -> ssl.SSLContext:
    """The TLS listener's context (BCP 195 non-downgrading).

    Parameters
    ----------
    tls : the listener's files.
    on_refused : called as ``on_refused(peer_address, reason)`` after a refused handshake has
        been logged, e.g. to record it; its errors are logged, never raised.

    Raises
    ------
    OSError, ssl.SSLError : a file cannot be read or does not hold what it should (use
        :func:`pem_problems` first for a message a user can act on).
    """
    context = _ReportingContext(ssl.PROTOCOL_TLS_SERVER)
    _profile(context)
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    context.load_cert_chain(tls.certificate, tls.private_key)
    if tls.ca_certificates is not None:
        context.load_verify_locations(cafile=tls.ca_certificates)
        context.verify_mode = (
            ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL
        )
    elif tls.require_client_certificate:
        raise ValueError("require_client_certificate needs the CAs that sign callers' certificates")
    else:
        context.verify_mode = ssl.CERT_NONE
    context.listener = True
    context.on_refused = on_refused
    return context


def client_context(tls: ClientTLS) -> ssl.SSLContext:
    """A context for one association with a TLS destination (BCP 195 non-downgrading).

    The destination's certificate must be signed by one of ``tls.ca_certificates`` (the
    system's CAs are not trusted) and, with ``verify_host_name``, name the host. Build one per
    association: the files are read again, so renewed certificates take effect at once, and
    :func:`last_handshake_failure` tells why this association's handshake failed.

    Raises
    ------
    OSError, ssl.SSLError : a file cannot be read or does not hold what it should.
    """
    context = _ReportingContext(ssl.PROTOCOL_TLS_CLIENT)
    _profile(context)
    context.load_verify_locations(cafile=tls.ca_certificates)
    if tls.certificate is not None and tls.private_key is not None:
        context.load_cert_chain(tls.certificate, tls.private_key)
    context.check_hostname = tls.verify_host_name
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def last_handshake_failure(context: ssl.SSLContext) -> str | None:
    """Why the latest handshake made with ``context`` failed; ``None`` if none did."""
    return getattr(context, "last_failure", None)


#: Hints for OpenSSL's reasons that a user meets when two DICOM peers disagree.
_HINTS = {
    "WRONG_VERSION_NUMBER": "not TLS; a plain DICOM connection to the TLS port?",
    "HTTP_REQUEST": "an HTTP request, not DICOM over TLS",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the caller presented no client certificate",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the peer requires a client certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "the peer does not trust this certificate's CA",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the peer refused this certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the peer says this certificate has expired",
    "UNSUPPORTED_PROTOCOL": "the peer offers only TLS versions older than 1.2",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version in common; 1.2 or newer is needed",
    "NO_SHARED_CIPHER": "no cipher suite in common; BCP 195 non-downgrading needs ECDHE with "
    "AES-GCM",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the peer ended the handshake: no cipher or version in "
    "common, or it refused a certificate",
}


def handshake_failure_reason(exc: BaseException) -> str:
    """One line saying why a TLS handshake failed, from the exception ``ssl`` raised."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {str(exc.verify_message).rstrip('.')}"
    if isinstance(exc, (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError)):
        return "the peer closed the connection during the handshake"
    if isinstance(exc, TimeoutError):
        return f"no TLS handshake within {HANDSHAKE_TIMEOUT_S:.0f} s"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        reason = str(exc.reason)
        hint = _HINTS.get(reason)
        text = reason.lower().replace("_", " ")
        return f"{text}: {hint}" if hint else text
    return str(exc) or type(exc).__name__


# --------------------------------------------------------------------------------------------
# Checking the files


@dataclass(frozen=True)
class PemProblem:
    """A problem with one of a TLS section's files.

    Attributes
    ----------
    key : the section's key naming the file (``certificate``, ``private_key``,
        ``ca_certificates``).
    message : what is wrong, in a sentence a user can act on.
    lapsed : the file is fine but a certificate in it has expired or is not valid yet: a
        matter of time, which a running node meets too, rather than of the configuration.
    """

    key: str
    message: str
    lapsed: bool = False


def pem_problems(
    certificate: Path | None,
    private_key: Path | None,
    ca_certificates: Path | None,
    now: dt.datetime | None = None,
) -> list[PemProblem]:
    """Every problem with a TLS section's PEM files: unreadable, not PEM, an encrypted key,
    a key that is not the certificate's, a certificate that has expired or is not valid yet,
    a CA bundle without certificates. ``None`` files are not checked."""
    now = now or dt.datetime.now(dt.UTC)
    problems: list[PemProblem] = []
    leaf = None
    if certificate is not None:
        certificates, problem = _read_certificates(certificate, "certificate")
        if problem:
            problems.append(problem)
        else:
            leaf = certificates[0]
            problems.extend(_validity("certificate", leaf, now, "the certificate"))
    key = None
    if private_key is not None:
        key, problem = _read_private_key(private_key)
        if problem:
            problems.append(problem)
    if leaf is not None and key is not None:
        if _public_der(key.public_key()) != _public_der(leaf.public_key()):
            problems.append(
                PemProblem(
                    "private_key",
                    f"{private_key} is not the private key of the certificate {certificate} "
                    f"({leaf.subject.rfc4514_string()}); give the key the certificate was "
                    "issued for",
                )
            )
        else:
            try:  # OpenSSL may still refuse what cryptography reads (a key type, a chain)
                ssl.create_default_context().load_cert_chain(certificate, private_key)
            except ssl.SSLError as exc:
                problems.append(PemProblem("certificate", f"OpenSSL refuses it: {exc.reason}"))
    if ca_certificates is not None:
        cas, problem = _read_certificates(ca_certificates, "ca_certificates")
        if problem:
            problems.append(problem)
        else:
            for ca in cas:
                name = f"the CA certificate {ca.subject.rfc4514_string()}"
                problems.extend(_validity("ca_certificates", ca, now, name))
    return problems


def _read(path: Path, key: str) -> tuple[bytes, PemProblem | None]:
    try:
        return path.read_bytes(), None
    except FileNotFoundError:
        return b"", PemProblem(key, f"no file at {path}")
    except IsADirectoryError:
        return b"", PemProblem(key, f"{path} is a folder; expected a PEM file")
    except PermissionError:
        return b"", PemProblem(key, f"{path} cannot be read by this user (permission denied)")
    except OSError as exc:
        return b"", PemProblem(key, f"cannot read {path}: {exc.strerror or exc}")


def _read_certificates(path: Path, key: str) -> tuple[list[x509.Certificate], PemProblem | None]:
    data, problem = _read(path, key)
    if problem:
        return [], problem
    try:
        return x509.load_pem_x509_certificates(data), None
    except ValueError:
        return [], PemProblem(key, f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")


def _read_private_key(path: Path):  # type: ignore[no-untyped-def]
    data, problem = _read(path, "private_key")
    if problem:
        return None, problem
    try:
        return serialization.load_pem_private_key(data, password=None), None
    except TypeError:  # encrypted
        return None, PemProblem(
            "private_key",
            f"{path} is encrypted with a password; the node starts unattended, so store the "
            "key unencrypted and readable only by the node's user",
        )
    except (ValueError, UnsupportedAlgorithm):
        return None, PemProblem(
            "private_key", f"{path} holds no PEM private key (-----BEGIN PRIVATE KEY-----)"
        )


def _validity(key: str, cert: x509.Certificate, now: dt.datetime, name: str) -> list[PemProblem]:
    if cert.not_valid_after_utc < now:
        when = f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        return [PemProblem(key, f"{name} expired on {when}; renew it", lapsed=True)]
    if cert.not_valid_before_utc > now:
        when = f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        return [
            PemProblem(
                key, f"{name} is not valid before {when}; check this machine's clock", lapsed=True
            )
        ]
    return []


def _public_der(public_key) -> bytes:  # type: ignore[no-untyped-def]
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def describe(certificate: Path) -> str:
    """``subject, valid until …`` of the certificate in a PEM file (for a start-up log line)."""
    cert = x509.load_pem_x509_certificates(certificate.read_bytes())[0]
    return f"{cert.subject.rfc4514_string()}, valid until {cert.not_valid_after_utc:%Y-%m-%d} UTC"
