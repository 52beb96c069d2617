"""The listener stays on the air: idle, half-open, garbage and oversized traffic has its own
budget and time limit, is reported once per connection, and a real scanner (DCMTK) still gets
through."""

from __future__ import annotations

import logging
import socket
import struct
import subprocess
import time
from contextlib import ExitStack

import pydicom
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from ctp_node.store.ingest import list_rejections, list_series
from tests.conftest import FAST_TCP_ENV, dcmtk, stored_count, storescu, wait_until
from tests.receive.conftest import AE_TITLE


def _timed_echo(port: int) -> tuple[bool, float]:
    start = time.monotonic()
    result = subprocess.run(
        [dcmtk("echoscu"), "-aet", "SCANNER", "-aec", AE_TITLE, "-to", "5", "127.0.0.1", str(port)],
        capture_output=True,
        timeout=30,
        env=FAST_TCP_ENV,
    )
    return result.returncode == 0, time.monotonic() - start


def _connect(port: int, send: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if send:
        sock.sendall(send)
    return sock


def _closed_by_peer(sock: socket.socket, within_s: float) -> bool:
    sock.settimeout(within_s)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _wait_for_refusal(db, reason: str) -> None:  # type: ignore[no-untyped-def]
    """Refusals are recorded by a thread of their own: wait for one whose reason says
    ``reason``."""
    wait_until(
        lambda: any(reason in r.reason for r in list_rejections(db)), 10, f"a refusal: {reason}"
    )


def _hostile(port: int, stack: ExitStack, count: int) -> list[socket.socket]:
    """``count`` connections: idle, half an A-ASSOCIATE-RQ header, a PDU declaring 4 GB, and
    garbage, in turn; kept open."""
    kinds = [
        b"",
        b"\x01\x00\x00\x00",
        b"\x01\x00\xff\xff\xff\xff" + b"\0" * 64,
        b"GET / HTTP/1.1\r\n\r\n",
    ]
    return [stack.enter_context(_connect(port, kinds[i % len(kinds)])) for i in range(count)]


def test_a_scanner_gets_through_while_100_hostile_connections_are_open(
    listener, small_series
) -> None:
    port, _, db = listener()
    with ExitStack() as stack:
        _hostile(port, stack, 100)
        for _ in range(3):
            ok, seconds = _timed_echo(port)
            assert ok and seconds < 2.0, seconds  # the requirement
        sent = storescu(small_series, port, AE_TITLE)
        assert stored_count(sent) == len(small_series), sent.stderr
    assert list_series(db)[0].instance_count == len(small_series)


def test_oldest_pending_connection_is_closed_when_the_budget_is_full(listener, caplog) -> None:
    port, _, db = listener(max_pending_connections=5, request_timeout_s=30.0)
    with ExitStack() as stack, caplog.at_level(logging.WARNING):
        first = stack.enter_context(_connect(port))
        time.sleep(0.2)
        for _ in range(5):
            stack.enter_context(_connect(port))
        assert _closed_by_peer(first, 5.0)
        ok, seconds = _timed_echo(port)
        assert ok and seconds < 2.0
    records = wait_until(lambda: list_rejections(db), 10, "the eviction's record")
    assert all(r.kind == "connection" for r in records)
    assert all("max_pending_connections" in r.reason for r in records)


def test_a_silent_connection_is_closed_after_the_request_timeout(listener, caplog) -> None:
    port, _, db = listener(request_timeout_s=1.0)
    with caplog.at_level(logging.WARNING):
        with _connect(port) as idle, _connect(port, b"\x01\x00\x00\x00\x00\x80") as half:
            assert _closed_by_peer(idle, 6.0) and _closed_by_peer(half, 6.0)
        records = wait_until(lambda: len(list_rejections(db)) >= 2 and list_rejections(db), 10, "")
    assert all("node.request_timeout_s" in r.reason or "timed out" in r.reason for r in records)
    assert "Traceback" not in caplog.text and not any(r.exc_info for r in caplog.records)


def test_a_request_cut_short_by_its_sender_is_closed_at_once(listener) -> None:
    # Its end of stream wakes the waiting room however few bytes have arrived: it is closed
    # now, not polled again and again until node.request_timeout_s.
    port, _, db = listener(request_timeout_s=5.0)
    for sent in (b"\x01\x00\x00", b"\x01\x00\x00\x00\x00\x80" + b"\0" * 20):
        with _connect(port, sent) as cut:
            cut.shutdown(socket.SHUT_WR)
            assert _closed_by_peer(cut, 1.0)
    reasons = [
        r.reason
        for r in wait_until(
            lambda: len(list_rejections(db)) == 2 and list_rejections(db), 10, "records"
        )
    ]
    assert sorted(reasons) == [
        "closed its side of the connection after 26 of the 134 bytes of its A-ASSOCIATE-RQ",
        "closed its side of the connection after 3 of the 6 bytes of its A-ASSOCIATE-RQ",
    ]


def test_a_pdu_longer_than_the_maximum_is_refused_unread(listener, caplog) -> None:
    port, _, db = listener()
    with caplog.at_level(logging.WARNING):
        with _connect(port, b"\x01\x00" + struct.pack(">L", 2**32 - 2)) as sock:
            assert _closed_by_peer(sock, 3.0)
        (record,) = wait_until(lambda: list_rejections(db), 10, "the refusal's record")
    assert "declared 4294967294 bytes" in record.reason and "max_pdu_bytes" in record.reason
    lines = [r for r in caplog.records if "4294967294" in r.getMessage()]
    assert len(lines) == 1 and "127.0.0.1" in lines[0].getMessage()
    assert "Traceback" not in caplog.text


def test_an_object_larger_than_the_limit_ends_its_association(
    listener, small_series, tmp_path, caplog
) -> None:
    port, spool, db = listener(max_object_bytes=20_000)
    big = pydicom.dcmread(small_series[0])
    big.SOPInstanceUID = generate_uid()
    big.PixelData = big.PixelData * 10  # 46 kB
    big.Rows = big.Rows * 10
    path = tmp_path / "big.dcm"
    big.save_as(path)
    with caplog.at_level(logging.WARNING):
        sent = storescu([path], port, AE_TITLE)
        assert stored_count(sent) == 0
        records = wait_until(lambda: list_rejections(db), 10, "the refusal's record")
    assert "max_object_bytes" in records[0].reason
    assert not list((spool.root / "spool" / ".incoming").iterdir())  # nothing left behind
    assert stored_count(storescu(small_series, port, AE_TITLE)) == len(small_series)


def _associate(port: int) -> object:
    ae = AE(ae_title="IDLE")
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", port, ae_title=AE_TITLE)


def test_all_slots_busy_refuses_then_an_idle_association_makes_room(listener) -> None:
    port, _, db = listener(max_associations=2, idle_eviction_s=1.5)
    held = [_associate(port), _associate(port)]
    try:
        assert all(a.is_established for a in held)
        assert all(int(a.send_c_echo().Status) == 0 for a in held)  # both have spoken
        refused = _associate(port)  # and just now: none may be closed yet
        assert refused.is_rejected
        _wait_for_refusal(db, "max_associations")
        time.sleep(2.0)
        ok, seconds = _timed_echo(port)
        assert ok and seconds < 2.0
        wait_until(lambda: sum(not a.is_established for a in held) == 1, 5, "one closed")
    finally:
        for assoc in held:
            if assoc.is_established:
                assoc.release()


def test_associations_that_never_speak_make_room_at_once(listener) -> None:
    """A flood of accepted associations that send nothing (not even a C-ECHO) cannot keep a
    scanner out for node.idle_eviction_s: the oldest mute one goes first."""
    port, _, db = listener(max_associations=3, idle_eviction_s=60.0)
    mute = [_associate(port) for _ in range(6)]  # each new one pushes out an older mute one
    try:
        wait_until(lambda: sum(a.is_established for a in mute) == 3, 5, "three left")
        ok, seconds = _timed_echo(port)
        assert ok and seconds < 2.0
        _wait_for_refusal(db, "without a DIMSE message since it was accepted")
    finally:
        for assoc in mute:
            if assoc.is_established:
                assoc.release()


def test_one_caller_cannot_take_every_slot(listener) -> None:
    port, _, db = listener(max_associations=3, max_associations_per_caller=2)
    hog = AE(ae_title="HOG")
    hog.add_requested_context(Verification)
    held = [hog.associate("127.0.0.1", port, ae_title=AE_TITLE) for _ in range(2)]
    try:
        assert all(int(a.send_c_echo().Status) == 0 for a in held)
        third = hog.associate("127.0.0.1", port, ae_title=AE_TITLE)
        assert third.is_rejected
        _wait_for_refusal(db, "max_associations_per_caller (2)")
        ok, seconds = _timed_echo(port)  # another caller: a slot is left for it
        assert ok and seconds < 2.0
    finally:
        for assoc in held:
            if assoc.is_established:
                assoc.release()


def test_many_connections_never_force_a_full_garbage_collection(listener, monkeypatch) -> None:
    # pynetdicom's server collects every 60 connections, holding the interpreter (and every
    # association) for 0.1 s and more; the node's listener leaves it to Python's collector.
    port, _, _ = listener()
    forced = []
    monkeypatch.setattr("gc.collect", lambda *args: forced.append(args) or 0)
    for _ in range(130):
        assert _closed_by_peer(_connect(port, b"GET / HTTP/1.1\r\n\r\n"), 5)
    ok, _ = _timed_echo(port)
    assert ok
    assert forced == []
