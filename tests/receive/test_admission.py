"""Every refused association and presentation context leaves a trace: one log line with the
peer's address, a record, and a readable line in ``ctp-node status``."""

from __future__ import annotations

import logging
import subprocess

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from ctp_node.config import Config
from ctp_node.config.schema import DatabaseConfig
from ctp_node.receive.scp import Caller
from ctp_node.status import print_status
from ctp_node.store.ingest import list_rejections, list_series
from tests.conftest import FAST_TCP_ENV, dcmtk, echo_ok, stored_count, storescu, wait_until
from tests.receive.conftest import AE_TITLE

#: Study Root Query/Retrieve Information Model - FIND: a service the node does not offer.
QUERY_SOP_CLASS = "1.2.840.10008.5.1.4.1.2.2.1"


def _status_lines(db, capsys) -> list[str]:
    capsys.readouterr()
    print_status(Config(database=DatabaseConfig(url=db.url)))
    return capsys.readouterr().out.splitlines()


def test_wrong_called_ae_title_is_refused_recorded_and_listed(listener, capsys, caplog) -> None:
    port, _, db = listener()
    assert echo_ok(port, AE_TITLE)
    with caplog.at_level(logging.WARNING):
        assert not echo_ok(port, "SOMEONEELSE", calling="CT1")
    (rejection,) = list_rejections(db)
    assert (rejection.kind, rejection.calling_ae_title, rejection.peer_address) == (
        "association",
        "CT1",
        "127.0.0.1",
    )
    assert "'SOMEONEELSE'" in rejection.reason
    assert "Called AE title not recognised" in rejection.reason
    (logged,) = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert "CT1 at 127.0.0.1 to SOMEONEELSE refused" in logged
    (line,) = [line for line in _status_lines(db, capsys) if "SOMEONEELSE" in line]
    assert "CT1 at 127.0.0.1  association" in line and "0xFFFF" not in line


def test_caller_not_allowed_is_rejected_and_recorded(listener, small_series) -> None:
    port, _, db = listener(allowed=(Caller("CT1", "127.0.0.1"), Caller("CT2", "10.9.9.9")))
    assert echo_ok(port, AE_TITLE, calling="CT1")
    assert not echo_ok(port, AE_TITLE, calling="INTRUDER")
    assert not echo_ok(port, AE_TITLE, calling="CT2")  # allowed, but from another host
    assert stored_count(storescu(small_series, port, AE_TITLE, calling="INTRUDER")) == 0
    assert list_series(db) == []
    rejections = list_rejections(db)
    assert [(r.kind, r.calling_ae_title) for r in rejections] == [
        ("association", "INTRUDER"),
        ("association", "CT2"),
        ("association", "INTRUDER"),
    ]
    assert "'INTRUDER' at 127.0.0.1 is not in node.allowed_callers" in rejections[0].reason
    assert "Calling AE title not recognised" in rejections[0].reason


def test_ae_title_with_control_characters_is_recorded_without_them(listener, caplog) -> None:
    """pynetdicom cannot decode such a request and aborts it without an event of its own."""
    port, _, db = listener()
    with caplog.at_level(logging.WARNING):
        assert not echo_ok(port, AE_TITLE, calling="EV\x1b[2JIL")
        # recorded when the connection closes, which the peer may see first
        (rejection,) = wait_until(lambda: list_rejections(db), 10, "the refusal's record")
    assert (rejection.kind, rejection.calling_ae_title) == ("association", "EV[2JIL")
    assert "Unable to decode" in rejection.reason and "Calling AE Title" in rejection.reason
    (line,) = [r for r in caplog.records if "EV[2JIL" in r.getMessage()]  # one line
    assert "127.0.0.1 (calling EV[2JIL" in line.getMessage() and not line.exc_info
    assert "\x1b" not in caplog.text  # pynetdicom's own lines quote the title too


def test_lossy_ct_context_is_refused_recorded_and_listed(
    listener, small_series, tmp_path, capsys
) -> None:
    port, _, db = listener()
    lossy = tmp_path / "lossy.dcm"
    subprocess.run(
        [dcmtk("dcmcjpeg"), "+ee", str(small_series[0]), str(lossy)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    # -xx: propose JPEG lossy (12 bit) alone, and uncompressed in another context; -R: only
    # for the SOP classes of the files.
    sent = storescu([lossy, *small_series[1:]], port, AE_TITLE, calling="CT1", extra=("-xx", "-R"))
    # The lossy image cannot be sent; the others go in the same association.
    assert stored_count(sent) == len(small_series) - 1, sent.stderr
    assert list_series(db)[0].instance_count == len(small_series) - 1
    (rejection,) = list_rejections(db)
    assert (rejection.kind, rejection.calling_ae_title, rejection.peer_address) == (
        "context",
        "CT1",
        "127.0.0.1",
    )
    assert "CT Image Storage (1.2.840.10008.5.1.4.1.1.2)" in rejection.reason
    assert "JPEG Extended" in rejection.reason and "transfer syntaxes" in rejection.reason
    (line,) = [line for line in _status_lines(db, capsys) if "JPEG Extended" in line]
    assert "CT1 at 127.0.0.1  context" in line


def test_a_service_the_node_does_not_offer_is_refused_and_recorded(listener) -> None:
    """Query (C-FIND) is not a service of the node: its context is refused, with a trace. (A
    SOP class pynetdicom does not know, a vendor's private one, is accepted as storage: see
    test_intake's whole-study send.)"""
    port, _, db = listener()
    ae = AE(ae_title="WORKSTATION")
    ae.add_requested_context(QUERY_SOP_CLASS, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
    try:
        assert assoc.is_established
        assert int(assoc.send_c_echo().Status) == 0
    finally:
        assoc.release()
    (rejection,) = list_rejections(db)
    assert rejection.kind == "context" and rejection.calling_ae_title == "WORKSTATION"
    assert QUERY_SOP_CLASS in rejection.reason
    assert "Explicit VR Little Endian" in rejection.reason
    assert "does not accept this SOP class" in rejection.reason


def test_association_over_the_limit_is_recorded(listener) -> None:
    port, _, db = listener(max_associations=1)
    ae = AE(ae_title="HOLDER")
    ae.add_requested_context(Verification)
    held = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
    try:
        assert held.is_established
        assert int(held.send_c_echo().Status) == 0  # it has spoken: it is not made to go
        assert not echo_ok(port, AE_TITLE, calling="SECOND")
    finally:
        held.release()
    (rejection,) = wait_until(lambda: list_rejections(db), 10, "the refusal's record")
    assert (rejection.kind, rejection.calling_ae_title) == ("association", "SECOND")
    assert "node.max_associations" in rejection.reason
    assert "Local limit exceeded" in rejection.reason


@pytest.mark.parametrize("called", ["CTPNODE", "SOMEONEELSE"])
def test_echoscu_sees_the_node_answer_or_refuse(listener, called) -> None:
    """The refusal is an A-ASSOCIATE-RJ that DCMTK reports, not a dropped connection."""
    port, _, _ = listener()
    result = subprocess.run(
        [dcmtk("echoscu"), "-v", "-aec", called, "-to", "5", "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=30,
        env=FAST_TCP_ENV,
    )
    if called == AE_TITLE:
        assert result.returncode == 0
    else:
        assert "Called AE Title Not Recognized" in result.stdout + result.stderr
