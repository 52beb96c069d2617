"""The DICOM listener: C-ECHO, and C-STORE of every storage SOP class, each object written
durably (or recorded as not CT) before Success.

What is accepted (presentation contexts):

- CT Image Storage and Enhanced CT Image Storage in uncompressed and lossless transfer syntaxes
  only (:data:`CT_TRANSFER_SYNTAXES`), so that perfusion is computed from the values the
  scanner measured;
- every other storage SOP class pynetdicom knows, in every transfer syntax pydicom names, so
  that a whole study (dose report, localisers, CTA, MR…) sent in one go never fails for lack
  of a presentation context. Those objects are acknowledged, recorded in ``other_objects`` and
  kept only with ``ingest.keep_other_objects``;
- Verification.

Statuses returned by the C-STORE handler (PS3.4 B.2.3; 0x0110 and 0x0111 from PS3.7 C):

======  =====================================================================================
0x0000  CT: stored in the spool and recorded, or an identical resend of a recorded instance
        (nothing changes). Not CT: recorded in ``other_objects`` (and kept if configured)
0x0111  duplicate SOP Instance: the UID was received before with other bytes; the first is
        kept (DCMTK's storescu prints "Unknown Status: 0x111"; ``-d`` shows the ErrorComment)
0xA700  refused: out of resources (disk below ``storage.min_free_bytes``, or the spool's or
        the database's disk full): send again later
0xA900  data set does not match the SOP class, or lacks a valid UID
0xC000  cannot understand: the data set could not be decoded
0x0110  processing failure: the write or the database record failed; no file is left behind
======  =====================================================================================

Every refusal carries an ErrorComment, is logged on one line and recorded in the database
with its reason, and the bytes are quarantined. Refused associations (wrong called AE title,
caller not allowed, too many associations) and refused presentation contexts are logged and
recorded too (:mod:`ctp_node.receive.admission`).
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from ctp_node.receive.admission import (
    Requestor,
    handle_accepted,
    handle_rejected,
    handle_requested,
    printable,
)
from ctp_node.receive.allow_list import AllowList, Caller
from ctp_node.receive.audit import AssociationTally
from ctp_node.receive.header import CT_STORAGE_CLASSES, ReceivedHeader, identity_problem
from ctp_node.receive.intake import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_DOES_NOT_MATCH_SOP_CLASS,
    STATUS_SUCCESS,
    Intake,
    Received,
    Status,
)
from ctp_node.receive.listener import (
    ConnectionGuard,
    ConnectionLimits,
    GuardedServer,
    fold_pynetdicom_logs,
    start_guarded_server,
)
from ctp_node.receive.readable import Unreadable, read_received
from ctp_node.receive.spool import Spool
from ctp_node.store import Database

log = logging.getLogger(__name__)

JPEG_LOSSLESS_PROCESS14 = UID("1.2.840.10008.1.2.4.57")

#: Transfer syntaxes accepted for CT: uncompressed (preferred, in this order) and every
#: lossless compression that the pylibjpeg plugins decode.
CT_TRANSFER_SYNTAXES: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLosslessSV1,
    JPEG_LOSSLESS_PROCESS14,
    JPEGLSLossless,
    JPEG2000Lossless,
    RLELossless,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)


@dataclass(frozen=True)
class ListenerSettings:
    """The listener's configuration (``node:`` keys; meanings in
    :class:`ctp_node.config.node.NodeConfig`)."""

    ae_title: str
    bind: str
    port: int
    allowed_callers: tuple[Caller, ...] = ()
    max_associations: int = 10
    max_associations_per_caller: int = 8
    acse_timeout_s: float = 30.0
    dimse_timeout_s: float = 60.0
    network_timeout_s: float = 60.0
    keep_other_objects: bool = False
    max_pending_connections: int = 256
    request_timeout_s: float = 5.0
    idle_eviction_s: float = 10.0
    max_pdu_bytes: int = 4_194_304
    max_object_bytes: int = 2_147_483_648

    def limits(self) -> ConnectionLimits:
        return ConnectionLimits(
            max_associations=self.max_associations,
            max_associations_per_caller=self.max_associations_per_caller,
            max_pending_connections=self.max_pending_connections,
            request_timeout_s=self.request_timeout_s,
            idle_eviction_s=self.idle_eviction_s,
            network_timeout_s=self.network_timeout_s,
            acse_timeout_s=self.acse_timeout_s,
            max_pdu_bytes=self.max_pdu_bytes,
            max_object_bytes=self.max_object_bytes,
        )


def handle_store(event: evt.Event, intake: Intake, tally: AssociationTally) -> Status:
    """Check that the received file can be read back, move it durably into place, record it,
    count it for the audit trail, return a status; never raise."""
    header, status = receive_object(event, intake)
    tally.count(event.assoc, header, status)
    return status


def receive_object(event: evt.Event, intake: Intake) -> tuple[ReceivedHeader | None, Status]:
    """The object's header (None if it cannot be decoded) and the status to answer."""
    sender = Requestor.of(event.assoc)
    affected_uid = printable(str(event.request.AffectedSOPInstanceUID or ""))[:64]
    try:
        path = Path(event.dataset_path)
        # SHA-256 computed as the data set arrived (listener.py), when it was
        digest = getattr(getattr(event.request, "_dataset_file", None), "digest", "")
        received = Received(path, path.stat().st_size, digest)
    except (AttributeError, TypeError, OSError) as exc:  # nothing usable arrived
        reason = f"unreadable data: {exc}"
        refused = intake.refuse(
            Received(None), sender, affected_uid, STATUS_CANNOT_UNDERSTAND, reason
        )
        return None, refused
    try:
        header = read_received(path, affected_uid)
    except Unreadable as exc:
        return None, intake.refuse(received, sender, affected_uid, exc.status, exc.reason)
    problem = identity_problem(header, str(event.context.abstract_syntax))
    if problem is not None:
        uid = header.sop_instance_uid
        refused = intake.refuse(received, sender, uid, STATUS_DOES_NOT_MATCH_SOP_CLASS, problem)
        return header, refused
    if not header.is_ct:
        return header, intake.acknowledge_other(received, header, sender)
    ts = str(event.context.transfer_syntax)
    return header, intake.store_ct(received, header, sender, ts)


def handle_echo(event: evt.Event) -> int:
    return STATUS_SUCCESS


def build_ae(settings: ListenerSettings) -> AE:
    """The node's application entity, configured once."""
    ae = AE(ae_title=settings.ae_title)
    # handle_requested refuses a wrong called AE title first, with a record; this is the net.
    ae.require_called_aet = True
    ae.acse_timeout = settings.acse_timeout_s
    ae.dimse_timeout = settings.dimse_timeout_s
    ae.network_timeout = settings.network_timeout_s
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        sop_class = context.abstract_syntax
        syntaxes = (
            CT_TRANSFER_SYNTAXES if sop_class in CT_STORAGE_CLASSES else ALL_TRANSFER_SYNTAXES
        )
        ae.add_supported_context(sop_class, list(syntaxes))
    return ae


def start_listener(
    settings: ListenerSettings,
    spool: Spool,
    db: Database,
    ssl_context: ssl.SSLContext | None = None,
) -> GuardedServer:
    """Start listening in background threads; stop with ``server.shutdown()``.

    With ``ssl_context`` (:func:`ctp_node.tls.server_context`) the listener speaks DICOM TLS
    only: a caller whose handshake fails is refused before any DICOM is exchanged.
    """
    ae = build_ae(settings)
    fold_pynetdicom_logs()
    intake = Intake(spool, db, settings.keep_other_objects)
    allowed = AllowList(settings.allowed_callers)  # host names resolved now
    guard = ConnectionGuard(settings.limits(), db, spool.incoming)
    tally = AssociationTally(db)  # the audit trail
    handlers = [
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [intake, tally]),
        (
            evt.EVT_REQUESTED,
            handle_requested,
            [settings.ae_title, allowed, db, guard],
        ),
        (evt.EVT_REJECTED, handle_rejected, [db]),
        (evt.EVT_ACCEPTED, handle_accepted, [db]),
        *tally.handlers(),
    ]
    address = (settings.bind, settings.port)
    server = start_guarded_server(ae, address, handlers, guard, ssl_context)
    log.info(
        "listening as %s on %s:%d%s",
        settings.ae_title,
        *address,
        " (DICOM TLS)" if ssl_context else "",
    )
    return server
