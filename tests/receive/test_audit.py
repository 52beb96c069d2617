"""The listener's audit trail with real peers: one record per association, whatever its end,
saying who sent which series and what became of each instance; and a database that cannot
take the record costs no C-STORE its answer."""

from __future__ import annotations

import logging
import socket
import time

import pydicom
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from sqlalchemy import text

from ctp_node.store.audit import AssociationAudit, list_associations
from ctp_node.store.ingest import list_rejections
from tests.conftest import echo_ok, stored_count, storescu, wait_until
from tests.receive.conftest import AE_TITLE


def _recorded(db, count: int) -> list[AssociationAudit]:
    """The audit records once there are ``count`` of them (each is written when its
    association has ended, by a thread of its own)."""

    def enough() -> list[AssociationAudit] | None:
        audits = list_associations(db)
        return audits if len(audits) >= count else None

    wait_until(enough, 20, f"{count} audit record(s)")
    time.sleep(0.5)  # and no more than that
    audits = list_associations(db)
    assert len(audits) == count, audits
    return audits


def test_a_study_sent_is_recorded_with_each_instance_outcome(
    listener, small_series, tmp_path, caplog
) -> None:
    port, _, db = listener()
    duplicate = pydicom.dcmread(small_series[0])  # the same UID with other content: 0x0111
    duplicate.SeriesDescription = "changed"
    duplicate.save_as(tmp_path / "duplicate.dcm")
    unusable = pydicom.dcmread(small_series[1])  # no Series Instance UID: 0xA900
    del unusable.SeriesInstanceUID
    unusable.SOPInstanceUID = generate_uid()
    unusable.save_as(tmp_path / "unusable.dcm")
    files = [*small_series, tmp_path / "duplicate.dcm", tmp_path / "unusable.dcm"]
    started = time.time()
    with caplog.at_level(logging.INFO, logger="ctp_node.receive.audit"):
        sent = storescu(files, port, AE_TITLE, calling="SCANNER7")
        assert stored_count(sent) == len(small_series), sent.stderr
        (audit,) = _recorded(db, 1)
    first = pydicom.dcmread(small_series[0])
    assert (audit.direction, audit.peer_ae_title, audit.local_ae_title, audit.outcome) == (
        "received",
        "SCANNER7",
        AE_TITLE,
        "released",
    )
    host, peer_port = audit.peer_address.split(":")
    assert host == "127.0.0.1" and int(peer_port) != port
    assert audit.started_at <= audit.ended_at
    assert abs(audit.started_at.timestamp() - started) < 30  # naive UTC, not local time
    by_series = {s.series_instance_uid: s for s in audit.series}
    ct = by_series[first.SeriesInstanceUID]
    assert (ct.study_instance_uid, ct.accession_number, ct.modality) == (
        first.StudyInstanceUID,
        first.AccessionNumber,
        "CT",
    )
    assert (ct.instances, ct.stored, ct.duplicate, ct.refused) == (len(small_series) + 1, 6, 1, 0)
    lacking = by_series[""]
    assert (lacking.study_instance_uid, lacking.instances, lacking.refused) == (
        first.StudyInstanceUID,
        1,
        1,
    )
    assert (audit.instances, audit.stored) == (len(files), len(small_series))
    (logged,) = [r.getMessage() for r in caplog.records if r.name == "ctp_node.receive.audit"]
    assert logged.startswith(f"association from SCANNER7 at {audit.peer_address} to CTPNODE")
    assert (
        "released after" in logged and "8 instance(s), 6 stored, 1 duplicate, 1 refused" in logged
    )
    assert f"study {first.StudyInstanceUID} (accession {first.AccessionNumber})" in logged


def test_every_way_an_association_ends_is_recorded(listener, small_series) -> None:
    port, _, db = listener(network_timeout_s=1.5, acse_timeout_s=2.0)
    ds = pydicom.dcmread(small_series[0])
    scu = AE(ae_title="TESTSCU")
    scu.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    scu.add_requested_context(Verification)

    assert echo_ok(port, AE_TITLE, calling="ECHOER")
    assert not echo_ok(port, "WRONGAE", calling="LOST")

    aborted = scu.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert int(aborted.send_c_store(ds).Status) == 0
    aborted.abort()

    dropped = scu.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert dropped.is_established
    dropped.dul.socket.socket.shutdown(socket.SHUT_RDWR)  # the cable is pulled
    dropped.dul.socket.socket.close()

    silent = scu.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert silent.is_established
    wait_until(lambda: not silent.is_established, 10, "the node to end a silent association")

    assert not echo_ok(port, AE_TITLE, calling="EV\x1b[2JIL")  # a request pynetdicom cannot decode

    with socket.create_connection(("127.0.0.1", port)) as idle:
        # held open without a request: it never reaches pynetdicom; the waiting room closes it
        # after node.request_timeout_s and reports it as a refused connection, not an
        # association (there was none)
        idle.settimeout(10)
        assert idle.recv(1) == b""

    audits = sorted(_recorded(db, 6), key=lambda audit: audit.started_at)
    ended = [(a.peer_ae_title, a.local_ae_title, a.outcome, a.instances) for a in audits]
    assert ended == [
        ("ECHOER", AE_TITLE, "released", 0),
        ("LOST", "WRONGAE", "refused", 0),
        ("TESTSCU", AE_TITLE, "aborted", 1),
        ("TESTSCU", AE_TITLE, "aborted", 0),
        ("TESTSCU", AE_TITLE, "timed_out", 0),
        ("", "", "aborted", 0),
    ]
    reasons = [a.reason for a in audits]
    assert reasons[0] == ""
    assert "Called AE title not recognised" in reasons[1]
    assert "A-ABORT" in reasons[2] and "the peer aborted" in reasons[2]
    assert "without a release" in reasons[3]
    assert "1.5 s (node.network_timeout_s)" in reasons[4]
    assert "before an association was negotiated" in reasons[5]
    idle_reports = wait_until(
        lambda: [r for r in list_rejections(db) if "request_timeout_s" in r.reason], 10, "report"
    )
    assert idle_reports[0].kind == "connection"
    assert audits[2].series[0].stored == 1


def test_a_database_that_refuses_the_record_costs_no_c_store(
    listener, small_series, caplog
) -> None:
    port, _, db = listener()
    with db.engine.begin() as connection:
        connection.execute(text("DROP TABLE audit_series"))
        connection.execute(text("DROP TABLE audit_associations"))
    with caplog.at_level(logging.ERROR):
        sent = storescu(small_series, port, AE_TITLE, calling="SCANNER7")
        assert stored_count(sent) == len(small_series), sent.stderr
        wait_until(
            lambda: any("not recorded" in r.getMessage() for r in caplog.records),
            20,
            "the audit failure to be logged",
        )
    (logged,) = [r for r in caplog.records if r.name == "ctp_node.receive.audit"]
    assert logged.getMessage().startswith("audit: the association from 127.0.0.1:")
    assert logged.exc_info is None and "\n" not in logged.getMessage()  # one line
    assert echo_ok(port, AE_TITLE)  # and the node serves on


def test_an_association_over_the_limit_is_recorded_as_refused(listener) -> None:
    port, _, db = listener(max_associations=1)
    scu = AE(ae_title="TESTSCU")
    scu.add_requested_context(Verification)
    held = scu.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert held.is_established
    assert int(held.send_c_echo().Status) == 0  # it has spoken: it is not made to go
    refused = scu.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert refused.is_rejected
    held.release()
    audits = {audit.outcome: audit for audit in _recorded(db, 2)}
    assert set(audits) == {"refused", "released"}
    assert audits["refused"].peer_ae_title == "TESTSCU"
    assert "Local limit exceeded" in audits["refused"].reason
