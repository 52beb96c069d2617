"""``ctp-node serve`` under hostile and careless traffic: a scanner (DCMTK) still gets through
within 2 s, malformed input leaves one line each and no traceback, and what a peer controls
cannot forge a log line."""

from __future__ import annotations

import socket
import subprocess
import time
from contextlib import ExitStack

import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.conftest import FAST_TCP_ENV, dcmtk, stored_count, storescu, wait_until
from tests.receive.test_readable import send_raw

pytestmark = pytest.mark.slow


def _echo_seconds(port: int, ae_title: str) -> float:
    start = time.monotonic()
    result = subprocess.run(
        [dcmtk("echoscu"), "-aet", "SCANNER", "-aec", ae_title, "-to", "5", "127.0.0.1", str(port)],
        capture_output=True,
        timeout=30,
        env=FAST_TCP_ENV,
    )
    assert result.returncode == 0, result.stderr
    return time.monotonic() - start


def test_serve_stays_on_the_air_and_logs_one_line_per_bad_input(
    serve_node, small_study, tmp_path
) -> None:
    node = serve_node([], node={"request_timeout_s": 2.0})
    garbage = [
        b"",  # idle
        b"\x01\x00\x00\x00",  # half a PDU header
        b"\x01\x00\xff\xff\xff\xf0" + b"\0" * 32,  # a PDU declaring 4 GB
        b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00",  # an A-ABORT out of the blue
        b"\xff" * 300,  # an unknown PDU type
    ]
    with ExitStack() as stack:
        for i in range(100):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", node.port), 5))
            sock.sendall(garbage[i % len(garbage)])
        seconds = [_echo_seconds(node.port, node.ae_title) for _ in range(3)]
        assert max(seconds) < 2.0, seconds
        files = sorted(small_study[1])[:4]
        assert stored_count(storescu(files, node.port, node.ae_title)) == len(files)

    forged = pydicom.dcmread(files[0])
    forged.SOPInstanceUID = "1.2.3\nFORGED 2026-12-03 ERROR ctp_node: fake"
    forged.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    path = tmp_path / "forged.dcm"
    forged.save_as(path)
    assert send_raw(node.port, path, node.ae_title) == 0xA900

    # one line per bad connection, at most REPORTS_PER_PEER_PER_MINUTE from one address
    log = wait_until(
        lambda: (t := node.log_path.read_text()).count("ended:") >= 30 and t, 30, "reports"
    )
    assert "Traceback" not in log
    assert not any("FORGED" in line[:30] for line in log.splitlines())  # no forged line
    assert "1.2.3\\x0aFORGED" in log
    assert "declared 4294967280 bytes" in log
    assert _echo_seconds(node.port, node.ae_title) < 2.0
