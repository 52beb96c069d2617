"""The waiting room: connections that have not yet sent a whole A-ASSOCIATE-RQ, held by one
thread until it has arrived (then handed to pynetdicom), refused unread when they send
anything else, closed when they take too long (:mod:`ctp_node.receive.listener` describes the
stages and budgets).
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ctp_node.receive.admission import printable

if TYPE_CHECKING:
    from ctp_node.receive.listener import ConnectionGuard, ConnectionLimits

log = logging.getLogger(__name__)

A_ASSOCIATE_RQ = 0x01
#: Where an A-ASSOCIATE-RQ's body (after type and length) holds the called and calling AE.
_TITLES = ((4, 20), (20, 36))


def ae_titles(body: bytes | bytearray) -> tuple[str, str]:
    """(called, calling) AE titles of an A-ASSOCIATE-RQ's body (after its 6-byte header),
    printable."""
    called, calling = (printable(bytes(body[a:b]).decode("latin-1")) for a, b in _TITLES)
    return called, calling


class WaitingRoom:
    """Connections that have not yet sent a whole A-ASSOCIATE-RQ, watched by one thread with
    no thread of their own: an idle or half-open connection costs a file descriptor, not two
    polling threads. A connection leaves it for pynetdicom once its request has arrived in
    full (seen with ``MSG_PEEK``, nothing consumed; ``SO_RCVLOWAT`` has the kernel wake the
    room only when the rest is there), or at once under TLS (the handshake comes first). It
    is closed with a report when it sends anything but a request, declares a request longer
    than ``max_pdu_bytes``, stays longer than ``request_timeout_s``, or is the oldest when
    ``max_pending_connections`` are waiting.
    """

    #: Bytes of a request waited for in the room; a longer one is handed over as it is.
    PEEK_BYTES = 65_536

    def __init__(
        self,
        limits: ConnectionLimits,
        guard: ConnectionGuard,
        hand_over: Callable[[socket.socket, tuple[str, int]], None],
    ) -> None:
        self.limits = limits
        self.guard = guard
        self.hand_over = hand_over
        self._selector = selectors.DefaultSelector()
        self._waiting: dict[socket.socket, tuple[tuple[str, int], float]] = {}  # oldest first
        self._arrived: list[tuple[socket.socket, tuple[str, int]]] = []
        self._lock = threading.Lock()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="ctp-node waiting room", daemon=True)
        self._thread.start()

    def add(self, sock: socket.socket, address: tuple[str, int]) -> None:
        with self._lock:
            self._arrived.append((sock, address))
        self._wake()

    def stop(self) -> None:
        self._stopped = True
        self._wake()
        self._thread.join(timeout=5)
        for sock in [*self._waiting, *(s for s, _ in self._arrived)]:
            _close(sock)

    def _wake(self) -> None:
        try:
            self._wake_write.send(b"\0")
        except OSError:
            pass

    def _run(self) -> None:
        while not self._stopped:
            try:
                self._turn()
            except Exception as exc:  # never let the room die: nobody would get in
                log.error("waiting room: %s", one_line(exc))

    def _turn(self) -> None:
        oldest = next(iter(self._waiting.values()), None)
        now = time.monotonic()
        timeout = 1.0 if oldest is None else oldest[1] + self.limits.request_timeout_s - now
        for key, _ in self._selector.select(max(0.0, min(timeout, 1.0))):
            if key.fileobj is self._wake_read:
                try:
                    while self._wake_read.recv(4096):
                        pass
                except BlockingIOError:
                    pass
            elif key.fileobj in self._waiting:
                self._look(key.fileobj)  # type: ignore[arg-type]
        self._take_arrivals()
        self._expire()

    def _take_arrivals(self) -> None:
        with self._lock:
            arrived, self._arrived = self._arrived, []
        for sock, address in arrived:
            while len(self._waiting) >= self.limits.max_pending_connections:
                oldest = next(iter(self._waiting))
                self._close(
                    oldest,
                    f"closed to make room: node.max_pending_connections "
                    f"({self.limits.max_pending_connections}) connections were waiting to send "
                    "an A-ASSOCIATE-RQ",
                )
            self._waiting[sock] = (address, time.monotonic())
            try:
                self._selector.register(sock, selectors.EVENT_READ)
            except (OSError, ValueError):
                self._waiting.pop(sock, None)
                _close(sock)

    def _expire(self) -> None:
        limit = time.monotonic() - self.limits.request_timeout_s
        for sock, (_, opened) in list(self._waiting.items()):
            if opened > limit:
                break  # oldest first: the rest are younger
            self._close(
                sock,
                f"no complete A-ASSOCIATE-RQ within node.request_timeout_s "
                f"({self.limits.request_timeout_s:g} s)",
            )

    def _look(self, sock: socket.socket) -> None:
        if isinstance(sock, ssl.SSLSocket):
            self._leave(sock)
            return
        try:
            data = sock.recv(self.PEEK_BYTES + 6, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError, TimeoutError):
            return
        except OSError as exc:
            self._close(sock, f"reading failed: {one_line(exc)}")
            return
        if not data:
            self._close(sock, "")  # closed before sending anything: a port check, say
            return
        if data[0] != A_ASSOCIATE_RQ:
            self._close(sock, f"sent {_what(data)} instead of an A-ASSOCIATE-RQ", data)
            return
        if len(data) < 6:
            self._wait_for(sock, 6, data)
            return
        (length,) = struct.unpack_from(">L", data, 2)
        if length > self.limits.max_pdu_bytes:
            reason = (
                f"an A-ASSOCIATE-RQ declared {length} bytes, more than node.max_pdu_bytes "
                f"({self.limits.max_pdu_bytes}); not read"
            )
            self._close(sock, reason, data)
        elif len(data) >= 6 + length or length > self.PEEK_BYTES:
            self._leave(sock)
        else:
            self._wait_for(sock, 6 + length, data)

    def _wait_for(self, sock: socket.socket, size: int, data: bytes) -> None:
        """Sleep until ``size`` bytes have arrived; but a peer that has stopped sending wakes
        the room at once, again and again, until it is closed."""
        if _finished_sending(sock):
            reason = (
                f"closed its side of the connection after {len(data)} of the {size} bytes of "
                "its A-ASSOCIATE-RQ"
            )
            self._close(sock, reason, data)
        else:
            _set_low_water(sock, size)

    def _leave(self, sock: socket.socket) -> None:
        address, _ = self._waiting.pop(sock)
        self._selector.unregister(sock)
        _set_low_water(sock, 1)
        self.guard.opened(sock, str(address[0]))
        self.hand_over(sock, address)

    def _close(self, sock: socket.socket, reason: str, data: bytes = b"") -> None:
        address, _ = self._waiting.pop(sock)
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        _close(sock)
        if reason:
            self.guard.report_waiting(str(address[0]), reason, _titles(data))
        else:
            log.debug("connection from %s closed without a request", address[0])


def _what(data: bytes) -> str:
    names = {0x02: "an A-ASSOCIATE-AC", 0x03: "an A-ASSOCIATE-RJ", 0x04: "a P-DATA-TF"}
    names |= {0x05: "an A-RELEASE-RQ", 0x06: "an A-RELEASE-RP", 0x07: "an A-ABORT"}
    return names.get(data[0], f"bytes that are no DICOM PDU (first byte 0x{data[0]:02X})")


def _titles(data: bytes) -> tuple[str, str] | None:
    """(called, calling) AE titles of a partial A-ASSOCIATE-RQ, when they arrived."""
    if len(data) < 42 or data[0] != A_ASSOCIATE_RQ:
        return None
    return ae_titles(data[6:])


#: Linux's TCP state of a connection whose peer has sent its FIN (``tcp_states.h``).
_TCP_CLOSE_WAIT = 8


def _finished_sending(sock: socket.socket) -> bool:
    """Whether the peer has closed its sending side (Linux; elsewhere assumed not)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)
    except (AttributeError, OSError):
        return False
    return info[0] == _TCP_CLOSE_WAIT


def _set_low_water(sock: socket.socket, size: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, size)
    except OSError:
        pass


def _close(sock: socket.socket) -> None:
    shut(sock)
    try:
        sock.close()
    except OSError:
        pass


def one_line(exc: BaseException | None) -> str:
    """An exception as one printable line (what a report says)."""
    if exc is None:
        return "unknown error"
    return printable(str(exc)) or type(exc).__name__


def shut(sock: socket.socket) -> None:
    """End a connection from another thread: its reader sees the end of the stream."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
