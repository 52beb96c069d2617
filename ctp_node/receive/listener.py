"""The listening socket and the connections on it: who gets a thread, for how long, and with
how many bytes, so that idle, half-open or hostile connections never keep a scanner out.

pynetdicom's server gives every TCP connection an association thread from the first byte
and counts it against ``maximum_associations`` until its timeouts run out: a dozen idle
connections took the node off the air for minutes. Here a connection goes through two
stages, each with its own budget:

*Pending* (connected, no whole A-ASSOCIATE-RQ yet)
    Held in a :class:`WaitingRoom`, one thread for all of them, until the request has arrived
    in full; anything else is refused there, unread. At most ``node.max_pending_connections``
    at once; one more closes the oldest. Each has ``node.request_timeout_s`` to complete its
    A-ASSOCIATE-RQ (and TLS handshake: the ARTIM timer of PS3.8 9.1.5) before it is closed.
    A scanner sends its request within milliseconds of connecting, so neither limit delays
    it.
*Admitted* (its A-ASSOCIATE-RQ was accepted)
    At most ``node.max_associations``, and ``node.max_associations_per_caller`` from one
    caller (calling AE title at one address), so that one busy or hostile caller cannot take
    every slot. When they are all taken, the oldest association that
    has sent no DIMSE message since it was accepted is closed to make room, else the one
    silent the longest if for ``node.idle_eviction_s`` or more; otherwise the request is
    refused with A-ASSOCIATE-RJ "local limit exceeded".

Every read is bounded: a PDU declaring more than ``node.max_pdu_bytes`` (the length the node
announces as its maximum) is refused before a byte of it is read, a C-STORE data set larger
than ``node.max_object_bytes`` ends its association, and a socket read waits at most the
stage's timeout. A data set is written to ``spool/.incoming`` while it arrives (pynetdicom's
``STORE_RECV_CHUNKED_DATASET``), never held in memory.

What goes wrong on a connection is reported once, when it ends: one log line with the peer's
address, its AE titles and the reason, and a record (kind ``connection``) that ``ctp-node
status`` lists; pynetdicom's own error lines and tracebacks for it are folded into that line
(:class:`ConnectionProblems`). Lines and records are limited per peer address
(:data:`REPORTS_PER_PEER_PER_MINUTE`), the excess counted and reported as one summary.
"""

from __future__ import annotations

import logging
import queue
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import NamedTemporaryFile

from pynetdicom import _config, dimse_messages
from pynetdicom.association import Association
from pynetdicom.transport import (
    AssociationSocket,
    RequestHandler,
    ThreadedAssociationServer,
)

from ctp_node.receive.admission import Requestor, printable, report_refused_association
from ctp_node.receive.spool import DigestingFile
from ctp_node.receive.waiting_room import A_ASSOCIATE_RQ, WaitingRoom, ae_titles, one_line, shut
from ctp_node.store import Database
from ctp_node.store.ingest import record_rejection

log = logging.getLogger(__name__)

#: Connection reports (log line and record) per peer address and minute; beyond it they are
#: counted and summed up in one line, so that a flood cannot fill the log or the database.
REPORTS_PER_PEER_PER_MINUTE = 30

#: Largest command set of a DIMSE message, bytes: a command set is a few hundred bytes.
MAX_COMMAND_BYTES = 65_536

_P_DATA_TF = 0x04


class ConnectionRefusedByNode(OSError):
    """A peer sent more than the node accepts; pynetdicom treats it as a closed connection."""


@dataclass(frozen=True)
class ConnectionLimits:
    """The budgets of :mod:`ctp_node.receive.listener` (the meaning of each is in
    :class:`ctp_node.config.node.NodeConfig`)."""

    max_associations: int = 10
    max_associations_per_caller: int = 8
    max_pending_connections: int = 256
    request_timeout_s: float = 5.0
    idle_eviction_s: float = 10.0
    network_timeout_s: float = 60.0
    acse_timeout_s: float = 30.0
    max_pdu_bytes: int = 4_194_304
    max_object_bytes: int = 2_147_483_648


@dataclass
class _Connection:
    address: str
    opened: float
    sock: socket.socket
    assoc: Association | None = None
    admitted: bool = False
    problems: list[str] = field(default_factory=list)
    own: str = ""  # the node's reason for ending it, when it did
    titles: tuple[str, str] | None = None  # (called, calling) read from a partial request

    def reason(self) -> str:
        if not self.own:
            return "; ".join(self.problems)
        others = [p for p in self.problems if p != _ENDED_BY_NODE and p not in self.own]
        return "; ".join([self.own, *others])


class ConnectionGuard:
    """The budgets and the reports of one listener's connections (thread-safe)."""

    def __init__(self, limits: ConnectionLimits, db: Database, incoming: Path) -> None:
        self.limits = limits
        self.db = db
        self.incoming = incoming
        self._lock = threading.Lock()
        self._connections: dict[int, _Connection] = {}  # by id() of the socket
        self._reports: dict[str, list[float | int]] = {}  # address: [window start, n, excess]
        self._records: queue.Queue[tuple[str, str, str, str]] = queue.Queue()
        threading.Thread(target=self._write_records, name="ctp-node reports", daemon=True).start()

    # ---- handed over by the waiting room ---------------------------------------------
    def opened(self, sock: socket.socket, address: str) -> None:
        """A connection leaves the waiting room for pynetdicom: follow it until it ends."""
        with self._lock:
            self._connections[id(sock)] = _Connection(address, time.monotonic(), sock)

    def report_waiting(self, address: str, reason: str, titles: tuple[str, str] | None) -> None:
        """Report a connection the waiting room closed before pynetdicom saw it."""
        connection = _Connection(address, time.monotonic(), None, titles=titles)  # type: ignore[arg-type]
        connection.problems.append(reason)
        self._report(connection)

    def attach(self, sock: socket.socket, assoc: Association) -> None:
        with self._lock:
            connection = self._connections.get(id(sock))
            if connection is not None:
                connection.assoc = assoc

    def handshake_failed(self, sock: socket.socket, reason: str, report: bool = True) -> None:
        with self._lock:
            connection = self._connections.pop(id(sock), None)
        if connection is not None and report:
            connection.problems.append(f"TLS handshake failed: {reason}")
            self._report(connection)

    # ---- admitted stage ---------------------------------------------------------------
    def admit(self, assoc: Association) -> str | None:
        """Admit ``assoc`` (its A-ASSOCIATE-RQ is acceptable otherwise), or say why not:
        every association slot is busy. To make room, closes the oldest association that has
        sent no DIMSE message since it was accepted (a sender sends its first within
        milliseconds), else the longest-silent one if silent for ``idle_eviction_s``."""
        now = time.monotonic()
        evicted: _Connection | None = None
        why = ""
        caller = _caller(assoc)
        with self._lock:
            connection = self._by_assoc(assoc)
            admitted = [c for c in self._connections.values() if c.admitted]
            per_caller = self.limits.max_associations_per_caller
            if sum(_caller(c.assoc) == caller for c in admitted) >= per_caller:
                return (
                    f"node.max_associations_per_caller ({per_caller}) associations from "
                    f"{caller[1]!r} at {caller[0]} are open"
                )
            if len(admitted) >= self.limits.max_associations:
                mute = [c for c in admitted if not _has_spoken(c)]
                silent = max(admitted, key=lambda c: now - _last_activity(c))
                if mute:
                    evicted = min(mute, key=lambda c: c.opened)
                    why = "without a DIMSE message since it was accepted"
                elif now - _last_activity(silent) >= self.limits.idle_eviction_s:
                    evicted = silent
                    why = f"after {now - _last_activity(silent):.0f} s without a PDU"
                else:
                    return (
                        f"node.max_associations ({self.limits.max_associations}) associations "
                        f"are open and none has been silent for node.idle_eviction_s "
                        f"({self.limits.idle_eviction_s:g} s)"
                    )
                self._connections.pop(id(evicted.sock), None)
            if connection is not None:
                connection.admitted = True
        if evicted is not None:
            evicted.problems.append(
                f"closed {why} to make room for a new association (node.max_associations "
                f"{self.limits.max_associations})"
            )
            self._report(evicted)
            shut(evicted.sock)
        _set_timeouts(assoc, self.limits.network_timeout_s, self.limits.acse_timeout_s)
        return None

    # ---- problems and the end ---------------------------------------------------------
    def note(self, assoc: Association, problem: str, first: bool = False) -> None:
        """Keep ``problem`` for the report of ``assoc``'s connection when it ends (``first``:
        the node's own reason, which leads the report)."""
        with self._lock:
            connection = self._by_assoc(assoc)
            if connection is not None and first:
                connection.own = connection.own or problem
            elif connection is not None:
                _add_problem(connection.problems, problem)

    def finished(self, assoc: Association) -> None:
        """The association's thread ends: report what went wrong, release its budget and
        remove the data set it left unfinished."""
        _remove_unfinished_data_set(assoc)
        with self._lock:
            connection = self._by_assoc(assoc)
            if connection is None:
                return
            self._connections.pop(id(connection.sock), None)
        if assoc.requestor.primitive is None and not connection.reason():
            waited = time.monotonic() - connection.opened
            if waited < self.limits.request_timeout_s * 0.9:
                log.debug("connection from %s closed without a request", connection.address)
                return
            connection.problems.append(
                f"no A-ASSOCIATE-RQ within node.request_timeout_s "
                f"({self.limits.request_timeout_s:g} s)"
            )
        if connection.reason():
            self._report(connection)

    def _by_assoc(self, assoc: Association) -> _Connection | None:
        for connection in self._connections.values():
            if connection.assoc is assoc:
                return connection
        return None

    def report_refusal(self, requestor: Requestor, reason: str) -> None:
        """A refused association: one log line and one record, within the peer's allowance
        (a flood of refused requests must not flood the log and the database)."""
        if not self._within_allowance(requestor.address):
            return
        # written before the answer goes out (within the allowance: a few a minute)
        report_refused_association(requestor, reason, self.db)

    def _within_allowance(self, address: str) -> bool:
        """Count a report for ``address``; False beyond REPORTS_PER_PEER_PER_MINUTE."""
        now = time.monotonic()
        with self._lock:
            window = self._reports.setdefault(address, [now, 0, 0])
            if now - window[0] >= 60:
                if window[2]:
                    self._log_left_out(address, int(window[2]))
                window[:] = [now, 0, 0]
            window[1] += 1
            if window[1] > REPORTS_PER_PEER_PER_MINUTE:
                window[2] += 1
                return False
        return True

    def _sum_up_quiet_peers(self) -> None:
        """Say how many reports were left out for a peer whose minute is over."""
        now = time.monotonic()
        with self._lock:
            over = [(a, w) for a, w in self._reports.items() if now - w[0] >= 60]
            for address, _ in over:
                del self._reports[address]
        for address, window in over:
            if window[2]:
                self._log_left_out(address, int(window[2]))

    @staticmethod
    def _log_left_out(address: str, count: int) -> None:
        log.warning(
            "%d more connection(s) from %s went wrong in the last minute (not reported one "
            "by one: at most %d a minute)",
            count,
            address,
            REPORTS_PER_PEER_PER_MINUTE,
        )

    def _report(self, connection: _Connection) -> None:
        """One log line and one record for a connection that went wrong (rate-limited)."""
        if not self._within_allowance(connection.address):
            return
        requestor = _requestor(connection)
        reason = connection.reason()
        log.warning(
            "connection from %s (calling %s, called %s) ended: %s",
            requestor.address,
            requestor.ae_title or "?",
            requestor.called_ae_title or "?",
            reason,
        )
        assoc = connection.assoc
        requested = assoc is not None and (
            assoc.requestor.primitive is not None
            or getattr(assoc.dul.socket, "requested_titles", None) is not None
        )
        kind = "association" if requested or connection.titles else "connection"
        self._records.put((kind, requestor.ae_title, requestor.address, reason))

    def _write_records(self) -> None:
        """The records of :meth:`_report`, written by one thread: a burst of bad connections
        never waits for the database, nor makes a scanner's connection wait."""
        while True:
            try:
                kind, ae_title, address, reason = self._records.get(timeout=5.0)
            except queue.Empty:
                self._sum_up_quiet_peers()
                continue
            try:
                record_rejection(
                    self.db,
                    kind=kind,
                    calling_ae_title=ae_title,
                    peer_address=address,
                    status=0,
                    reason=reason,
                )
            except Exception as exc:
                log.error("could not record the connection from %s: %s", address, exc)
            finally:
                self._records.task_done()


def _add_problem(problems: list[str], problem: str) -> None:
    """Keep ``problem`` unless an earlier one says it already; it replaces those it repeats
    (pynetdicom logs an error, then the same error again as the exception of a second line)."""
    if any(problem in earlier for earlier in problems) or len(problems) >= 4:
        return
    problems[:] = [earlier for earlier in problems if earlier not in problem]
    problems.append(problem)


#: What pynetdicom logs when the node stops reading a connection (:class:`BoundedSocket`):
#: the node's own reason says it better.
_ENDED_BY_NODE = "Connection closed before the entire PDU was received"


def _requestor(connection: _Connection) -> Requestor:
    assoc = connection.assoc
    if assoc is not None and assoc.requestor.primitive is not None:
        return Requestor.of(assoc)
    titles = getattr(assoc.dul.socket, "requested_titles", None) if assoc is not None else None
    called, calling = titles or connection.titles or ("", "")
    return Requestor(calling, called, connection.address)


def _caller(assoc: Association | None) -> tuple[str, str]:
    """(address, calling AE title): one caller, for ``max_associations_per_caller``."""
    if assoc is None or assoc.requestor.primitive is None:
        return ("", "")
    requestor = Requestor.of(assoc)
    return (requestor.address, requestor.ae_title)


def _has_spoken(connection: _Connection) -> bool:
    """Whether the association has sent a P-DATA-TF (a DIMSE message) since it was accepted."""
    dul_socket = connection.assoc.dul.socket if connection.assoc is not None else None
    return getattr(dul_socket, "has_spoken", True)


def _last_activity(connection: _Connection) -> float:
    dul_socket = connection.assoc.dul.socket if connection.assoc is not None else None
    return getattr(dul_socket, "last_activity", connection.opened)


def _set_timeouts(assoc: Association, read_timeout_s: float, acse_timeout_s: float) -> None:
    assoc.acse_timeout = acse_timeout_s
    raw = assoc.dul.socket.socket if assoc.dul.socket is not None else None
    if raw is not None:
        raw.settimeout(read_timeout_s)


def _remove_unfinished_data_set(assoc: Association) -> None:
    """A C-STORE whose data set never finished arriving leaves pynetdicom's temporary file."""
    message = getattr(assoc.dimse, "message", None)
    handle = getattr(message, "_data_set_file", None)
    if handle is None:
        return
    try:
        handle.close()
        Path(handle.name).unlink(missing_ok=True)
    except OSError as exc:
        log.error("could not remove the unfinished data set %s: %s", handle.name, exc)


class BoundedSocket(AssociationSocket):
    """pynetdicom's socket, reading PDUs within the node's limits.

    pynetdicom's DUL reads a PDU as ``recv(6)`` (type and length) then ``recv(length)``; a
    length above ``max_pdu_bytes`` is refused at once instead of being read, and the data set
    bytes of each C-STORE are counted as they arrive.
    """

    limits: ConnectionLimits = ConnectionLimits()

    def __init__(self, assoc: Association, client_socket: socket.socket) -> None:
        super().__init__(assoc, client_socket=client_socket)
        self.last_activity = time.monotonic()
        self._pdu_type: int | None = None
        self._refused = False
        self.has_spoken = False  # a P-DATA-TF (a DIMSE message) has arrived
        #: The raw called and calling AE titles of the A-ASSOCIATE-RQ, for the report of a
        #: request pynetdicom could not decode.
        self.requested_titles: tuple[str, str] | None = None
        self._command_bytes = 0
        self._data_set_bytes = 0

    def recv(self, nr_bytes: int) -> bytearray:
        if self._refused:
            return bytearray()  # read as the end of the stream
        if self._pdu_type is None:  # a PDU header
            data = super().recv(nr_bytes)
            if len(data) == 6:
                pdu_type, _, length = struct.unpack(">BBL", data)
                if length > self.limits.max_pdu_bytes:
                    self._refuse(
                        f"a PDU of type 0x{pdu_type:02X} declared {length} bytes, more than "
                        f"node.max_pdu_bytes ({self.limits.max_pdu_bytes}); not read"
                    )
                self._pdu_type = pdu_type
            return data
        pdu_type, self._pdu_type = self._pdu_type, None
        data = super().recv(nr_bytes)
        self.last_activity = time.monotonic()
        if pdu_type == _P_DATA_TF:
            self.has_spoken = True
            self._count(data)
        elif pdu_type == A_ASSOCIATE_RQ and self.requested_titles is None:
            self.requested_titles = ae_titles(data)
        return data

    def _count(self, body: bytes | bytearray) -> None:
        """Add up a P-DATA-TF's fragments (PS3.8 9.3.5): 4-byte length, context ID, control
        header (bit 0: command), value."""
        offset = 0
        while offset + 6 <= len(body):
            (length,) = struct.unpack_from(">L", body, offset)
            command = body[offset + 5] & 1
            if command:
                if self._data_set_bytes:  # a new message starts
                    self._command_bytes = self._data_set_bytes = 0
                self._command_bytes += length - 2
            else:
                self._data_set_bytes += length - 2
            offset += 4 + length
        if self._command_bytes > MAX_COMMAND_BYTES:
            self._refuse(f"a DIMSE command set of more than {MAX_COMMAND_BYTES} bytes")
        if self._data_set_bytes > self.limits.max_object_bytes:
            self._refuse(
                f"a data set of more than node.max_object_bytes ({self.limits.max_object_bytes}"
                " bytes); the association is closed"
            )

    def _refuse(self, reason: str) -> None:
        """Stop reading this connection: note why, close it, and have pynetdicom see its end."""
        self._refused = True
        self.assoc.guard.note(self.assoc, reason, first=True)
        if self.socket is not None:
            shut(self.socket)
        raise ConnectionRefusedByNode(reason)


class GuardedAssociation(Association):
    """An acceptor association that tells its guard when its thread ends."""

    guard: ConnectionGuard

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.guard.finished(self)


class GuardedRequestHandler(RequestHandler):
    """pynetdicom's request handler, building a :class:`GuardedAssociation` on a
    :class:`BoundedSocket` (the rest as pynetdicom 3.0's ``_create_association``)."""

    server: GuardedServer

    def _create_association(self) -> Association:
        server = self.server
        assoc = GuardedAssociation(self.ae, "acceptor")
        assoc.guard = server.guard
        assoc._server = server
        assoc.name = f"AcceptorThread@{time.strftime('%Y%m%d%H%M%S')}"
        sock = BoundedSocket(assoc, client_socket=self.request)
        sock.limits = server.guard.limits
        assoc.set_socket(sock)
        assoc.acse_timeout = server.guard.limits.request_timeout_s  # the ARTIM timer
        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        assoc.acceptor.supported_contexts = list(server.contexts)
        assoc.requestor.address_info = self.remote
        for event, handlers in server._handlers.items():
            if event.is_intervention and handlers:
                assoc.bind(event, *handlers)
            elif not event.is_intervention:
                for handler, args in handlers:
                    assoc.bind(event, handler, args)
        server.guard.attach(self.request, assoc)
        return assoc


class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with a :class:`WaitingRoom` before pynetdicom and the
    budgets of :class:`ConnectionGuard` after it; a TLS handshake happens in the connection's
    own thread, within ``request_timeout_s``, not in the thread that accepts connections."""

    #: Listen backlog: connections the kernel queues before they are accepted (the default,
    #: 5, drops a scanner's SYN while a burst of connections is waiting).
    request_queue_size = 256

    def __init__(self, ae, address, ae_title, contexts, ssl_context, evt_handlers, guard):  # type: ignore[no-untyped-def]
        self.guard = guard
        # before the bind: a bind that fails calls server_close, which stops the waiting room
        self.waiting_room = WaitingRoom(guard.limits, guard, self._start_thread)
        super().__init__(
            ae,
            address,
            ae_title,
            contexts,
            ssl_context,
            evt_handlers=evt_handlers,
            request_handler=GuardedRequestHandler,
        )
        self.serving_thread: threading.Thread | None = None  # set by start_guarded_server

    def accepting(self) -> bool:
        """Whether the listening socket is open and its thread accepts on it (readiness)."""
        thread = self.serving_thread
        return thread is not None and thread.is_alive() and self.socket.fileno() >= 0

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = self.socket.accept()
        client.settimeout(self.guard.limits.request_timeout_s)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # see send.scu
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False
            )
        return client, address

    def process_request(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        self.waiting_room.add(request, client_address)

    def _start_thread(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        socketserver.ThreadingMixIn.process_request(self, request, client_address)

    def process_request_thread(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        if isinstance(request, ssl.SSLSocket):
            try:
                request.do_handshake()
            except (OSError, ValueError) as exc:
                # ctp_node.tls's contexts report their refusals themselves, in better words
                reports = not hasattr(self.ssl_context, "handshake_failed")
                self.guard.handshake_failed(request, one_line(exc), report=reports)
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)

    def service_actions(self) -> None:
        """Nothing: pynetdicom's server runs a full ``gc.collect()`` every 60 connections here,
        which holds the interpreter for 0.1 s and more as the heap grows (77 % of the time the
        listener held the interpreter under bench/soak.py's fuzz, and C-ECHO waited behind it).
        Python's own collector frees finished associations' cycles."""

    def server_close(self) -> None:
        # socketserver closes a socket it could not bind before __init__ made the waiting room
        waiting_room = getattr(self, "waiting_room", None)
        if waiting_room is not None:
            waiting_room.stop()
        super().server_close()

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        exc = sys.exc_info()[1]
        log.error("connection from %s failed: %s", client_address[0], one_line(exc))


def start_guarded_server(
    ae,  # type: ignore[no-untyped-def]
    address: tuple[str, int],
    evt_handlers: list,
    guard: ConnectionGuard,
    ssl_context: ssl.SSLContext | None = None,
) -> GuardedServer:
    """Start a :class:`GuardedServer` for ``ae`` in a background thread (as pynetdicom's
    ``AE.start_server(block=False)`` does); stop it with ``server.shutdown()``."""
    _receive_data_sets_to(guard)
    # pynetdicom's own limit counts pending connections too: ours (ConnectionGuard) decide.
    ae.maximum_associations = 2 * (
        guard.limits.max_associations + guard.limits.max_pending_connections
    )
    ae.maximum_pdu_size = guard.limits.max_pdu_bytes
    server = GuardedServer(
        ae, address, ae.ae_title, ae.supported_contexts, ssl_context, evt_handlers, guard
    )
    thread = threading.Thread(target=server.serve_forever, name="ctp-node listener", daemon=True)
    server.serving_thread = thread
    thread.start()
    ae._servers.append(server)
    return server


# ---- data sets to disk ------------------------------------------------------------------

_INCOMING: dict[int, Path] = {}  # id(server): where its data sets are written


def _receive_data_sets_to(guard: ConnectionGuard) -> None:
    """Have pynetdicom write C-STORE data sets to a file as they arrive. Its temporary file
    has no folder parameter: the factory below puts it in the spool's ``.incoming`` folder of
    the listener whose thread receives it (same file system: the spool adopts it by a
    rename), and in the system's temporary folder otherwise."""
    _config.STORE_RECV_CHUNKED_DATASET = True
    dimse_messages.NamedTemporaryFile = _incoming_temporary_file  # type: ignore[attr-defined]


def _incoming_temporary_file(**kwargs):  # type: ignore[no-untyped-def]
    thread = threading.current_thread()
    assoc = getattr(thread, "assoc", thread)  # a DUL thread, or the association itself
    guard = getattr(assoc, "guard", None)
    if isinstance(guard, ConnectionGuard):
        kwargs.setdefault("dir", guard.incoming)
        kwargs.setdefault("prefix", "receiving-")
    return DigestingFile(NamedTemporaryFile(**kwargs))  # its SHA-256 computed as it arrives


# ---- pynetdicom's log lines -------------------------------------------------------------


class ConnectionProblems(logging.Filter):
    """Folds pynetdicom's warnings and errors about an acceptor connection (and their
    tracebacks) into that connection's single report; elsewhere, a traceback becomes the
    end of its line. Also removes control characters: pynetdicom quotes AE titles as sent."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = printable(record.getMessage())
        if record.exc_info and record.exc_info[1] is not None:
            exception = one_line(record.exc_info[1])
            message = exception if message in exception else f"{message}: {exception}"
        thread = threading.current_thread()
        assoc = getattr(thread, "assoc", thread)
        if record.levelno >= logging.WARNING and isinstance(assoc, GuardedAssociation):
            assoc.guard.note(assoc, message)
            return False
        record.msg, record.args = message, ()
        record.exc_info, record.exc_text = None, None
        return True


def fold_pynetdicom_logs() -> None:
    """Install :class:`ConnectionProblems` on every pynetdicom logger (once), and unbind
    pynetdicom's standard event log handlers: they describe every PDU and DIMSE message at
    DEBUG level, which the node never shows, at a cost on every P-DATA PDU received."""
    _config.LOG_HANDLER_LEVEL = "none"
    names = [n for n in logging.root.manager.loggerDict if n.startswith("pynetdicom")]
    for logger in map(logging.getLogger, ["pynetdicom", *names]):
        if not any(isinstance(f, ConnectionProblems) for f in logger.filters):
            logger.addFilter(ConnectionProblems())
