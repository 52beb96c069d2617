"""Real receivers for notifications on 127.0.0.1: an HTTP server that records what it is
POSTed (http.server in a thread) and an SMTP server that records what it is sent (aiosmtpd).
Either can be stopped and started again on the same port (a receiver down, then up)."""

from __future__ import annotations

import email.policy
import json
import threading
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.conftest import free_port


@dataclass
class HttpSink:
    """``received``: (path, headers, JSON body) of each POST; ``status``: what it answers."""

    port: int = field(default_factory=free_port)
    status: int = 204
    received: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/ctp"

    def start(self) -> HttpSink:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.received.append((self.path, dict(self.headers), json.loads(body)))
                self.send_response(sink.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Recorder:
    def __init__(self, received: list[Message]) -> None:
        self.received = received

    async def handle_DATA(self, server, session, envelope) -> str:
        message = message_from_bytes(envelope.content, policy=email.policy.default)
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        message["X-Signed-In-As"] = (
            (session.auth_data.login or b"").decode() if session.auth_data else ""
        )
        self.received.append(message)
        return "250 OK"


@dataclass
class SmtpSink:
    """``received``: each e-mail as a :class:`email.message.Message`. With ``password``, it
    takes mail only after AUTH LOGIN/PLAIN as ``user`` (over plain TCP: a test)."""

    port: int = field(default_factory=free_port)
    user: str | None = None
    password: str | None = None
    received: list[Message] = field(default_factory=list)
    _controller: Controller | None = None

    def start(self) -> SmtpSink:
        def authenticate(server, session, envelope, mechanism, data) -> AuthResult:
            ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
                (self.user or "").encode(),
                (self.password or "").encode(),
            )
            if not ok:
                return AuthResult(success=False, handled=False)
            return AuthResult(success=True, auth_data=data)

        kwargs: dict[str, Any] = {}
        if self.password is not None:
            kwargs = {
                "authenticator": authenticate,
                "auth_required": True,
                "auth_require_tls": False,
            }
        self._controller = Controller(
            _Recorder(self.received), hostname="127.0.0.1", port=self.port, **kwargs
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
