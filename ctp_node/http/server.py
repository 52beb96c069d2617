"""uvicorn in a background thread of ``serve``, on a socket bound before anything starts."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from ctp_node.config.http import HttpTLSConfig

log = logging.getLogger(__name__)

#: Seconds ``start`` waits for uvicorn to serve before it gives up.
START_TIMEOUT_S = 15.0
#: Seconds ``stop`` waits for open requests to finish.
STOP_TIMEOUT_S = 5.0


class HttpStartError(Exception):
    """The HTTP face cannot start: its address cannot be bound (in use, not this machine's),
    or uvicorn did not come up; the message is a sentence for the operator."""

    def __init__(self, message: str, *, bind_failed: bool = False) -> None:
        super().__init__(message)
        #: the address could not be bound (the configuration's to change)
        self.bind_failed = bind_failed


class _ThreadServer(uvicorn.Server):
    """uvicorn without its SIGINT/SIGTERM handlers: ``serve`` owns the signals and stops this
    server itself (uvicorn only installs them from the main thread; this makes it explicit)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_socket(bind: str, port: int) -> socket.socket:
    """A listening TCP socket on ``bind:port``.

    Raises
    ------
    HttpStartError : with a sentence naming the address and the key to change.
    """
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # Like uvicorn's own: a restart need not wait for TIME_WAIT; another listener still refuses.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bind, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        why = (
            "it is in use by another program"
            if exc.errno == errno.EADDRINUSE
            else exc.strerror or str(exc)
        )
        raise HttpStartError(
            f"the HTTP face cannot listen on {bind}:{port}: {why}; choose another http.port "
            "(or http.bind), or stop the program that holds it",
            bind_failed=True,
        ) from exc
    return sock


class HttpFace:
    """The HTTP face: ``start`` binds and serves in a thread (:class:`HttpStartError` when it
    cannot), ``stop`` ends it; HTTPS with ``tls`` (uvicorn's ``ssl_certfile``/``ssl_keyfile``)."""

    def __init__(
        self, app: FastAPI, bind: str, port: int, tls: HttpTLSConfig | None = None
    ) -> None:
        self.bind, self.port = bind, port
        self.scheme = "https" if tls is not None else "http"
        config = uvicorn.Config(
            app,
            log_config=None,  # the node's logging, not uvicorn's
            access_log=False,  # a health check every few seconds is not news
            lifespan="off",
            timeout_graceful_shutdown=STOP_TIMEOUT_S,
            # The client address is the TCP peer's, never an X-Forwarded-For's: the console
            # believes a proxy's header by the proxy's own address (http.auth.trusted_proxies),
            # and audits and throttles sign-ins by it.
            proxy_headers=False,
            ssl_certfile=str(tls.certificate) if tls is not None else None,
            ssl_keyfile=str(tls.private_key) if tls is not None else None,
        )
        self._server = _ThreadServer(config)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        sock = bind_socket(self.bind, self.port)
        self.port = sock.getsockname()[1]  # port 0 (tests): the one the system chose
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._server.should_exit = True
                sock.close()
                raise HttpStartError(
                    f"the HTTP face on {self.bind}:{self.port} did not start within "
                    f"{START_TIMEOUT_S:.0f} s (see the log above)"
                )
            time.sleep(0.02)
        log.info(
            "HTTP face (health, metrics, console) on %s://%s:%d/", self.scheme, self.bind, self.port
        )

    def stop(self) -> None:
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=STOP_TIMEOUT_S + 5)
        self._thread = None
