"""The FastAPI application of the HTTP face: health, metrics and, when given, the web console
(:mod:`ctp_node.http.console`) with its static files."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ctp_node import __version__
from ctp_node.http.access import Access
from ctp_node.http.health import Check, run_checks


def build_app(
    checks: Mapping[str, Check],
    registry: CollectorRegistry,
    console: APIRouter | None = None,
    access: Access | None = None,
) -> FastAPI:
    """The application.

    Parameters
    ----------
    checks : the readiness checks by name (:mod:`ctp_node.http.health`).
    registry : what ``/metrics`` shows (:func:`ctp_node.http.metrics.node_registry`).
    console : the web console's routes (:func:`ctp_node.http.console.build_console`), served
        at ``/`` with its files at ``/static``; None: health and metrics only.
    access : who may use the console (:class:`ctp_node.http.access.Access`): its session
        cookie and its redirect to ``/login`` are installed on the app.
    """
    # No interactive docs: the face's endpoints are fixed.
    app = FastAPI(
        title="ctp-node", version=__version__, docs_url=None, redoc_url=None, openapi_url=None
    )

    @app.get("/health/live")
    def live() -> dict:
        """The process serves HTTP: it is alive (a restart would not help)."""
        return {"status": "live"}

    # Plain functions, not coroutines: FastAPI runs them in its thread pool, so a database
    # that is slow to answer does not hold up the event loop (nor /health/live).
    @app.get("/health/ready")
    def ready() -> JSONResponse:
        """200 when every check passes, else 503 with each failing check's reason."""
        ok, results = run_checks(checks)
        body = {"status": "ready" if ok else "not ready", "checks": results}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus' text format."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    if console is not None:
        from starlette.exceptions import HTTPException

        from ctp_node.http.console import console_error

        app.add_exception_handler(HTTPException, console_error)
        if access is not None:
            access.install(app)
        app.include_router(console)
        static = Path(__file__).parent / "static"
        app.mount("/static", StaticFiles(directory=static), name="static")
    return app
