"""C-STORE SCU: send files to one DICOM peer over one association."""

from __future__ import annotations

import datetime as dt
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from ctp_node.store.models import AuditOutcome, utcnow
from ctp_node.tls import ClientTLS, client_context, last_handshake_failure

if TYPE_CHECKING:
    from ctp_node.send.stow import StowPeer

log = logging.getLogger(__name__)

#: Warning statuses (PS3.4 B.2.3) mean "stored" too: coercion, elements discarded.
_STORED = {0x0000, 0xB000, 0xB006, 0xB007}


class PeerUnreachableError(ConnectionError):
    """No association could be established with the peer (the message says why)."""


@dataclass(frozen=True)
class Peer:
    """A DICOM peer to send to; over DICOM TLS when ``tls`` is given."""

    ae_title: str
    host: str
    port: int
    calling_ae_title: str = "CTPNODE"
    timeout_s: float = 30.0
    tls: ClientTLS | None = None

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    @property
    def address(self) -> str:
        """Where it listens, for the audit trail."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class SendOutcome:
    """What the peer answered for one file: stored, or why not; and which series it is of
    (for the audit trail; "" when the file does not say).

    Attributes
    ----------
    status : the C-STORE status; for STOW-RS the instance's FailureReason (a DIMSE status
        too) when the answer gives one, else the HTTP status code; ``None``: no answer.
    permanent : sending it again would fail the same way (a STOW-RS 4xx answer): the outbox
        gives up at once and asks for attention instead of retrying.
    """

    path: Path
    stored: bool
    status: int | None
    message: str
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    accession_number: str = ""
    modality: str = ""
    permanent: bool = False


@dataclass(frozen=True)
class SentAssociation:
    """One association with a peer (or one STOW-RS request), how it ended, and what became
    of each file.

    Attributes
    ----------
    started_at, ended_at : naive UTC, from the request to the end (release or abort).
    outcome : ``AuditOutcome``: "released"; "aborted" (it ended before every file was
        answered, or without a release); "refused" (A-ASSOCIATE-RJ); "unreachable" (no
        connection, or no answer to the request). For STOW-RS: "released" for HTTP 200 or
        202, "refused" for any other HTTP answer.
    reason : why, a sentence, when the outcome is not "released".
    outcomes : one per file, in order.
    """

    peer: Peer | StowPeer
    started_at: dt.datetime
    ended_at: dt.datetime
    outcome: str
    reason: str
    outcomes: tuple[SendOutcome, ...]


def send_files(peer: Peer, paths: Sequence[Path]) -> list[SendOutcome]:
    """Send files in one association; one outcome per file, in order.

    Raises
    ------
    PeerUnreachableError : the association could not be established.
    """
    sent = send_over_association(peer, paths)
    if sent.outcome in (AuditOutcome.REFUSED, AuditOutcome.UNREACHABLE):
        raise PeerUnreachableError(sent.reason)
    return list(sent.outcomes)


def send_over_association(peer: Peer, paths: Sequence[Path]) -> SentAssociation:
    """Send files in one association, and say how it went, also when it could not be
    established (every file then has an outcome "not sent").

    Presentation contexts are proposed for each file's own SOP class and transfer syntax (plus
    the uncompressed syntaxes), so files are sent as they are stored.
    """
    headers = [
        pydicom.dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS) for path in paths
    ]
    ae = client_ae(peer)
    contexts: dict[str, set[str]] = {}
    for ds in headers:
        syntaxes = contexts.setdefault(str(ds.SOPClassUID), set())
        syntaxes.update({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
        syntaxes.add(str(ds.file_meta.TransferSyntaxUID))
    for sop_class, syntaxes in contexts.items():
        ae.add_requested_context(sop_class, sorted(syntaxes))

    started_at = utcnow()
    assoc, outcome, reason = open_association(ae, peer)
    if assoc is None:
        return _not_established(peer, paths, headers, started_at, outcome, reason)
    outcomes: list[SendOutcome] = []
    try:
        for path in paths:
            outcomes.append(_send_one(assoc, Path(path)))
            if not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    answered_all = len(outcomes) == len(paths)
    for path in paths[len(outcomes) :]:
        outcomes.append(SendOutcome(Path(path), False, None, f"association with {peer} ended"))
    outcome, reason = AuditOutcome.RELEASED, ""
    if not (assoc.is_released and answered_all):
        outcome = AuditOutcome.ABORTED
        reason = (
            f"the association with {peer} ended without a release (aborted, timed out or the "
            "connection was lost)"
        )
    return SentAssociation(
        peer, started_at, utcnow(), outcome, reason, identified(outcomes, headers)
    )


def client_ae(peer: Peer) -> AE:
    """An AE that calls as ``peer.calling_ae_title`` and waits at most ``peer.timeout_s`` for
    the connection and for each answer."""
    ae = AE(ae_title=peer.calling_ae_title)
    ae.acse_timeout = peer.timeout_s
    ae.dimse_timeout = peer.timeout_s
    ae.network_timeout = peer.timeout_s
    ae.connection_timeout = peer.timeout_s
    return ae


def open_association(ae: AE, peer: Peer):  # type: ignore[no-untyped-def]
    """An association with ``peer`` (over TLS when ``peer.tls``) for ``ae``'s requested
    contexts: ``(association, "released", "")`` when established, else ``(None, outcome,
    reason)`` with the ``AuditOutcome`` ("refused" or "unreachable") and why, in a sentence."""
    tls_args = None
    if peer.tls is not None:
        try:  # read for each association: a renewed certificate is used at once
            tls_args = (client_context(peer.tls), peer.host)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            reason = f"the TLS files for {peer} cannot be used ({exc}); run ctp-node config check"
            return None, AuditOutcome.UNREACHABLE, reason
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, tls_args=tls_args)
    if not assoc.is_established:
        outcome = AuditOutcome.REFUSED if assoc.is_rejected else AuditOutcome.UNREACHABLE
        return None, outcome, _unreachable(peer, assoc, tls_args)
    disable_nagle(assoc)
    return assoc, AuditOutcome.RELEASED, ""


#: What is read of each file before sending: its SOP class, and its series for the audit.
HEADER_TAGS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "AccessionNumber",
    "Modality",
]


def identified(outcomes: list[SendOutcome], headers: list) -> tuple[SendOutcome, ...]:
    """``outcomes`` with the study, series, accession number and modality of each file."""
    return tuple(
        replace(
            outcome,
            study_instance_uid=str(ds.get("StudyInstanceUID", "") or ""),
            series_instance_uid=str(ds.get("SeriesInstanceUID", "") or ""),
            accession_number=str(ds.get("AccessionNumber", "") or ""),
            modality=str(ds.get("Modality", "") or ""),
        )
        for outcome, ds in zip(outcomes, headers, strict=True)
    )


def _not_established(  # type: ignore[no-untyped-def]
    peer: Peer, paths, headers, started_at: dt.datetime, outcome: str, reason: str
) -> SentAssociation:
    """How an association that was never established went: every file "not sent"."""
    not_sent = [SendOutcome(Path(p), False, None, reason) for p in paths]
    return SentAssociation(
        peer, started_at, utcnow(), outcome, reason, identified(not_sent, headers)
    )


def _unreachable(peer: Peer, assoc, tls_args) -> str:  # type: ignore[no-untyped-def]
    """Why no association was established with ``peer``, and what to check."""
    failure = last_handshake_failure(tls_args[0]) if tls_args else None
    if failure is not None:
        if "mismatch" in failure:
            advice = (
                f"its certificate does not name {peer.host}; have it reissued, or set the "
                "destination's tls.verify_host_name: false if it names no host"
            )
        elif "verify failed" in failure:
            advice = "the destination's tls.ca_certificates must hold the CA that signed it"
        elif "alert" in failure:  # the destination refused the node's certificate
            advice = (
                "give the destination's tls.certificate and tls.private_key: a client "
                "certificate signed by a CA the destination trusts"
            )
        else:
            advice = "check the destination's TLS settings and the client certificate it expects"
        return f"TLS handshake with {peer} failed: {failure}; {advice}"
    reason = "no association"
    if assoc.is_rejected:
        reason = f"association rejected ({assoc.acceptor.primitive.reason_str})"
    advice = "check that the destination is running, and its AE title, host and port"
    if tls_args:
        reason += " over TLS"
        advice += ", and that it accepts TLS and the node's client certificate"
    return f"{reason} with {peer}: {advice}"


def disable_nagle(assoc) -> None:  # type: ignore[no-untyped-def]
    """Send each PDU at once. pynetdicom leaves Nagle's algorithm on; with delayed ACKs every
    C-STORE then waits ~40 ms for its last small fragment (measured: 20 → 161 images/s)."""
    sock = assoc.dul.socket.socket if assoc.dul.socket is not None else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _send_one(assoc, path: Path) -> SendOutcome:  # type: ignore[no-untyped-def]
    try:
        status = assoc.send_c_store(path)
    except ValueError as exc:  # e.g. no accepted presentation context for this SOP class
        return SendOutcome(path, False, None, f"not sent: {exc}")
    if not status or "Status" not in status:
        return SendOutcome(path, False, None, "no response from the peer (timeout or abort)")
    code = int(status.Status)
    if code in _STORED:
        return SendOutcome(path, True, code, "stored")
    comment = str(status.get("ErrorComment", "") or "")
    return SendOutcome(path, False, code, f"refused with status 0x{code:04X} {comment}".strip())
