"""DICOMweb STOW-RS sender (PS3.18 10.5): files POSTed to a destination's ``url`` as
``multipart/related; type="application/dicom"``, and the answer turned into the same
per-file outcomes the C-STORE sender gives (:class:`ctp_node.send.scu.SendOutcome`), so that
the outbox retries, gives up and asks for attention in the same way.

How an answer is read:

- no connection, a timeout, a TLS failure, HTTP 408, 429 or 5xx: nothing stored, retried;
- 200: every file stored; 202: those not in the answer's FailedSOPSequence stored;
- a file in the FailedSOPSequence (202, 409, 400…): retried when its FailureReason says the
  destination was short of resources or failed to process it (0xA7xx, 0x0110), otherwise a
  permanent failure (it would fail again: the outbox gives up at once, ``status`` exits 1);
- any other 3xx or 4xx (a wrong url, a refused token, an unsupported media type): a permanent
  failure for every file, with the status code and the destination's own words.
"""

from __future__ import annotations

import ssl
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pydicom

from ctp_node.send.echo import EchoResult
from ctp_node.send.scu import HEADER_TAGS, SendOutcome, SentAssociation, identified
from ctp_node.store.models import AuditOutcome, utcnow
from ctp_node.tls import ClientTLS, client_context

#: HTTP statuses after which the same request may succeed later.
_TRANSIENT_HTTP = {408, 429}
#: FailureReason values (PS3.4 B.2.3, PS3.18 10.5.3) for which a retry may succeed.
_PROCESSING_FAILURE = 0x0110
_REASONS = {
    0x0110: "processing failure",
    0x0111: "duplicate SOP instance",
    0x0122: "SOP class not supported",
    0x0124: "not authorized",
    0xA700: "out of resources",
    0xA900: "data set does not match SOP class",
    0xC000: "cannot understand",
    0xC122: "transfer syntax not supported",
}
#: Tags of the FailedSOPSequence's items, for the XML answer (pydicom reads the JSON one).
_FAILED_SOP_SEQUENCE = "00081198"
_REFERENCED_SOP_INSTANCE_UID = "00081155"
_FAILURE_REASON = "00081197"


@dataclass(frozen=True)
class StowPeer:
    """A DICOMweb destination: its STOW-RS ``url``, the bearer token sent with each request
    (never shown), the timeout in seconds of the connection and of each read, and the CAs
    (and client certificate) for an https url (``None``: the system's CAs)."""

    url: str
    bearer_token: str | None = field(default=None, repr=False)
    timeout_s: float = 30.0
    tls: ClientTLS | None = None

    #: For the audit trail, which names a DIMSE peer by its AE titles.
    ae_title = ""
    calling_ae_title = ""

    @property
    def address(self) -> str:
        return self.url

    def __str__(self) -> str:
        return self.url


def send_stow(peer: StowPeer, paths: Sequence[Path]) -> SentAssociation:
    """POST ``paths`` to ``peer`` in one STOW-RS request and say how each file went (see the
    module's docstring). The outcome is "released" when the destination answered 200 or 202,
    "refused" for any other answer, "unreachable" when there was none."""
    paths = [Path(p) for p in paths]
    headers = [
        pydicom.dcmread(p, stop_before_pixels=True, specific_tags=HEADER_TAGS) for p in paths
    ]
    uids = [str(ds.get("SOPInstanceUID", "")) for ds in headers]
    started_at = utcnow()
    boundary = uuid.uuid4().hex
    try:
        with _client(peer) as client:
            response = client.post(
                peer.url,
                content=_multipart(paths, boundary),
                headers={
                    "Content-Type": f'multipart/related; type="application/dicom"; '
                    f"boundary={boundary}",
                    "Accept": "application/dicom+json, application/dicom+xml;q=0.9, */*;q=0.1",
                },
            )
    except (httpx.HTTPError, OSError) as exc:
        reason = _unanswered(peer, exc)
        outcomes = [SendOutcome(p, False, None, reason) for p in paths]
        return SentAssociation(
            peer,
            started_at,
            utcnow(),
            AuditOutcome.UNREACHABLE,
            reason,
            identified(outcomes, headers),
        )
    outcomes = _outcomes(peer, response, paths, uids)
    outcome, reason = AuditOutcome.RELEASED, ""
    if response.status_code not in (200, 202):
        outcome, reason = AuditOutcome.REFUSED, _answered(peer, response)
    return SentAssociation(
        peer, started_at, utcnow(), outcome, reason, identified(outcomes, headers)
    )


def reach(peer: StowPeer) -> EchoResult:
    """Does ``peer`` answer (``config check --echo``): a QIDO-RS search for one study at the
    same url, with the same token and TLS as the sender's requests."""
    started = time.monotonic()
    try:
        with _client(peer) as client:
            response = client.get(
                peer.url, params={"limit": "1"}, headers={"Accept": "application/dicom+json"}
            )
    except (httpx.HTTPError, OSError) as exc:
        return EchoResult(peer, False, _unanswered(peer, exc))
    elapsed_ms = (time.monotonic() - started) * 1000
    if response.status_code in (200, 204):
        return EchoResult(peer, True, f"{peer} answered a search in {elapsed_ms:.0f} ms")
    return EchoResult(peer, False, _answered(peer, response))


def _unanswered(peer: StowPeer, exc: BaseException) -> str:
    """Why a request to ``peer`` got no answer, in a sentence with what to check."""
    if not isinstance(exc, httpx.HTTPError):  # building the TLS context: the files
        return f"the TLS files for {peer} cannot be used ({exc}); run ctp-node config check"
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        return (
            f"TLS handshake with {peer} failed: {_why(exc)}; the destination's "
            "tls.ca_certificates (or, without tls, the system's CAs) must hold the CA that "
            "signed its certificate, and the certificate must name the url's host"
        )
    return f"no answer from {peer}: {_why(exc)}; check that the destination is running and its url"


def _client(peer: StowPeer) -> httpx.Client:
    """An HTTP client for one request to ``peer``: its token, timeout and TLS; redirects are
    not followed (a STOW-RS POST is not to be resent elsewhere unasked)."""
    verify: ssl.SSLContext = (
        client_context(peer.tls) if peer.tls is not None else ssl.create_default_context()
    )
    headers = {"Authorization": f"Bearer {peer.bearer_token}"} if peer.bearer_token else {}
    return httpx.Client(
        headers=headers, timeout=peer.timeout_s, verify=verify, follow_redirects=False
    )


def _multipart(paths: Sequence[Path], boundary: str) -> bytes:
    """The request body: each file as it is stored, one part each (PS3.18 8.6.1.2)."""
    delimiter = f"--{boundary}\r\n".encode()
    parts = [
        delimiter + b"Content-Type: application/dicom\r\n\r\n" + path.read_bytes() + b"\r\n"
        for path in paths
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def _outcomes(
    peer: StowPeer, response: httpx.Response, paths: list[Path], uids: list[str]
) -> list[SendOutcome]:
    """One outcome per file from the destination's answer (see the module's docstring)."""
    code = response.status_code
    failures = _failures(response)
    answered = _answered(peer, response)
    retry = code in _TRANSIENT_HTTP or code >= 500
    outcomes = []
    for path, uid in zip(paths, uids, strict=True):
        if retry:
            outcomes.append(SendOutcome(path, False, code, f"{answered}; retried later"))
        elif uid in failures:
            reason = failures[uid]
            transient = reason is not None and (
                reason == _PROCESSING_FAILURE or 0xA700 <= reason <= 0xA7FF
            )
            outcomes.append(
                SendOutcome(
                    path,
                    False,
                    reason if reason is not None else code,
                    f"{answered}; instance failed: {_reason_text(reason)}",
                    permanent=not transient,
                )
            )
        elif code in (200, 202):
            outcomes.append(SendOutcome(path, True, code, "stored"))
        else:
            outcomes.append(SendOutcome(path, False, code, answered, permanent=True))
    return outcomes


def _answered(peer: StowPeer, response: httpx.Response) -> str:
    """What ``peer`` answered, in a sentence: the status, its own words, and what to check."""
    code = response.status_code
    text = f"{peer} answered HTTP {code} {response.reason_phrase}".rstrip()
    words = _server_words(response)
    if words:
        text += f" ({words})"
    if code in (401, 403):
        text += (
            "; the destination refused the node's credentials: check its bearer_token_file "
            "or bearer_token_env"
        )
    elif code in (404, 405) or 300 <= code < 400:
        where = response.headers.get("location")
        text += "; check the destination's url (the STOW-RS endpoint, e.g. …/dicom-web/studies)"
        if where:
            text += f"; it points to {where}"
    elif code == 413:
        text += "; the destination takes smaller requests: raise its upload limit"
    return text


def _server_words(response: httpx.Response) -> str:
    """The destination's own explanation: a JSON ``Message``/``message``/``error`` or the
    first line of a plain-text body, at most 200 characters; "" when there is none."""
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if kind.endswith("json") or kind == "":
            body = response.json()
            if isinstance(body, dict):
                for key in ("Message", "message", "error", "detail"):
                    if isinstance(body.get(key), str):
                        return body[key][:200]
            return ""
    except ValueError:
        pass
    if kind.startswith("text/plain"):
        lines = response.text.strip().splitlines()
        return lines[0][:200] if lines else ""
    return ""


def _failures(response: httpx.Response) -> dict[str, int | None]:
    """SOP Instance UID → FailureReason (``None`` when not given) of each item in the
    answer's FailedSOPSequence, from DICOM JSON or XML (PS3.18 F.2, PS3.19 A.1); empty when
    the answer has none or is neither."""
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if kind.endswith("xml"):
            return _xml_failures(response.content)
        body = response.json()
    except (ValueError, ET.ParseError):
        return {}
    if isinstance(body, list):
        body = body[0] if body else {}
    try:
        answer = pydicom.Dataset.from_json(body)
        items = answer.get("FailedSOPSequence") or []
        return {
            str(item.ReferencedSOPInstanceUID): _reason(item.get("FailureReason"))
            for item in items
            if item.get("ReferencedSOPInstanceUID")
        }
    except (TypeError, ValueError, KeyError, AttributeError):
        return {}


def _reason(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) else None


def _xml_failures(content: bytes) -> dict[str, int | None]:
    root = ET.fromstring(content)
    found: dict[str, int | None] = {}
    for sequence in root.iterfind(f"{{*}}DicomAttribute[@tag='{_FAILED_SOP_SEQUENCE}']"):
        for item in sequence.iterfind("{*}Item"):
            uid = item.findtext(
                f"{{*}}DicomAttribute[@tag='{_REFERENCED_SOP_INSTANCE_UID}']/{{*}}Value"
            )
            reason = item.findtext(f"{{*}}DicomAttribute[@tag='{_FAILURE_REASON}']/{{*}}Value")
            if uid:
                found[uid.strip()] = int(reason) if reason and reason.strip().isdigit() else None
    return found


def _reason_text(reason: int | None) -> str:
    if reason is None:
        return "no reason given"
    name = _REASONS.get(reason) or ("out of resources" if 0xA700 <= reason <= 0xA7FF else "")
    return f"FailureReason 0x{reason:04X}" + (f" ({name})" if name else "")


def _why(exc: BaseException) -> str:
    """One line for a transport error (httpx's own words, or its type)."""
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
