"""The DICOM listener: C-ECHO and C-STORE of CT images, written durably before Success.

Statuses returned by the C-STORE handler (PS3.4 Annex B.2.3):

======  ==================================================================
0x0000  stored in the spool and recorded
0xA700  refused: out of resources (disk below ``storage.min_free_bytes``)
0xA900  data set does not match the SOP class, or lacks a valid UID
0xC000  cannot understand: the data set could not be decoded
0x0110  processing failure: the write or the database record failed
======  ==================================================================
Every refusal is recorded in the database with its reason, and the bytes are quarantined.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

from pydicom.uid import (
    UID,
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from ctp_node.receive.spool import Spool, SpoolFullError, is_valid_uid
from ctp_node.store import Database
from ctp_node.store.ingest import ReceivedInstance, record_instance, record_rejection

log = logging.getLogger(__name__)

JPEG_LOSSLESS_PROCESS14 = UID("1.2.840.10008.1.2.4.57")

#: Transfer syntaxes accepted for storage: uncompressed and every lossless compression that
#: the pylibjpeg plugins decode.
ACCEPTED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLosslessSV1,
    JPEG_LOSSLESS_PROCESS14,
    JPEGLSLossless,
    JPEG2000Lossless,
    RLELossless,
)
ACCEPTED_STORAGE_CLASSES: tuple[str, ...] = (CTImageStorage, EnhancedCTImageStorage)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DOES_NOT_MATCH_SOP_CLASS = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_PROCESSING_FAILURE = 0x0110


@dataclass(frozen=True)
class Caller:
    """An allowed calling AE; ``host`` None matches any address."""

    ae_title: str
    host: str | None = None


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


def handle_store(event: evt.Event, spool: Spool, db: Database) -> int:
    """Check, write durably, record, return a status; never raise."""
    calling = event.assoc.requestor.ae_title.strip()
    try:
        data = event.encoded_dataset(include_meta=True)
    except Exception as exc:  # the PDU stream itself was unusable
        log.warning("C-STORE from %s: cannot read the data set: %s", calling, exc)
        _refuse(spool, db, b"", calling, "", STATUS_CANNOT_UNDERSTAND, f"unreadable data: {exc}")
        return STATUS_CANNOT_UNDERSTAND
    try:
        ds = event.dataset
        sop_uid = str(ds.get("SOPInstanceUID", "") or event.request.AffectedSOPInstanceUID)
        sop_class = str(ds.get("SOPClassUID", "") or "")
        series_uid = str(ds.get("SeriesInstanceUID", "") or "")
        study_uid = str(ds.get("StudyInstanceUID", "") or "")
        modality = str(ds.get("Modality", "") or "")
        accession = str(ds.get("AccessionNumber", "") or "")
        series_number = ds.get("SeriesNumber", None)
    except Exception as exc:
        reason = f"the data set cannot be decoded: {exc}"
        _refuse(spool, db, data, calling, "", STATUS_CANNOT_UNDERSTAND, reason)
        return STATUS_CANNOT_UNDERSTAND

    context_class = str(event.context.abstract_syntax)
    if sop_class != context_class:
        reason = (
            f"SOP Class UID in the data set ({sop_class or 'missing'}) does not match the "
            f"presentation context ({context_class})"
        )
        _refuse(spool, db, data, calling, sop_uid, STATUS_DOES_NOT_MATCH_SOP_CLASS, reason)
        return STATUS_DOES_NOT_MATCH_SOP_CLASS
    for name, uid in (
        ("SOP Instance", sop_uid),
        ("Series Instance", series_uid),
        ("Study Instance", study_uid),
    ):
        if not is_valid_uid(uid):
            reason = f"{name} UID is missing or not a valid UID"
            _refuse(spool, db, data, calling, sop_uid, STATUS_DOES_NOT_MATCH_SOP_CLASS, reason)
            return STATUS_DOES_NOT_MATCH_SOP_CLASS

    try:
        path = spool.store(data, study_uid, series_uid, sop_uid)
    except SpoolFullError as exc:
        log.error("C-STORE %s refused: %s", sop_uid, exc)
        _record_only(db, calling, sop_uid, STATUS_OUT_OF_RESOURCES, f"disk full: {exc}", len(data))
        return STATUS_OUT_OF_RESOURCES
    except OSError as exc:
        log.error("C-STORE %s: writing to the spool failed: %s", sop_uid, exc)
        _record_only(
            db, calling, sop_uid, STATUS_PROCESSING_FAILURE, f"write failed: {exc}", len(data)
        )
        return STATUS_PROCESSING_FAILURE

    try:
        record_instance(
            db,
            ReceivedInstance(
                sop_instance_uid=sop_uid,
                sop_class_uid=sop_class,
                series_instance_uid=series_uid,
                study_instance_uid=study_uid,
                transfer_syntax_uid=str(event.context.transfer_syntax),
                modality=modality,
                accession_number=accession[:16],
                series_number=int(series_number) if series_number not in (None, "") else None,
                path=path,
                size_bytes=len(data),
                calling_ae_title=calling,
            ),
        )
    except Exception as exc:
        # The file is in the spool; the caller retries and the record is made then.
        log.error("C-STORE %s: recording in the database failed: %s", sop_uid, exc)
        return STATUS_PROCESSING_FAILURE
    return STATUS_SUCCESS


def handle_open(event: evt.Event) -> None:
    """Answer each PDU at once (see :func:`ctp_node.send.scu.disable_nagle` for why)."""
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket is not None else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def handle_echo(event: evt.Event) -> int:
    return STATUS_SUCCESS


def handle_requested(event: evt.Event, allowed: tuple[Caller, ...], db: Database) -> None:
    """Reject an association from a caller that is not on ``node.allowed_callers``."""
    if not allowed:
        return
    requestor = event.assoc.requestor
    # At this event the requestor's ae_title is not filled in yet: read the A-ASSOCIATE-RQ.
    primitive = requestor.primitive
    calling = str(primitive.calling_ae_title if primitive else requestor.ae_title).strip()
    for caller in allowed:
        if caller.ae_title == calling and (caller.host is None or caller.host == requestor.address):
            return
    reason = f"caller {calling!r} at {requestor.address} is not in node.allowed_callers"
    log.warning("association rejected: %s", reason)
    # result 0x01 rejected-permanent, source 0x01 service user, 0x03 calling AE not recognised
    event.assoc.acse.send_reject(0x01, 0x01, 0x03)
    try:
        record_rejection(db, calling_ae_title=calling, status=-1, reason=reason)
    except Exception as exc:
        log.error("could not record the rejected association: %s", exc)


def _refuse(
    spool: Spool, db: Database, data: bytes, calling: str, sop_uid: str, status: int, reason: str
) -> None:
    log.warning("C-STORE %s from %s refused (0x%04X): %s", sop_uid or "?", calling, status, reason)
    path = spool.quarantine(data, sop_uid or "unknown") if data else ""
    _record_only(db, calling, sop_uid, status, reason, len(data), path)


def _record_only(
    db: Database, calling: str, sop_uid: str, status: int, reason: str, size: int, path: str = ""
) -> None:
    try:
        record_rejection(
            db,
            calling_ae_title=calling,
            status=status,
            reason=reason,
            sop_instance_uid=sop_uid,
            quarantine_path=path,
            size_bytes=size,
        )
    except Exception as exc:
        log.error("could not record the refusal of %s: %s", sop_uid or "?", exc)


def build_ae(settings: ListenerSettings) -> AE:
    """The node's application entity, configured once."""
    ae = AE(ae_title=settings.ae_title)
    ae.require_called_aet = True
    ae.maximum_associations = settings.max_associations
    ae.acse_timeout = settings.acse_timeout_s
    ae.dimse_timeout = settings.dimse_timeout_s
    ae.network_timeout = settings.network_timeout_s
    ae.maximum_pdu_size = 0  # no limit: fewer, larger PDUs for big CT images
    ae.add_supported_context(Verification)
    for sop_class in ACCEPTED_STORAGE_CLASSES:
        ae.add_supported_context(sop_class, list(ACCEPTED_TRANSFER_SYNTAXES))
    return ae


def start_listener(
    settings: ListenerSettings, spool: Spool, db: Database
) -> ThreadedAssociationServer:
    """Start listening in background threads; stop with ``server.shutdown()``."""
    ae = build_ae(settings)
    handlers = [
        (evt.EVT_CONN_OPEN, handle_open),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [spool, db]),
        (evt.EVT_REQUESTED, handle_requested, [settings.allowed_callers, db]),
    ]
    server = ae.start_server((settings.bind, settings.port), block=False, evt_handlers=handlers)
    log.info("listening as %s on %s:%d", settings.ae_title, settings.bind, settings.port)
    return server
