"""The FastAPI application of the HTTP face: health and metrics, nothing else."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ctp_node import __version__
from ctp_node.http.health import Check, run_checks


def build_app(checks: Mapping[str, Check], registry: CollectorRegistry) -> FastAPI:
    """The application.

    Parameters
    ----------
    checks : the readiness checks by name (:mod:`ctp_node.http.health`).
    registry : what ``/metrics`` shows (:func:`ctp_node.http.metrics.node_registry`).
    """
    # No interactive docs: the face has three fixed endpoints, and no page to sign in to.
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

    return app
