"""Who may use the web console (``http.auth``), and the console's audit trail.

``none``: anyone who reaches the port (a loopback bind only, see :mod:`ctp_node.config.http`);
``users``: a person signs in at ``/login`` (:mod:`ctp_node.http.users`) and is kept signed in by
a signed session cookie (Starlette's ``SessionMiddleware``, itsdangerous) until
``session_minutes`` without a request; ``proxy``: a reverse proxy names the user in a header,
believed only from ``trusted_proxies``. ``/health/*``, ``/metrics`` and ``/static`` are not
the console's and stay open.

Every sign-in, failed sign-in, sign-out, refused request and action is recorded through
:mod:`ctp_node.store.console_audit`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import threading
import time
import urllib.parse
from collections import deque
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import RedirectResponse
from starlette.middleware.sessions import SessionMiddleware

from ctp_node.config.http import HttpConfig
from ctp_node.file_modes import create_file, make_folders
from ctp_node.http.users import Users, UsersFileError
from ctp_node.store import Database
from ctp_node.store.console_audit import ConsoleActionRecord, record_console_action
from ctp_node.store.models import ConsoleActionKind

log = logging.getLogger(__name__)

#: The session cookie's name.
SESSION_COOKIE = "ctp_node_session"
#: The file below ``storage.root`` holding the key that signs session cookies (owner-only), so
#: that a restart does not sign everyone out.
SECRET_FILE = ".http-session-key"
SECRET_HEX_CHARS = 64
#: Failed sign-ins (per name, and per address) within :data:`LOCKOUT_WINDOW_S` after which
#: sign-ins for that name or from that address are refused until the window has passed.
LOCKOUT_FAILURES = 5
LOCKOUT_WINDOW_S = 900.0
#: Seconds a failed sign-in waits before it is answered: a guesser's pace, a person's typo.
FAILED_SIGN_IN_DELAY_S = 1.0
#: Longest ``requested_by`` the jobs table keeps (``jobs.requested_by`` is 32 characters).
REQUESTED_BY_MAX = 32


class SignInRequired(Exception):
    """A page asked for without a sign-in: answered by a redirect to ``/login``."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def session_secret(root: Path) -> str:
    """The key that signs session cookies: made once (256 random bits) in ``root`` owner-only,
    then read; made again if the file is not a key (a start that stopped half-way)."""
    path = root / SECRET_FILE
    try:
        key = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        key = ""
    if len(key) == SECRET_HEX_CHARS:
        return key
    key = secrets.token_hex(SECRET_HEX_CHARS // 2)
    make_folders(root)
    temporary = path.with_name(f"{SECRET_FILE}.{os.getpid()}")
    with os.fdopen(create_file(temporary, os.O_WRONLY | os.O_TRUNC), "w") as out:
        out.write(key)
    os.replace(temporary, path)
    return key


class Throttle:
    """Failed sign-ins by name and by address: a key with :data:`LOCKOUT_FAILURES` failures
    within :data:`LOCKOUT_WINDOW_S` is locked until the oldest of them leaves the window."""

    def __init__(self) -> None:
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def locked_for(self, *keys: str) -> float:
        """Seconds until sign-ins for ``keys`` are taken again; 0 when they are now."""
        now = time.monotonic()
        with self._lock:
            waits = [0.0]
            for key in keys:
                times = self._failures.get(key, deque())
                while times and times[0] < now - LOCKOUT_WINDOW_S:
                    times.popleft()
                if len(times) >= LOCKOUT_FAILURES:
                    waits.append(times[0] + LOCKOUT_WINDOW_S - now)
            return max(waits)

    def failed(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.setdefault(key, deque()).append(time.monotonic())


class Access:
    """The console's access control for one node (its ``http`` settings and database)."""

    def __init__(self, settings: HttpConfig, db: Database, root: Path) -> None:
        auth = settings.auth
        self.mode = auth.mode
        self.db = db
        self.https = settings.tls is not None
        self.header = auth.proxy_header
        self.networks = [ipaddress.ip_network(n, strict=False) for n in auth.trusted_proxies]
        self.idle_s = auth.session_minutes * 60
        self.users = Users(auth.users_file) if auth.users_file is not None else None
        self.throttle = Throttle()
        self._root = root

    def install(self, app: FastAPI) -> None:
        """The session cookie (mode ``users``) and the redirect to ``/login``."""
        if self.mode == "users":
            app.add_middleware(
                SessionMiddleware,
                secret_key=session_secret(self._root),
                session_cookie=SESSION_COOKIE,
                max_age=int(self.idle_s) + 60,  # the browser drops it; the idle check is ours
                same_site="strict",
                https_only=self.https,
            )

        async def to_login(request: Request, exc: Exception) -> RedirectResponse:
            assert isinstance(exc, SignInRequired)
            return RedirectResponse(f"/login?next={urllib.parse.quote(exc.path)}", 303)

        app.add_exception_handler(SignInRequired, to_login)

    def user(self, request: Request) -> str | None:
        """The signed-in user of ``request``: the session's (``users``) or the trusted proxy's
        (``proxy``); None when nobody is signed in, always with ``none``.

        Raises
        ------
        HTTPException : 403 for a proxy header from an address not in ``trusted_proxies``.
        """
        if self.mode == "users":
            return self._session_user(request)
        if self.mode == "proxy":
            named = request.headers.get(self.header, "").strip()
            if named and not self.trusted(peer(request)):
                self.record(
                    request,
                    ConsoleActionKind.REFUSED,
                    outcome="refused",
                    user=named,
                    detail=f"{self.header} from an address not in trusted_proxies",
                )
                raise HTTPException(
                    403,
                    f"{self.header} is believed only from http.auth.trusted_proxies; "
                    f"{peer(request)} is not one of them",
                )
            return named or None
        return None

    def _session_user(self, request: Request) -> str | None:
        session = request.session
        name, seen = session.get("user"), session.get("seen", 0.0)
        if not name:
            return None
        if time.time() - seen > self.idle_s or not self.known(name):
            session.clear()  # idle too long, or removed by `user remove`
            return None
        session["seen"] = time.time()
        return name

    def known(self, name: str, password: str | None = None) -> bool:
        """``name`` is in the users file (and ``password`` is theirs, when given).

        Raises
        ------
        HTTPException : 503 with a sentence when the users file cannot be read.
        """
        if self.users is None:
            return False
        try:
            if password is None:
                return self.users.exists(name)
            return self.users.verify(name, password)
        except UsersFileError as exc:
            log.error("console: %s", exc)
            raise HTTPException(503, f"nobody can sign in now: {exc}") from None

    def require(self, request: Request) -> None:
        """A FastAPI dependency of every console route: the signed-in user in
        ``request.state.user`` (None with mode ``none``), else a redirect to ``/login``
        (a GET with ``users``), 401 (a POST) or 403 (``proxy``)."""
        user = self.user(request)
        request.state.user = user
        if user is not None or self.mode == "none":
            return
        if self.mode == "proxy":
            raise HTTPException(
                403, f"sign in through the reverse proxy: no {self.header} in the request"
            )
        if request.method in ("GET", "HEAD"):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise SignInRequired(target)
        raise HTTPException(401, "sign in first (your session may have ended)")

    def trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def record(
        self,
        request: Request,
        action: str,
        *,
        outcome: str = "done",
        user: str | None = None,
        series_uid: str = "",
        job_id: int | None = None,
        detail: str = "",
    ) -> None:
        """Add one line to the console's audit trail: who (``user``, else the signed-in user,
        else nobody), from where (the peer's address), what and how it ended."""
        if user is None:
            user = getattr(request.state, "user", None) or ""
        record = ConsoleActionRecord(
            action, user, peer(request), series_uid, job_id, outcome, detail
        )
        record_console_action(self.db, record)


def peer(request: Request) -> str:
    """The address the request came from (the proxy's, behind one)."""
    return request.client.host if request.client else "unknown"


def who(request: Request) -> str:
    """``requested_by`` of a job the console queues: ``console <user>``, or ``console
    <address>`` with ``mode: none``; cut to the column's 32 characters."""
    user = getattr(request.state, "user", None)
    return f"console {user or peer(request)}"[:REQUESTED_BY_MAX]
