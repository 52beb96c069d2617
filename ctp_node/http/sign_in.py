"""``/login`` and ``/logout`` of the web console (``http.auth.mode: users``)."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from ctp_node.http.access import FAILED_SIGN_IN_DELAY_S, Access, peer
from ctp_node.store.models import ConsoleActionKind

log = logging.getLogger(__name__)


def _safe_next(target: str) -> str:
    """Where to go after signing in: a path of this site only (never ``//elsewhere``, nor
    ``/\\elsewhere``, which browsers read alike)."""
    ours = target.startswith("/") and not target.startswith("//") and "\\" not in target
    return target if ours else "/"


def build_sign_in(access: Access, templates: Jinja2Templates, same_site) -> APIRouter:  # type: ignore[no-untyped-def]
    """The sign-in form, its POST, and sign-out."""
    router = APIRouter()

    def form(request: Request, next_: str, problem: str = "", status: int = 200) -> Response:
        context = {"title": "Sign in", "next": _safe_next(next_), "problem": problem}
        return templates.TemplateResponse(request, "login.html", context, status_code=status)

    @router.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str = "/") -> Response:
        return form(request, next)

    @router.post("/login", dependencies=[Depends(same_site)])
    def login(
        request: Request,
        name: str = Form(""),
        password: str = Form(""),
        next: str = Form("/"),
    ) -> Response:
        address = peer(request)
        wait = access.throttle.locked_for(f"name:{name}", f"address:{address}")
        if wait > 0:
            access.record(
                request,
                ConsoleActionKind.SIGN_IN_FAILED,
                outcome="refused",
                user=name,
                detail="locked after repeated failures",
            )
            minutes = max(1, round(wait / 60))
            problem = (
                f"too many failed sign-ins for this name or address; try again in {minutes} min"
            )
            return form(request, next, problem, 429)
        if not access.known(name, password):
            access.throttle.failed(f"name:{name}", f"address:{address}")
            access.record(request, ConsoleActionKind.SIGN_IN_FAILED, outcome="refused", user=name)
            log.warning("console: failed sign-in as %r from %s", name[:64], address)
            time.sleep(FAILED_SIGN_IN_DELAY_S)
            return form(request, next, "wrong name or password", 401)
        request.session.clear()  # a new session: nothing carried over from before
        request.session.update({"user": name, "seen": time.time()})
        access.record(request, ConsoleActionKind.SIGN_IN, user=name)
        log.info("console: %s signed in from %s", name, address)
        return RedirectResponse(_safe_next(next), status_code=303)

    @router.post("/logout", dependencies=[Depends(same_site)])
    def logout(request: Request) -> Response:
        name = access.user(request)
        request.session.clear()
        if name:
            access.record(request, ConsoleActionKind.SIGN_OUT, user=name)
        return RedirectResponse("/login", status_code=303)

    return router
