"""The TLS listener with real DCMTK peers (``storescu +tls``, ``echoscu +tls``): what it
accepts, what it refuses (no certificate, another CA's, plain DICOM), and that it stays up."""

from __future__ import annotations

import logging
import socket
import subprocess
import time

import pytest

from ctp_node.receive.admission import record_refused_connection
from ctp_node.store.ingest import list_rejections, list_series
from ctp_node.tls import ServerTLS, server_context
from tests.conftest import FAST_TCP_ENV, dcmtk, stored_count, storescu, wait_until
from tests.receive.conftest import AE_TITLE


def tls_options(key, certificate, ca) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
    """DCMTK's options for TLS with a client certificate (``None``: anonymous, ``+tla``)."""
    identity = ("+tls", str(key), str(certificate)) if key else ("+tla",)
    return (*identity, "+cf", str(ca))


def echo(port: int, *options: str, timeout_s: int = 10) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            dcmtk("echoscu"),
            "-aec",
            AE_TITLE,
            "-to",
            str(timeout_s),
            *options,
            "127.0.0.1",
            str(port),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=FAST_TCP_ENV,
    )


@pytest.fixture
def tls_listener(listener, tls_files):  # type: ignore[no-untyped-def]
    """A factory: ``tls_listener(require_client_certificate=True)`` → (port, spool, db)."""

    def start(require_client_certificate: bool = True):  # type: ignore[no-untyped-def]
        holder = {}
        tls = ServerTLS(
            tls_files.server.certificate,
            tls_files.server.private_key,
            tls_files.ca,
            require_client_certificate,
        )
        context = server_context(
            tls, lambda peer, reason: record_refused_connection(holder["db"], peer, reason)
        )
        port, spool, db = listener(ssl_context=context)
        holder["db"] = db
        return port, spool, db

    return start


def refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "TLS connection from 127.0.0.1:" in r.getMessage()]


def test_storescu_over_tls_stores_and_records_the_series(
    tls_listener, tls_files, small_series
) -> None:
    port, _, db = tls_listener()
    client = tls_files.client

    result = storescu(
        small_series,
        port,
        AE_TITLE,
        extra=tls_options(client.private_key, client.certificate, tls_files.ca),
    )

    assert stored_count(result) == len(small_series), result.stdout + result.stderr
    (series,) = list_series(db)
    assert series.instance_count == len(small_series)
    assert list_rejections(db) == []


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("plain", "wrong version number: not TLS; a plain DICOM connection to the TLS port?"),
        ("anonymous", "the caller presented no client certificate"),
        ("wrong CA", "certificate verify failed: unable to get local issuer certificate"),
        ("distrusts the node", "tlsv1 alert unknown ca: the peer does not trust"),
    ],
)
def test_a_refused_caller_leaves_one_line_and_a_record_and_the_node_stays_up(
    tls_listener, tls_files, caplog, who, expected
) -> None:
    port, _, db = tls_listener()
    client, wrong = tls_files.client, tls_files.wrong_client
    options = {
        "plain": (),
        "anonymous": tls_options(None, None, tls_files.ca),
        "wrong CA": tls_options(wrong.private_key, wrong.certificate, tls_files.ca),
        "distrusts the node": tls_options(
            client.private_key, client.certificate, tls_files.wrong_ca
        ),
    }[who]
    caplog.set_level(logging.WARNING)

    refused = echo(port, *options)

    assert refused.returncode != 0, refused.stdout + refused.stderr
    # the caller may give up before the node has logged and recorded its refusal
    (line,) = wait_until(lambda: refusals(caplog), 10, "the refusal's log line")
    assert expected in line.getMessage()
    assert line.exc_info is None and "\n" not in line.getMessage()
    (record,) = wait_until(lambda: list_rejections(db), 10, "the refusal's record")
    assert (record.kind, record.peer_address) == ("tls", "127.0.0.1")
    assert expected in record.reason
    # The listener still serves the next caller.
    accepted = echo(port, *tls_options(client.private_key, client.certificate, tls_files.ca))
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr


def test_without_required_client_certificates_an_anonymous_caller_is_served(
    tls_listener, tls_files, caplog
) -> None:
    port, _, _ = tls_listener(require_client_certificate=False)
    wrong = tls_files.wrong_client

    assert echo(port, *tls_options(None, None, tls_files.ca)).returncode == 0
    # A certificate that is presented is still checked.
    assert (
        echo(port, *tls_options(wrong.private_key, wrong.certificate, tls_files.ca)).returncode != 0
    )


def _silent_caller(port: int) -> socket.socket:
    """A TCP connection that never sends its TLS ClientHello (a port scanner, a hung peer)."""
    silent = socket.create_connection(("127.0.0.1", port), timeout=5)
    time.sleep(0.5)  # accepted, and the listener waits in its handshake
    return silent


def test_a_silent_caller_does_not_delay_the_next_one(tls_listener, tls_files, monkeypatch) -> None:
    monkeypatch.setattr("ctp_node.tls.HANDSHAKE_TIMEOUT_S", 3.0)
    port, _, _ = tls_listener()
    client = tls_files.client
    silent = _silent_caller(port)
    try:
        started = time.monotonic()
        result = echo(
            port, *tls_options(client.private_key, client.certificate, tls_files.ca), timeout_s=30
        )
        elapsed_s = time.monotonic() - started
    finally:
        silent.close()

    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed_s < 1.5
