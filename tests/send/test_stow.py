"""The DICOMweb (STOW-RS) destination: through the outbox to a real Orthanc with its DICOMweb
plugin (stored byte for byte; down then up loses nothing; a wrong url asks for attention), and
to a small local HTTP sink for what Orthanc does not do (a bearer token, partial failures in
JSON and XML, a busy server, https with the hospital's CA)."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pydicom
import pytest

from ctp_node.send.sender import RetryPolicy, send_due_exports
from ctp_node.send.stow import StowPeer, reach, send_stow
from ctp_node.store import Database
from ctp_node.store.audit import list_associations
from ctp_node.store.models import ExportState
from ctp_node.store.outbox import list_exports
from ctp_node.tls import ClientTLS
from tests.conftest import (
    free_port,
    start_orthanc,
    stop_process,
    stored_count,
    storescu,
    wait_until,
)
from tests.send.conftest import database_with_exports

POLICY = RetryPolicy(max_attempts=5, backoff_s=0.0, backoff_max_s=0.0)


def states(db: Database) -> dict[str, tuple[str, int, str]]:
    """SOP Instance UID → (state, attempts, last error) of each export."""
    return {e.sop_instance_uid: (e.state, e.attempts, e.last_error) for e in list_exports(db)}


def orthanc_files(orthanc) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    """SOP Instance UID → the file as Orthanc holds it, of every instance in ``orthanc``."""
    return {
        orthanc.get(f"/instances/{i}/simplified-tags")["SOPInstanceUID"]: orthanc.get_bytes(
            f"/instances/{i}/file"
        )
        for i in orthanc.get("/instances")
    }


# --- A real Orthanc with its DICOMweb plugin -------------------------------------------------


@pytest.mark.parametrize("orthanc", ["dicomweb"], indirect=True)
def test_outbox_stores_byte_identical_files_in_orthanc(orthanc, outputs, tmp_path) -> None:
    db = database_with_exports(tmp_path, outputs, "web")
    root = outputs[0].parent

    assert send_due_exports(db, root, {"web": StowPeer(orthanc.stow_url)}, POLICY) == 2

    assert {s for s, _, _ in states(db).values()} == {ExportState.SENT}
    held = orthanc_files(orthanc)
    assert held == {pydicom.dcmread(p).SOPInstanceUID: p.read_bytes() for p in outputs}
    (record,) = list_associations(db)
    assert (record.outcome, record.peer_address) == ("released", orthanc.stow_url)
    db.dispose()


def test_orthanc_down_then_up_loses_nothing(outputs, tmp_path) -> None:
    db = database_with_exports(tmp_path, outputs, "web")
    root = outputs[0].parent
    http_port = free_port()
    peer = StowPeer(f"http://127.0.0.1:{http_port}/dicom-web/studies", timeout_s=5)

    assert send_due_exports(db, root, {"web": peer}, POLICY) == 0  # nobody listens yet
    for state, attempts, error in states(db).values():
        assert (state, attempts) == (ExportState.PENDING, 1)
        assert f"no answer from {peer.url}" in error and "check that the destination" in error

    orthanc = start_orthanc(tmp_path / "orthanc", http_port=http_port, dicomweb=True)
    try:
        assert send_due_exports(db, root, {"web": peer}, POLICY) == len(outputs)
        assert {s for s, _, _ in states(db).values()} == {ExportState.SENT}
        assert len(orthanc.get("/instances")) == len(outputs)
    finally:
        stop_process(orthanc.process)
        db.dispose()


@pytest.mark.parametrize("orthanc", ["dicomweb"], indirect=True)
def test_wrong_url_is_a_permanent_failure_with_orthancs_words(orthanc, outputs, tmp_path) -> None:
    db = database_with_exports(tmp_path, outputs, "web")
    wrong = orthanc.stow_url.replace("/studies", "/stduies")

    send_due_exports(db, outputs[0].parent, {"web": StowPeer(wrong)}, POLICY)

    for state, attempts, error in states(db).values():
        assert (state, attempts) == (ExportState.FAILED, 1)  # given up at once: attention
        assert f"{wrong} answered HTTP 404 Not Found (Unknown resource)" in error
        assert "check the destination's url" in error
    assert orthanc.get("/instances") == []
    db.dispose()


@pytest.mark.parametrize("orthanc", ["dicomweb"], indirect=True)
def test_reach_searches_the_destination(orthanc) -> None:
    answered = reach(StowPeer(orthanc.stow_url))
    assert answered.answered and "answered a search in" in answered.message

    nobody = reach(StowPeer(f"http://127.0.0.1:{free_port()}/dicom-web/studies", timeout_s=5))
    assert not nobody.answered and "no answer from" in nobody.message


# --- A local HTTP sink -----------------------------------------------------------------------


@dataclass
class Sink:
    """What the sink answers (status, content type, body) and what it was sent."""

    url: str
    answer: tuple[int, str, bytes] = (200, "application/dicom+json", b"{}")
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


def _serve(context: ssl.SSLContext | None = None) -> Iterator[Sink]:
    sink = Sink("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            sink.requests.append((dict(self.headers), body))
            status, kind, answer = sink.answer
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    scheme = "https" if context else "http"
    sink.url = f"{scheme}://127.0.0.1:{server.server_address[1]}/dicom-web/studies"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield sink
    server.shutdown()
    server.server_close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    yield from _serve()


def failed_json(failures: dict[str, int]) -> bytes:
    """A DICOM JSON STOW-RS answer listing ``failures`` (UID → FailureReason)."""
    items = [
        {"00081155": {"vr": "UI", "Value": [uid]}, "00081197": {"vr": "US", "Value": [reason]}}
        for uid, reason in failures.items()
    ]
    return json.dumps({"00081198": {"vr": "SQ", "Value": items}}).encode()


def failed_xml(failures: dict[str, int]) -> bytes:
    """The same in the Native DICOM Model (PS3.19), as Orthanc writes it."""
    items = "".join(
        f'<Item number="{n}"><DicomAttribute tag="00081155" vr="UI"><Value number="1">{uid}'
        f'</Value></DicomAttribute><DicomAttribute tag="00081197" vr="US"><Value number="1">'
        f"{reason}</Value></DicomAttribute></Item>"
        for n, (uid, reason) in enumerate(failures.items(), 1)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><NativeDicomModel '
        'xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM"><DicomAttribute '
        f'tag="00081198" vr="SQ" keyword="FailedSOPSequence">{items}</DicomAttribute>'
        "</NativeDicomModel>"
    ).encode()


def test_request_is_multipart_dicom_with_the_bearer_token(sink, outputs) -> None:
    sent = send_stow(StowPeer(sink.url, bearer_token="s3cret-token"), outputs)

    assert [o.stored for o in sent.outcomes] == [True, True]
    ((headers, body),) = sink.requests
    assert headers["Authorization"] == "Bearer s3cret-token"
    kind = headers["Content-Type"]
    assert kind.startswith('multipart/related; type="application/dicom"; boundary=')
    boundary = kind.split("boundary=")[1].encode()
    parts = body.split(b"--" + boundary)
    assert parts[-1] == b"--\r\n" and parts[0] == b""
    payloads = [p.split(b"\r\n\r\n", 1) for p in parts[1:-1]]
    assert [h for h, _ in payloads] == [b"\r\nContent-Type: application/dicom"] * 2
    assert [d.removesuffix(b"\r\n") for _, d in payloads] == [p.read_bytes() for p in outputs]
    assert "s3cret" not in repr(StowPeer(sink.url, bearer_token="s3cret-token"))


@pytest.mark.parametrize(
    ("status", "kind", "encode"),
    [(202, "application/dicom+json", failed_json), (409, "application/dicom+xml", failed_xml)],
)
def test_failed_instances_retry_or_give_up_by_their_reason(
    sink, outputs, tmp_path, status, kind, encode
) -> None:
    first, second = (pydicom.dcmread(p).SOPInstanceUID for p in outputs)
    if status == 202:  # the first stored; the second does not match its SOP class
        sink.answer = (status, kind, encode({second: 0xA900}))
    else:  # none stored: the first for lack of resources, the second not understood
        sink.answer = (status, kind, encode({first: 0xA700, second: 0xC000}))
    db = database_with_exports(tmp_path, outputs, "web")

    send_due_exports(db, outputs[0].parent, {"web": StowPeer(sink.url)}, POLICY)

    found = states(db)
    if status == 202:
        assert found[first][0] == ExportState.SENT
        assert found[second][:2] == (ExportState.FAILED, 1)
        assert (
            "HTTP 202 Accepted; instance failed: FailureReason 0xA900 (data set does not"
            in (found[second][2])
        )
    else:
        assert found[first][:2] == (ExportState.PENDING, 1)  # retried
        assert (
            "HTTP 409 Conflict; instance failed: FailureReason 0xA700 (out of resources)"
            in (found[first][2])
        )
        assert found[second][:2] == (ExportState.FAILED, 1)
        assert "FailureReason 0xC000 (cannot understand)" in found[second][2]
    db.dispose()


@pytest.mark.parametrize(
    ("status", "kind", "body", "state", "words"),
    [
        (503, "text/plain", b"busy indexing\nmore", ExportState.PENDING, "(busy indexing)"),
        (429, "application/json", b'{"error": "slow down"}', ExportState.PENDING, "slow down"),
        (401, "text/html", b"<html>no</html>", ExportState.FAILED, "bearer_token_file"),
        (415, "application/json", b'{"message": "no dicom"}', ExportState.FAILED, "(no dicom)"),
    ],
)
def test_refused_requests_retry_or_give_up_by_status(
    sink, outputs, tmp_path, status, kind, body, state, words
) -> None:
    sink.answer = (status, kind, body)
    db = database_with_exports(tmp_path, outputs, "web")

    assert send_due_exports(db, outputs[0].parent, {"web": StowPeer(sink.url)}, POLICY) == 0

    for found, attempts, error in states(db).values():
        assert (found, attempts) == (state, 1)
        assert f"{sink.url} answered HTTP {status}" in error and words in error
    (record,) = list_associations(db)
    assert record.outcome == "refused"
    db.dispose()


def test_requests_are_bounded_and_an_unreachable_destination_is_tried_once(
    sink, outputs, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr("ctp_node.send.sender.STOW_BATCH_BYTES", 1)  # one file a request
    db = database_with_exports(tmp_path, outputs, "web")
    assert send_due_exports(db, outputs[0].parent, {"web": StowPeer(sink.url)}, POLICY) == 2
    assert len(sink.requests) == 2
    db.dispose()

    (tmp_path / "again").mkdir()
    db = database_with_exports(tmp_path / "again", outputs, "web")
    dead = StowPeer(f"http://127.0.0.1:{free_port()}/dicom-web/studies", timeout_s=5)
    assert send_due_exports(db, outputs[0].parent, {"web": dead}, POLICY) == 0
    assert len(list_associations(db)) == 1  # the second request was not made
    assert {(s, a) for s, a, _ in states(db).values()} == {(ExportState.PENDING, 1)}
    db.dispose()


def test_https_with_the_hospital_ca(tls_files, outputs) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files.server.certificate, tls_files.server.private_key)
    for sink in _serve(context):
        trusted = StowPeer(sink.url, tls=ClientTLS(tls_files.ca), timeout_s=5)
        assert [o.stored for o in send_stow(trusted, outputs).outcomes] == [True, True]

        other = StowPeer(sink.url, tls=ClientTLS(tls_files.wrong_ca), timeout_s=5)
        refused = send_stow(other, outputs)
        assert refused.outcome == "unreachable"
        assert refused.reason.startswith(f"TLS handshake with {sink.url} failed: ")
        assert "CERTIFICATE_VERIFY_FAILED" in refused.reason
        assert "tls.ca_certificates" in refused.reason
        assert not any(o.stored or o.permanent for o in refused.outcomes)  # retried
        assert len(sink.requests) == 1

        unusable = StowPeer(sink.url, tls=ClientTLS(tls_files.ca.with_name("none.pem")))
        assert "the TLS files for" in send_stow(unusable, outputs).reason


# --- Through ctp-node serve ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("orthanc", ["dicomweb"], indirect=True)
def test_serve_delivers_a_result_by_stow_rs_byte_for_byte(small_study, orthanc, serve_node) -> None:
    _, paths = small_study
    node = serve_node([{"name": "web", "kind": "dicomweb", "url": orthanc.stow_url}])
    assert stored_count(storescu(paths, node.port, node.ae_title)) == len(paths)

    def delivered() -> list[dict] | None:
        jobs = node.status()["jobs"]
        done = jobs and jobs[-1]["exports"] and set(jobs[-1]["exports"]) == {"web:sent"}
        return jobs if done else None

    (job,) = wait_until(delivered, 180, "the result in Orthanc by STOW-RS")
    written = {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p.read_bytes()
        for p in (node.root / "storage" / job["result_dir"]).rglob("*.dcm")
    }
    held = orthanc_files(orthanc)
    assert len(held) == job["exports"]["web:sent"] > 0
    assert held == written
