"""Admission: which associations and presentation contexts the node accepts, and the trace
every refusal leaves (one log line with the peer's address, and a record that
``ctp-node status`` lists).

An association is refused when it calls another AE title than ``node.ae_title``, when its
caller is not on ``node.allowed_callers`` (if that list is not empty; an entry's host may be
an address, a network or a name: :mod:`ctp_node.receive.allow_list`), and when
``node.max_associations`` are busy (:mod:`ctp_node.receive.listener`, which also reports a
request pynetdicom cannot decode: an AE title with control characters or a backslash).
Within an accepted association, a presentation context is refused when its SOP class is a
service the node does not offer (a known SOP class that is not storage or Verification:
query, retrieve, worklist…), or when CT is proposed only in transfer syntaxes the node does
not accept (lossy ones). A private or unknown SOP class is accepted as storage
(:func:`accept_private_storage`).

Logs carry UIDs, AE titles and addresses only; AE titles lose their control characters first
(:func:`printable`; pynetdicom's own lines: :class:`ctp_node.receive.listener.ConnectionProblems`).
On the TLS listener, a caller whose TLS handshake fails (no certificate, one from another CA,
plain DICOM) is refused before any DICOM: logged by :mod:`ctp_node.tls`, recorded by
:func:`record_refused_connection`.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydicom.uid import UID
from pynetdicom import build_context, evt, register_uid, sop_class
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import StorageServiceClass

from ctp_node.receive.allow_list import AllowList
from ctp_node.store import Database
from ctp_node.store.ingest import record_rejection

if TYPE_CHECKING:
    from ctp_node.receive.listener import ConnectionGuard

log = logging.getLogger(__name__)

#: A-ASSOCIATE-RJ (result, source, reason) codes, PS3.8 9.3.4.
REJECT_CALLED_AE = (0x01, 0x01, 0x07)  # rejected-permanent, service user, called AE unknown
REJECT_CALLING_AE = (0x01, 0x01, 0x03)  # rejected-permanent, service user, calling AE unknown
REJECT_BUSY = (0x02, 0x03, 0x02)  # rejected-transient, service provider, local limit exceeded

#: Why a presentation context was refused, by its A-ASSOCIATE-AC result (PS3.8 9.3.3.2).
_CONTEXT_RESULTS = {
    0x01: "refused by the node (SCP/SCU role)",
    0x02: "refused by the node (no reason given)",
    0x03: "the node does not accept this SOP class (it accepts storage and Verification)",
    0x04: "the node does not accept it in these transfer syntaxes (CT is accepted only in "
    "uncompressed and lossless ones)",
}


@dataclass(frozen=True)
class Requestor:
    """Who asks: the calling and called AE titles (printable) and the peer's IP address."""

    ae_title: str
    called_ae_title: str
    address: str

    @classmethod
    def of(cls, assoc: Association) -> Requestor:
        requestor = assoc.requestor
        # Until negotiation, only the A-ASSOCIATE-RQ primitive holds the AE titles.
        primitive = requestor.primitive
        calling = primitive.calling_ae_title if primitive else requestor.ae_title
        called = primitive.called_ae_title if primitive else assoc.acceptor.ae_title
        return cls(printable(str(calling)), printable(str(called)), str(requestor.address))


def printable(text: str, keep: str = "") -> str:
    """``text`` without control (and other non-printing) characters except those in ``keep``,
    stripped of spaces: safe to put on a log line."""
    return "".join(
        c for c in text if c in keep or not unicodedata.category(c).startswith("C")
    ).strip()


def association_refusal(
    requestor: Requestor, node_ae_title: str, allowed: AllowList
) -> tuple[tuple[int, int, int], str] | None:
    """The A-ASSOCIATE-RJ codes and the reason to refuse ``requestor``, or None to accept."""
    if requestor.called_ae_title != node_ae_title.strip():
        return REJECT_CALLED_AE, (
            f"called AE title {requestor.called_ae_title!r} is not this node's "
            f"({node_ae_title}, node.ae_title)"
        )
    if not allowed.allows(requestor.ae_title, requestor.address):
        hosts = allowed.hosts_of(requestor.ae_title)
        return REJECT_CALLING_AE, (
            f"caller {requestor.ae_title!r} at {requestor.address} is not in node.allowed_callers"
            + (f" ({requestor.ae_title} is allowed from {hosts})" if hosts else "")
        )
    return None


def handle_requested(
    event: evt.Event,
    node_ae_title: str,
    allowed: AllowList,
    db: Database,
    guard: ConnectionGuard | None = None,
) -> None:
    """EVT_REQUESTED: refuse a wrong called AE title or a caller that is not allowed, or when
    every association slot is busy (``guard``); accept the private SOP classes the caller
    proposes as storage."""
    requestor = Requestor.of(event.assoc)
    refusal = association_refusal(requestor, node_ae_title, allowed)
    if refusal is None and guard is not None:
        busy = guard.admit(event.assoc)
        refusal = None if busy is None else (REJECT_BUSY, busy)
    if refusal is None:
        accept_private_storage(event.assoc)
        return
    codes, why = refusal
    reason = f"{why}; {_rejection(*codes)}"
    if guard is not None:  # one line and one record, at most so many a minute per peer
        guard.report_refusal(requestor, reason)
    else:
        report_refused_association(requestor, reason, db)  # before the answer
    event.assoc.acse.send_reject(*codes)
    # Wait until the A-ASSOCIATE-RJ is out, as pynetdicom does for its own rejections; else
    # the connection is closed under it and the peer sees an abort instead of the reason.
    event.assoc.kill()


def accept_private_storage(assoc: Association) -> list[str]:
    """Support, for this association, the private and unknown SOP classes its requestor
    proposes (a vendor's raw-data or "CSA non-image" objects sent with the study), in the
    transfer syntaxes proposed, as storage. Without this a whole-study send stops at the first
    such object: DCMTK storescu ends when a file has no accepted presentation context.

    pynetdicom only offers ``_config.UNRESTRICTED_STORAGE_SERVICE`` for this, which would also
    accept CT in lossy syntaxes; here the node's own contexts stay as they are, and only the
    classes pynetdicom does not know are added (registered as storage, so that its C-STOREs
    reach the node's handler, which records them as other objects). Returns their UIDs."""
    proposed = assoc.requestor.primitive.presentation_context_definition_list
    supported = {str(cx.abstract_syntax) for cx in assoc.acceptor.supported_contexts}
    added: dict[str, PresentationContext] = {}
    for context in proposed:
        uid = UID(str(context.abstract_syntax))
        known = hasattr(sop_class, uid.keyword) if uid.keyword else False
        if uid in supported or uid in added or known or not uid.is_valid:
            continue
        if uid not in _PRIVATE_REGISTERED:
            keyword = "PrivateStorage" + uid.replace(".", "_")
            register_uid(uid, keyword, StorageServiceClass)
            _PRIVATE_REGISTERED.add(uid)
        added[uid] = build_context(uid, [str(ts) for ts in context.transfer_syntax])
    if added:
        assoc.acceptor.supported_contexts = [*assoc.acceptor.supported_contexts, *added.values()]
        log.info("private SOP class(es) accepted as storage: %s", ", ".join(added))
    return list(added)


#: Private SOP class UIDs registered with pynetdicom as storage (once per process).
_PRIVATE_REGISTERED: set[str] = set()


def handle_rejected(event: evt.Event, db: Database) -> None:
    """EVT_REJECTED: pynetdicom refused by itself (``node.max_associations`` reached)."""
    requestor = Requestor.of(event.assoc)
    primitive = event.assoc.acceptor.primitive
    codes = (primitive.result, primitive.result_source, primitive.diagnostic)
    why = {
        REJECT_BUSY: "pynetdicom's own association limit was reached",
        REJECT_CALLED_AE: f"called AE title {requestor.called_ae_title!r} is not this node's",
    }.get(codes, "refused by pynetdicom")
    report_refused_association(requestor, f"{why}; {_rejection(*codes)}", db)


def handle_accepted(event: evt.Event, db: Database) -> None:
    """EVT_ACCEPTED: record each presentation context the node refused in the association."""
    refused = event.assoc.rejected_contexts
    if not refused:
        return
    requestor = Requestor.of(event.assoc)
    primitive = event.assoc.requestor.primitive
    proposed = {
        cx.context_id: cx.transfer_syntax
        for cx in (primitive.presentation_context_definition_list if primitive else [])
    }
    for context in refused:
        syntaxes = ", ".join(_named(ts) for ts in proposed.get(context.context_id, [])) or "?"
        reason = (
            f"presentation context {context.context_id} refused: {_named(context.abstract_syntax)}"
            f" proposed in {syntaxes}; "
            f"{_CONTEXT_RESULTS.get(context.result, f'result {context.result}')}"
        )
        log.warning("association from %s at %s: %s", requestor.ae_title, requestor.address, reason)
        _record(db, requestor, "context", reason)


def record_refused_connection(db: Database, peer: str, reason: str) -> None:
    """Record a connection refused before any DICOM was exchanged: a failed TLS handshake on
    the TLS listener (``peer`` as ``host:port``; :mod:`ctp_node.tls` has logged it)."""
    _record(
        db, Requestor("", "", peer.rpartition(":")[0] or peer), "tls", f"TLS handshake: {reason}"
    )


def _rejection(result: int, source: int, diagnostic: int) -> str:
    """An A-ASSOCIATE-RJ's codes with pynetdicom's names for them."""
    primitive = A_ASSOCIATE()
    primitive.result, primitive.result_source, primitive.diagnostic = result, source, diagnostic
    return (
        f"A-ASSOCIATE-RJ result {result} ({primitive.result_str}), "
        f"source {source} ({primitive.source_str}), reason {diagnostic} ({primitive.reason_str})"
    )


def report_refused_association(requestor: Requestor, reason: str, db: Database) -> None:
    """A refused association: one log line (peer, AE titles, reason) and one record."""
    log.warning(
        "association from %s at %s to %s refused: %s",
        requestor.ae_title,
        requestor.address,
        requestor.called_ae_title,
        reason,
    )
    _record(db, requestor, "association", reason)


def _record(db: Database, requestor: Requestor, kind: str, reason: str) -> None:
    try:
        record_rejection(
            db,
            kind=kind,
            calling_ae_title=requestor.ae_title,
            peer_address=requestor.address,
            status=0,
            reason=reason,
        )
    except Exception as exc:
        log.error("could not record the refused %s: %s", kind, exc)


def _named(uid: str) -> str:
    """``name (UID)`` for a UID pydicom knows, the UID alone otherwise."""
    name = UID(str(uid)).name
    return f"{name} ({uid})" if name != str(uid) else str(uid)
