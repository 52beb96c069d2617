"""The outbox sender against real peers: DCMTK storescp, and a PACS that is down, then up."""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import replace

import pydicom
import pytest

from ctp_node.send.scu import Peer, PeerUnreachableError, send_files
from ctp_node.send.sender import RetryPolicy, send_due_exports
from ctp_node.store.audit import SeriesCounts, list_associations
from ctp_node.store.models import ExportState, utcnow
from ctp_node.store.outbox import OutputObject, enqueue_exports, list_exports
from tests.conftest import FAST_TCP_ENV, dcmtk, free_port, start_orthanc, stop_process, wait_until
from tests.send.conftest import database_with_a_job, database_with_exports


@pytest.fixture
def storescp(tmp_path):
    port = free_port()
    folder = tmp_path / "received"
    folder.mkdir()
    process = subprocess.Popen(
        [dcmtk("storescp"), "-aet", "STORESCP", "-od", str(folder), "+B", str(port)],
        env=FAST_TCP_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    from tests.conftest import echo_ok

    wait_until(lambda: echo_ok(port, "STORESCP"), 20, "storescp to listen")
    yield port, folder
    stop_process(process)


def test_send_files_to_storescp(outputs, storescp) -> None:
    port, folder = storescp
    outcomes = send_files(Peer("STORESCP", "127.0.0.1", port), outputs)
    assert [o.stored for o in outcomes] == [True, True]
    received = {pydicom.dcmread(p).SOPInstanceUID for p in folder.iterdir()}
    assert received == {pydicom.dcmread(p).SOPInstanceUID for p in outputs}


def test_unreachable_peer_raises_a_clear_error(outputs) -> None:
    with pytest.raises(PeerUnreachableError, match="check that the destination is running"):
        send_files(Peer("NOBODY", "127.0.0.1", free_port(), timeout_s=5), outputs)


def test_pacs_down_then_up_loses_nothing(outputs, tmp_path) -> None:
    db = database_with_exports(tmp_path, outputs, "pacs")
    root = outputs[0].parent
    port = free_port()
    peers = {"pacs": Peer("ORTHANC", "127.0.0.1", port, timeout_s=5)}
    policy = RetryPolicy(max_attempts=5, backoff_s=0.0, backoff_max_s=0.0)

    assert send_due_exports(db, root, peers, policy) == 0  # nobody listens yet
    exports = list_exports(db)
    assert all(e.state == ExportState.PENDING and e.attempts == 1 for e in exports)
    assert "no association" in exports[0].last_error

    orthanc = start_orthanc(tmp_path / "orthanc", dicom_port=port)
    try:
        assert send_due_exports(db, root, peers, policy) == len(outputs)
        assert all(e.state == ExportState.SENT for e in list_exports(db))
        assert len(orthanc.get("/instances")) == len(outputs)
    finally:
        stop_process(orthanc.process)
        db.dispose()


def test_gives_up_after_max_attempts(outputs, tmp_path) -> None:
    db, job_id = database_with_a_job(tmp_path)
    enqueue_exports(db, job_id, [("pacs", OutputObject("9.9", "parametric_maps", outputs[0].name))])
    peers = {"pacs": Peer("X", "127.0.0.1", free_port(), timeout_s=2)}
    policy = RetryPolicy(max_attempts=2, backoff_s=10.0, backoff_max_s=10.0)
    send_due_exports(db, outputs[0].parent, peers, policy)
    assert list_exports(db)[0].next_attempt_at > utcnow() + dt.timedelta(seconds=5)  # backoff
    with db.session() as s:  # make it due now
        from ctp_node.store.models import Export

        s.get(Export, 1).next_attempt_at = utcnow()
    send_due_exports(db, outputs[0].parent, peers, policy)
    (export,) = list_exports(db)
    assert export.state == ExportState.FAILED and export.attempts == 2
    db.dispose()


def test_every_association_with_a_destination_is_audited(outputs, tmp_path) -> None:
    """Unreachable, refused (a wrong called AE title), then stored: three records that say
    which series went to whom, and what the peer answered."""
    db = database_with_exports(tmp_path, outputs, "pacs")
    root = outputs[0].parent
    port = free_port()
    policy = RetryPolicy(max_attempts=5, backoff_s=0.0, backoff_max_s=0.0)

    def send(called: str) -> int:
        return send_due_exports(
            db, root, {"pacs": Peer(called, "127.0.0.1", port, "CTPNODE", timeout_s=5)}, policy
        )

    assert send("ORTHANC") == 0  # nobody listens yet
    orthanc = start_orthanc(tmp_path / "orthanc", dicom_port=port)
    try:
        assert send("NOTORTHANC") == 0
        assert send("ORTHANC") == len(outputs)
    finally:
        stop_process(orthanc.process)

    unreachable, refused, stored = list_associations(db)
    first = pydicom.dcmread(outputs[0])
    sent_series = SeriesCounts(
        first.StudyInstanceUID, first.SeriesInstanceUID, first.AccessionNumber, "CT", 2
    )
    for audit in (unreachable, refused, stored):
        assert (audit.direction, audit.peer_address, audit.local_ae_title) == (
            "sent",
            f"127.0.0.1:{port}",
            "CTPNODE",
        )
        assert audit.started_at <= audit.ended_at
    assert (unreachable.peer_ae_title, unreachable.outcome) == ("ORTHANC", "unreachable")
    assert "no association" in unreachable.reason
    assert unreachable.series == (sent_series,)  # what was to be sent, and nothing stored
    assert (refused.peer_ae_title, refused.outcome) == ("NOTORTHANC", "refused")
    assert "Called AE title not recognised" in refused.reason
    assert refused.series == (sent_series,)
    assert (stored.peer_ae_title, stored.outcome, stored.reason) == ("ORTHANC", "released", "")
    assert stored.series == (replace(sent_series, stored=2),)
    db.dispose()
