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
0xA700  refused: out of resources (disk below ``storage.min_free_bytes``)
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
import socket
from dataclasses import dataclass

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
from pynetdicom.transport import ThreadedAssociationServer

from ctp_node.receive.admission import (
    Caller,
    Requestor,
    handle_accepted,
    handle_closed,
    handle_data_received,
    handle_rejected,
    handle_requested,
    printable_pynetdicom_logs,
)
from ctp_node.receive.audit import AssociationTally
from ctp_node.receive.header import (
    CT_STORAGE_CLASSES,
    ReceivedHeader,
    identity_problem,
    read_header,
)
from ctp_node.receive.intake import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_DOES_NOT_MATCH_SOP_CLASS,
    STATUS_SUCCESS,
    Intake,
    Status,
)
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
    ae_title: str
    bind: str
    port: int
    allowed_callers: tuple[Caller, ...] = ()
    max_associations: int = 10
    acse_timeout_s: float = 30.0
    dimse_timeout_s: float = 60.0
    network_timeout_s: float = 60.0
    keep_other_objects: bool = False


def handle_store(event: evt.Event, intake: Intake, tally: AssociationTally) -> Status:
    """Check, write durably, record, count for the audit trail, return a status; never raise."""
    header, status = receive_object(event, intake)
    tally.count(event.assoc, header, status)
    return status


def receive_object(event: evt.Event, intake: Intake) -> tuple[ReceivedHeader | None, Status]:
    """The object's header (None if it cannot be decoded) and the status to answer."""
    sender = Requestor.of(event.assoc)
    try:
        data = event.encoded_dataset(include_meta=True)
    except Exception as exc:  # the PDU stream itself was unusable
        reason = f"unreadable data: {exc}"
        return None, intake.refuse(b"", sender, "", STATUS_CANNOT_UNDERSTAND, reason)
    try:
        header = read_header(event.dataset, event.request.AffectedSOPInstanceUID)
    except Exception as exc:
        reason = f"the data set cannot be decoded: {exc}"
        return None, intake.refuse(data, sender, "", STATUS_CANNOT_UNDERSTAND, reason)
    problem = identity_problem(header, str(event.context.abstract_syntax))
    if problem is not None:
        uid = header.sop_instance_uid
        return header, intake.refuse(data, sender, uid, STATUS_DOES_NOT_MATCH_SOP_CLASS, problem)
    if not header.is_ct:
        return header, intake.acknowledge_other(data, header, sender)
    return header, intake.store_ct(data, header, sender, str(event.context.transfer_syntax))


def handle_open(event: evt.Event) -> None:
    """Answer each PDU at once (see :func:`ctp_node.send.scu.disable_nagle` for why)."""
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket is not None else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def handle_echo(event: evt.Event) -> int:
    return STATUS_SUCCESS


def build_ae(settings: ListenerSettings) -> AE:
    """The node's application entity, configured once."""
    ae = AE(ae_title=settings.ae_title)
    # handle_requested refuses a wrong called AE title first, with a record; this is the net.
    ae.require_called_aet = True
    ae.maximum_associations = settings.max_associations
    ae.acse_timeout = settings.acse_timeout_s
    ae.dimse_timeout = settings.dimse_timeout_s
    ae.network_timeout = settings.network_timeout_s
    ae.maximum_pdu_size = 0  # no limit: fewer, larger PDUs for big CT images
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        sop_class = context.abstract_syntax
        syntaxes = (
            CT_TRANSFER_SYNTAXES if sop_class in CT_STORAGE_CLASSES else ALL_TRANSFER_SYNTAXES
        )
        ae.add_supported_context(sop_class, list(syntaxes))
    return ae


def start_listener(
    settings: ListenerSettings, spool: Spool, db: Database
) -> ThreadedAssociationServer:
    """Start listening in background threads; stop with ``server.shutdown()``."""
    ae = build_ae(settings)
    printable_pynetdicom_logs()
    intake = Intake(spool, db, settings.keep_other_objects)
    tally = AssociationTally(db)  # the audit trail
    requests: dict = {}  # A-ASSOCIATE-RQ bytes by association, until it is decoded or closed
    handlers = [
        (evt.EVT_CONN_OPEN, handle_open),
        (evt.EVT_DATA_RECV, handle_data_received, [requests]),
        (evt.EVT_CONN_CLOSE, handle_closed, [requests, db]),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [intake, tally]),
        (evt.EVT_REQUESTED, handle_requested, [settings.ae_title, settings.allowed_callers, db]),
        (evt.EVT_REJECTED, handle_rejected, [db]),
        (evt.EVT_ACCEPTED, handle_accepted, [db]),
        *tally.handlers(),
    ]
    server = ae.start_server((settings.bind, settings.port), block=False, evt_handlers=handlers)
    log.info("listening as %s on %s:%d", settings.ae_title, settings.bind, settings.port)
    return server
