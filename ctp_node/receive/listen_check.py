"""Before listening: can the listener have its address and port, and is an address this
machine's own. For ``ctp-node config check`` and ``serve``'s start, so that a port another
program holds or a bind address of another machine is a sentence, not a traceback."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from typing import Literal

#: What stands in the way of listening: "not_local" (the address is not this machine's, or
#: does not resolve), "in_use" (another program listens there), "denied" (a port below 1024
#: without the privilege), "other".
ListenObstacle = Literal["not_local", "in_use", "denied", "other"]


@dataclass(frozen=True)
class ListenProblem:
    """Why the listener cannot listen on an address and port: ``obstacle`` and a sentence
    that says what to do."""

    obstacle: ListenObstacle
    message: str


def listen_problem(host: str, port: int) -> ListenProblem | None:
    """Why a listener could not listen on ``host``:``port`` now; ``None`` when it could.

    The port is bound for an instant with ``SO_REUSEADDR``, as pynetdicom's server binds it,
    and released at once.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError as exc:
        return ListenProblem(
            "not_local",
            f"the bind address {host!r} does not resolve ({exc.strerror or exc}); give one of "
            "this machine's IP addresses, or 0.0.0.0 for all of them",
        )
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return bind_failure(host, port, exc)
    return None


def bind_failure(host: str, port: int, exc: OSError) -> ListenProblem:
    """What a failed ``bind`` of the listener on ``host``:``port`` means, and what to do."""
    if exc.errno == errno.EADDRINUSE:
        return ListenProblem(
            "in_use",
            f"port {port} on {host} is in use by another program (another ctp-node or DICOM "
            "server?); stop it, or set node.port (node.tls.port) to a free port",
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return ListenProblem(
            "not_local",
            f"{host} is not an address of this machine; set node.bind to one of its IP "
            "addresses, or 0.0.0.0 for all of them",
        )
    if exc.errno == errno.EACCES:
        return ListenProblem(
            "denied",
            f"port {port} needs privileges this user lacks (ports below 1024); use a port of "
            "1024 or above (11112 is DICOM's), or give the service CAP_NET_BIND_SERVICE",
        )
    return ListenProblem("other", f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def is_local_host(host: str) -> bool:
    """Whether ``host`` (a name or an address) names this machine: every address it resolves
    to is a loopback address or one this machine can bind. False when it does not resolve."""
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, kind, proto, _, address in found:
        with socket.socket(family, kind, proto) as probe:
            try:
                probe.bind((address[0], 0, *address[2:]))
            except OSError:
                return False
    return bool(found)
