"""A plain storage SCP that files whatever it receives into a folder: the demo's PACS.

It is not the node's receiver (that is :mod:`ctp_node.receive.scp`); it stands in for a PACS
so that ``ctp-node demo`` runs on one machine with nothing else installed.
"""

from __future__ import annotations

from pathlib import Path

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from ctp_node.receive.intake import STATUS_CANNOT_UNDERSTAND, STATUS_SUCCESS
from ctp_node.receive.spool import Spool, is_valid_uid


def _file_it(event: evt.Event, spool: Spool) -> int:
    ds = event.dataset
    uids = (
        str(ds.get("StudyInstanceUID", "")),
        str(ds.get("SeriesInstanceUID", "")),
        str(ds.get("SOPInstanceUID", "")),
    )
    if not all(is_valid_uid(uid) for uid in uids):
        return STATUS_CANNOT_UNDERSTAND
    spool.store(_received_bytes(event), *uids)
    return STATUS_SUCCESS


def _received_bytes(event: evt.Event) -> bytes:
    # In a process that also runs the node's listener, pynetdicom writes data sets to a file
    # as they arrive (STORE_RECV_CHUNKED_DATASET is process-wide).
    try:
        path = event.dataset_path
    except AttributeError:
        path = None
    if path is not None:
        return Path(path).read_bytes()
    return event.encoded_dataset(include_meta=True)


def start_folder_scp(
    folder: Path, ae_title: str, port: int, bind: str = "127.0.0.1"
) -> ThreadedAssociationServer:
    """Listen on ``bind:port`` and write every received object below ``folder/spool``."""
    ae = AE(ae_title=ae_title)
    ae.maximum_pdu_size = 0
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(
            context.abstract_syntax, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        )
    ae.add_supported_context(Verification)
    spool = Spool(Path(folder))
    return ae.start_server(
        (bind, port), block=False, evt_handlers=[(evt.EVT_C_STORE, _file_it, [spool])]
    )
