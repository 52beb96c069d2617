"""Before sending: does a destination's host name resolve, and does the destination answer a
C-ECHO (``ctp-node config check --echo``). The association is opened as the sender opens it
(:func:`ctp_node.send.scu.open_association`): same calling AE title, timeouts and TLS."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pynetdicom.sop_class import Verification

from ctp_node.send.scu import Peer, client_ae, open_association

if TYPE_CHECKING:
    from ctp_node.send.stow import StowPeer


@dataclass(frozen=True)
class EchoResult:
    """How a destination answered a C-ECHO (or, for DICOMweb, a search): ``answered`` with
    status Success (HTTP 200), and a sentence (the round trip in ms, or why not and what to
    check)."""

    peer: Peer | StowPeer
    answered: bool
    message: str


def echo(peer: Peer) -> EchoResult:
    """Send one C-ECHO to ``peer`` in an association of its own, and release it."""
    ae = client_ae(peer)
    ae.add_requested_context(Verification)
    started = time.monotonic()
    assoc, _, reason = open_association(ae, peer)
    if assoc is None:
        return EchoResult(peer, False, reason)
    try:
        status = assoc.send_c_echo()
    finally:
        if assoc.is_established:
            assoc.release()
    elapsed_ms = (time.monotonic() - started) * 1000
    if not status or "Status" not in status:
        return EchoResult(peer, False, f"{peer} did not answer the C-ECHO (timeout or abort)")
    code = int(status.Status)
    if code != 0x0000:
        return EchoResult(peer, False, f"{peer} answered the C-ECHO with status 0x{code:04X}")
    return EchoResult(peer, True, f"{peer} answered the C-ECHO in {elapsed_ms:.0f} ms")


def unresolved_host(host: str) -> str | None:
    """Why the destination host name ``host`` does not resolve now; ``None`` when it does
    (an IP address always does)."""
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        return (
            f"host {host!r} does not resolve ({exc.strerror or exc}); nothing can be sent "
            "there until it does: check the name, or give the IP address"
        )
    return None
