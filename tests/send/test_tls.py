"""Sending over DICOM TLS to DCMTK ``storescp +tls``: delivered with the right CA (and client
certificate), refused with a message that says why otherwise, retried by the outbox."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest

from ctp_node.send.scu import Peer, PeerUnreachableError, send_files
from ctp_node.send.sender import RetryPolicy, send_due_exports
from ctp_node.store.models import ExportState
from ctp_node.store.outbox import list_exports
from ctp_node.tls import ClientTLS
from tests.conftest import FAST_TCP_ENV, dcmtk, free_port, stop_process, wait_until
from tests.send.conftest import database_with_exports
from tests.tls_certificates import Pair


def start_tls_storescp(
    folder: Path, server: Pair, ca: Path, *peer: str
) -> tuple[int, subprocess.Popen]:
    """DCMTK storescp speaking TLS only with ``server``'s certificate, trusting ``ca`` (it
    requires a client certificate unless ``peer`` says otherwise, e.g. ``-ic``)."""
    port = free_port()
    folder.mkdir()
    log = open(folder.parent / f"{folder.name}.log", "w")
    process = subprocess.Popen(
        [
            dcmtk("storescp"),
            "-aet",
            "STORESCP",
            "-od",
            str(folder),
            "+tls",
            str(server.private_key),
            str(server.certificate),
            "+cf",
            str(ca),
            *peer,
            str(port),
        ],
        env=FAST_TCP_ENV,
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def listening() -> bool:
        # Not by connecting: a connection without a handshake would be a refusal of its own.
        assert process.poll() is None, (folder.parent / f"{folder.name}.log").read_text()
        rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
        return any(
            row.split()[1].endswith(f":{port:04X}") and row.split()[3] == "0A" for row in rows
        )

    wait_until(listening, 20, "storescp +tls to listen")
    return port, process


@pytest.fixture
def tls_storescp(tmp_path, tls_files):  # type: ignore[no-untyped-def]
    """A factory: ``tls_storescp(server=tls_files.server, *peer)`` → (port, received folder)."""
    processes = []

    def start(server: Pair | None = None, *peer: str) -> tuple[int, Path]:
        folder = tmp_path / f"received{len(processes)}"
        port, process = start_tls_storescp(folder, server or tls_files.server, tls_files.ca, *peer)
        processes.append(process)
        return port, folder

    yield start
    for process in processes:
        stop_process(process)


def _received(folder: Path) -> set[str]:
    return {pydicom.dcmread(p).SOPInstanceUID for p in folder.iterdir()}


def _uids(paths: list[Path]) -> set[str]:
    return {pydicom.dcmread(p).SOPInstanceUID for p in paths}


def test_send_over_tls_with_a_client_certificate(outputs, tls_storescp, tls_files) -> None:
    port, folder = tls_storescp()
    client = tls_files.client
    tls = ClientTLS(tls_files.ca, client.certificate, client.private_key)

    outcomes = send_files(Peer("STORESCP", "127.0.0.1", port, tls=tls), outputs)

    assert [o.stored for o in outcomes] == [True, True]
    assert _received(folder) == _uids(outputs)


def test_a_destination_signed_by_another_ca_is_refused(outputs, tls_storescp, tls_files) -> None:
    port, folder = tls_storescp(tls_files.wrong_server)
    client = tls_files.client
    tls = ClientTLS(tls_files.ca, client.certificate, client.private_key)

    with pytest.raises(PeerUnreachableError) as refused:
        send_files(Peer("STORESCP", "127.0.0.1", port, tls=tls, timeout_s=10), outputs)

    message = str(refused.value)
    assert "TLS handshake with STORESCP@127.0.0.1" in message
    assert "certificate verify failed: unable to get local issuer certificate" in message
    assert "tls.ca_certificates must hold the CA that signed it" in message
    assert not any(folder.iterdir())


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        (None, "tlsv13 alert certificate required: the peer requires a client certificate"),
        ("wrong", "tlsv1 alert unknown ca: the peer does not trust this certificate's CA"),
    ],
)
def test_a_destination_that_refuses_the_client_certificate_says_so(
    outputs, tls_storescp, tls_files, client, expected
) -> None:
    port, folder = tls_storescp()
    wrong = tls_files.wrong_client
    tls = ClientTLS(tls_files.ca, *((wrong.certificate, wrong.private_key) if client else ()))

    with pytest.raises(PeerUnreachableError) as refused:
        send_files(Peer("STORESCP", "127.0.0.1", port, tls=tls, timeout_s=10), outputs)

    assert expected in str(refused.value)
    assert "give the destination's tls.certificate and tls.private_key" in str(refused.value)
    assert not any(folder.iterdir())


def test_host_name_verification(outputs, tls_storescp, tls_files) -> None:
    # A certificate from the hospital's CA, but for pacs.example.org, not for 127.0.0.1.
    port, folder = tls_storescp(tls_files.other_host, "-ic")

    with pytest.raises(PeerUnreachableError) as refused:
        send_files(
            Peer("STORESCP", "127.0.0.1", port, tls=ClientTLS(tls_files.ca), timeout_s=10), outputs
        )
    message = str(refused.value)
    assert "certificate verify failed: IP address mismatch" in message
    assert "set the destination's tls.verify_host_name: false if it names no host" in message
    assert not any(folder.iterdir())

    unchecked = ClientTLS(tls_files.ca, verify_host_name=False)
    outcomes = send_files(Peer("STORESCP", "127.0.0.1", port, tls=unchecked), outputs)
    assert all(o.stored for o in outcomes)
    assert _received(folder) == _uids(outputs)


def test_the_outbox_retries_a_refused_tls_destination_with_the_reason(
    outputs,
    tls_storescp,
    tls_files,
    tmp_path,
) -> None:
    db = database_with_exports(tmp_path, outputs, "pacs")
    port, folder = tls_storescp()
    client = tls_files.client
    policy = RetryPolicy(max_attempts=5, backoff_s=0.0, backoff_max_s=0.0)
    wrong = {
        "pacs": Peer(
            "STORESCP",
            "127.0.0.1",
            port,
            tls=ClientTLS(tls_files.wrong_ca, client.certificate, client.private_key),
            timeout_s=10,
        )
    }
    right = {
        "pacs": Peer(
            "STORESCP",
            "127.0.0.1",
            port,
            tls=ClientTLS(tls_files.ca, client.certificate, client.private_key),
            timeout_s=10,
        )
    }
    try:
        assert send_due_exports(db, outputs[0].parent, wrong, policy) == 0
        exports = list_exports(db)
        assert all(e.state == ExportState.PENDING and e.attempts == 1 for e in exports)
        assert all("certificate verify failed" in e.last_error for e in exports)

        assert send_due_exports(db, outputs[0].parent, right, policy) == len(outputs)
        assert all(e.state == ExportState.SENT for e in list_exports(db))
        assert _received(folder) == _uids(outputs)
    finally:
        db.dispose()


def test_unreadable_tls_files_are_a_clear_refusal(outputs, tmp_path) -> None:
    tls = ClientTLS(tmp_path / "gone.pem")

    with pytest.raises(PeerUnreachableError, match=r"TLS files .* cannot be used"):
        send_files(Peer("STORESCP", "127.0.0.1", free_port(), tls=tls), outputs)
