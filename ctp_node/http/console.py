"""The web console: server-rendered pages (Jinja2 templates in ``templates/``, a little plain
JavaScript in ``static/``) on the HTTP face's FastAPI app.

``/`` studies, series, jobs and exports; ``/refusals`` what the listener refused and the
associations that did not end well; ``/jobs/N`` one result (pages, maps with colour bars,
input curves and where they were taken, QC findings, warnings, failure notice) with the
supervised choice of a new AIF/VOF and the resend and retry actions. It reads the database
only through :mod:`ctp_node.store.console_queries`, acts only through
:mod:`ctp_node.operations`, and shows no patient name or ID, signed in or not (the database
holds none). Who may use it: :mod:`ctp_node.http.access`; ``/audit`` lists what was done in it.
"""

from __future__ import annotations

import contextlib
import logging
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from ctp_node import operations
from ctp_node.assemble.headers import UnreadableImageError
from ctp_node.assemble.layout import NotPerfusionError
from ctp_node.config import Config
from ctp_node.http import images
from ctp_node.http.access import Access, who
from ctp_node.http.series_cache import (
    DEFAULT_BASELINE_FRAMES,
    SeriesCache,
    SeriesImages,
    read_series_images,
)
from ctp_node.store import Database
from ctp_node.store.audit import list_associations
from ctp_node.store.console_audit import list_console_actions
from ctp_node.store.console_queries import (
    JobDetail,
    job_detail,
    latest_summary,
    refusals,
    studies,
    study_count,
)
from ctp_node.store.ingest import instance_paths
from ctp_node.store.models import ConsoleActionKind
from ctp_node.user_region import parse_region

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
TEMPLATES = Jinja2Templates(directory=HERE / "templates")
#: Audited associations the refusals page lists (the latest that needed attention).
AUDIT_ROWS = 200
#: Studies on one page of ``/``, newest first (``/?page=2`` the next older ones): enough for a
#: day's strokes on one screen, few enough that the page comes at once with a year's index.
STUDIES_PER_PAGE = 50
#: Console actions the audit page lists (the latest).
CONSOLE_AUDIT_ROWS = 500


@dataclass(frozen=True)
class Output:
    """One stored output of a result: its kind, file (relative to the result folder) and
    description."""

    kind: str
    file: str
    description: str


def outputs_of(root: Path, detail: JobDetail) -> list[Output]:
    """A result's outputs as its summary lists them, else (a failure notice) as its folder
    holds them."""
    listed = detail.summary.get("outputs") or []
    if listed:
        return [Output(o["kind"], o["file"], o.get("series_description", "")) for o in listed]
    folder = root / detail.job.result_dir if detail.job.result_dir else None
    if folder is None or not folder.is_dir():
        return []
    return [
        Output(p.name.split("-", 1)[0], p.name, "")
        for p in sorted(folder.glob("*.dcm"))
        if not p.name.startswith(".")
    ]


def same_site(request: Request) -> None:
    """Refuse (403) a form posted from another site's page: a browser says where a POST comes
    from (``Origin``, else ``Referer``), and a page elsewhere must not make a browser on this
    machine reprocess or resend (with ``mode: none`` there is no sign-in; with one, the session
    cookie is SameSite=Strict as well). Its host must be the request's ``Host`` (or
    ``X-Forwarded-Host``, set by a reverse proxy). A request that names no origin (curl, a
    script) is let through: it does not ride on a person's browser."""
    origin = request.headers.get("origin") or request.headers.get("referer") or ""
    if not origin:
        return
    host = urllib.parse.urlsplit(origin).netloc
    # behind a reverse proxy, the address the browser used is its X-Forwarded-Host
    ours = {request.headers.get("host", ""), request.headers.get("x-forwarded-host", "")}
    if host not in ours - {""}:
        raise HTTPException(403, f"a form posted from {origin} (another site) is refused")


def parse_zyx(text: str, name: str) -> tuple[int, int, int] | None:
    """``"Z,Y,X"`` as three ints, ``""`` as None; anything else is a 400 with a sentence."""
    text = text.strip()
    if not text:
        return None
    try:
        z, y, x = (int(part) for part in text.split(","))
    except ValueError:
        raise HTTPException(400, f"{name} must be slice,row,column (0-based integers)") from None
    return z, y, x


async def console_error(request: Request, exc: StarletteHTTPException) -> Response:
    """A refused request as a page with its sentence (health and metrics keep JSON)."""
    if request.url.path.startswith(("/health", "/metrics")):
        return await http_exception_handler(request, exc)
    context = {"title": "Not done", "status": exc.status_code, "detail": exc.detail}
    return TEMPLATES.TemplateResponse(request, "error.html", context, status_code=exc.status_code)


def build_console(db: Database, config: Config, access: Access) -> APIRouter:
    """The console's routes for one node (its database and configuration), each behind
    ``access`` (a signed-in user, when ``http.auth`` asks for one)."""
    root = Path(config.storage.root)
    router = APIRouter(dependencies=[Depends(access.require)])

    @router.get("/", response_class=HTMLResponse)
    def studies_page(request: Request, page: int = Query(1, ge=1)) -> HTMLResponse:
        total = study_count(db)
        pages = max(1, -(-total // STUDIES_PER_PAGE))
        page = min(page, pages)
        first = (page - 1) * STUDIES_PER_PAGE
        context = {
            "studies": studies(db, STUDIES_PER_PAGE, first),
            "title": "Studies",
            "page": page,
            "pages": pages,
            "total": total,
            "first": first + 1,
        }
        return TEMPLATES.TemplateResponse(request, "studies.html", context)

    @router.get("/refusals", response_class=HTMLResponse)
    def refusals_page(request: Request) -> HTMLResponse:
        audit = list_associations(db, needs_attention=True, latest=AUDIT_ROWS)
        return TEMPLATES.TemplateResponse(
            request,
            "refusals.html",
            {"refusals": refusals(db), "associations": audit[::-1], "title": "Refused"},
        )

    @router.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job_page(request: Request, job_id: int, message: str = "") -> HTMLResponse:
        detail = _detail_or_404(db, job_id)
        context = {
            "title": f"Job {job_id}",
            "d": detail,
            "outputs": outputs_of(root, detail),
            "destinations": [d.name for d in config.destinations],
            "message": message,
            "has_summary_png": bool(detail.job.result_dir)
            and (root / detail.job.result_dir / "summary.png").is_file(),
        }
        return TEMPLATES.TemplateResponse(request, "job.html", context)

    @router.get("/audit", response_class=HTMLResponse)
    def audit_page(request: Request) -> HTMLResponse:
        actions = list_console_actions(db, latest=CONSOLE_AUDIT_ROWS)
        context = {"title": "Audit", "actions": actions, "limit": CONSOLE_AUDIT_ROWS}
        return TEMPLATES.TemplateResponse(request, "audit.html", context)

    _add_picture_routes(router, db, root)
    _add_correction_routes(router, db, config, _series_cache(db, root), access)
    _add_action_routes(router, db, config, access)
    outer = APIRouter()  # the sign-in form is not behind the sign-in
    if access.mode == "users":
        from ctp_node.http.sign_in import build_sign_in

        outer.include_router(build_sign_in(access, TEMPLATES, same_site))
    outer.include_router(router)
    return outer


def _detail_or_404(db: Database, job_id: int) -> JobDetail:
    detail = job_detail(db, job_id)
    if detail is None:
        raise HTTPException(404, f"there is no job {job_id}")
    return detail


def _series_cache(db: Database, root: Path) -> SeriesCache:
    """The cache of source images, reading a series' spooled files (404 when retention has
    deleted them) with the pre-contrast frames of its latest result."""

    def read(series_uid: str) -> SeriesImages:
        paths = [root / p for p in instance_paths(db, series_uid)]
        if not paths or not all(p.is_file() for p in paths):
            raise HTTPException(404, f"the images of series {series_uid} are not on disk")
        aif = latest_summary(db, series_uid).get("aif") or {}
        try:
            return read_series_images(paths, aif.get("baseline_frames") or DEFAULT_BASELINE_FRAMES)
        except (UnreadableImageError, NotPerfusionError) as exc:
            why = f"series {series_uid} has no images to choose on: {exc}"
            raise HTTPException(400, why) from None

    return SeriesCache(read)


def _add_picture_routes(router: APIRouter, db: Database, root: Path) -> None:
    """A result's pictures: its summary image, maps, pages and input curves."""

    def output_path(job_id: int, kind: str, index: int) -> Path:
        detail = _detail_or_404(db, job_id)
        chosen = [o for o in outputs_of(root, detail) if o.kind == kind]
        if not 0 <= index < len(chosen):
            raise HTTPException(404, f"job {job_id} has no {kind} number {index}")
        path = root / detail.job.result_dir / chosen[index].file
        if not path.is_file():
            raise HTTPException(404, f"{chosen[index].file} is no longer on disk (retention)")
        return path

    @router.get("/jobs/{job_id}/summary.png")
    def summary_png(job_id: int) -> FileResponse:
        detail = _detail_or_404(db, job_id)
        path = root / detail.job.result_dir / "summary.png"
        if not detail.job.result_dir or not path.is_file():
            raise HTTPException(404, f"job {job_id} has no summary image on disk")
        return FileResponse(path, media_type="image/png")

    def map_picture(
        draw: Callable[[Path, int], bytes], job_id: int, index: int, z: int
    ) -> Response:
        try:
            png = draw(output_path(job_id, "parametric_maps", index), z)
        except IndexError as exc:
            raise HTTPException(404, str(exc)) from None
        return Response(png, media_type="image/png")

    @router.get("/jobs/{job_id}/maps/{index}.png")
    def map_png(job_id: int, index: int, slice_: int = Query(0, alias="slice")) -> Response:
        return map_picture(images.map_png, job_id, index, slice_)

    @router.get("/jobs/{job_id}/maps/{index}/voxels.png")
    def map_voxels_png(job_id: int, index: int, slice_: int = Query(0, alias="slice")) -> Response:
        """The map's slice one pixel per voxel: the supervised choice's other background."""
        return map_picture(images.map_voxels_png, job_id, index, slice_)

    @router.get("/jobs/{job_id}/pages/{index}.png")
    def page_png(job_id: int, index: int) -> Response:
        png = images.page_png(output_path(job_id, "secondary_captures", index))
        return Response(png, media_type="image/png")

    @router.get("/jobs/{job_id}/curves.png")
    def curves_png(job_id: int) -> Response:
        summary = _detail_or_404(db, job_id).summary
        return Response(images.curves_png(_input_curves(summary)), media_type="image/png")


def _input_curves(summary: dict, candidate: tuple[str, list, list] | None = None) -> list:
    """The result's AIF and VOF (and a candidate) as :func:`images.curves_png` draws them."""
    curves = []
    for key, label, style in (("aif", "AIF", "r-"), ("vof", "VOF", "b-")):
        curve = summary.get(key)
        if curve:
            where = ",".join(map(str, curve["centre_zyx"]))
            times, values = curve["times_s"], curve["concentration_hu"]
            curves.append((f"{label} at {where}", times, values, style))
    if candidate is not None:
        curves.append((*candidate, "k--"))
    return curves


def _add_correction_routes(
    router: APIRouter, db: Database, config: Config, cache: SeriesCache, access: Access
) -> None:
    """The supervised choice: the pre-contrast image to click on, the candidate curve at a
    voxel, and reprocessing with the chosen locations."""

    @router.get("/series/{series_uid}/baseline.png")
    def baseline_png(series_uid: str, slice_: int = Query(0, alias="slice")) -> Response:
        series = cache.get(series_uid)
        if not 0 <= slice_ < series.shape_zyx[0]:
            raise HTTPException(404, f"slice {slice_} is outside 0-{series.shape_zyx[0] - 1}")
        return Response(images.grey_png(series.baseline[slice_]), media_type="image/png")

    def candidate(series_uid: str, z: int, y: int, x: int) -> tuple[SeriesImages, list]:
        series = cache.get(series_uid)
        try:
            return series, [round(float(v), 2) for v in series.curve(z, y, x)]
        except IndexError as exc:
            raise HTTPException(400, str(exc)) from None

    @router.get("/series/{series_uid}/curve")
    def curve_json(series_uid: str, z: int, y: int, x: int) -> dict:
        """The candidate curve at ``(z, y, x)``: enhancement (HU) at each time (s)."""
        series, values = candidate(series_uid, z, y, x)
        return {
            "zyx": [z, y, x],
            "times_s": [round(float(t), 3) for t in series.times_s],
            "enhancement_hu": values,
            "baseline_frames": series.baseline_frames,
        }

    @router.get("/series/{series_uid}/curve.png")
    def curve_png(series_uid: str, z: int, y: int, x: int) -> Response:
        """The candidate curve beside the latest result's AIF and VOF."""
        series, values = candidate(series_uid, z, y, x)
        label = f"candidate at {z},{y},{x}"
        drawn = _input_curves(latest_summary(db, series_uid), (label, series.times_s, values))
        return Response(images.curves_png(drawn), media_type="image/png")

    @router.post("/series/{series_uid}/reprocess", dependencies=[Depends(same_site)])
    def reprocess(
        request: Request,
        series_uid: str,
        aif: str = Form(""),
        vof: str = Form(""),
        region: str = Form(""),
    ) -> Response:
        chosen = f"AIF {aif.strip() or 'auto'}, VOF {vof.strip() or 'auto'}"
        chosen += f", region {region.strip()}" if region.strip() else ""
        with _audited(access, request, ConsoleActionKind.REPROCESS, series_uid, chosen) as done:
            aif_zyx, vof_zyx = parse_zyx(aif, "the AIF"), parse_zyx(vof, "the VOF")
            try:
                given = parse_region(region)
            except ValueError as exc:
                raise HTTPException(400, str(exc)) from None
            done.job_id = operations.reprocess(
                db,
                config,
                series_uid=series_uid,
                aif_zyx=aif_zyx,
                vof_zyx=vof_zyx,
                region=given,
                requested_by=who(request),
            )
        log.info("console: %s queued job %d (%s)", who(request), done.job_id, chosen)
        return RedirectResponse(f"/jobs/{done.job_id}", status_code=303)


def _add_action_routes(router: APIRouter, db: Database, config: Config, access: Access) -> None:
    """Resend a result, retry a failed job: the CLI's ``resend`` and ``reprocess``."""

    @router.post("/jobs/{job_id}/resend", dependencies=[Depends(same_site)])
    def resend(request: Request, job_id: int, destination: str = Form("")) -> Response:
        series = _detail_or_404(db, job_id).job.series_instance_uid
        to = f"to {destination or 'every destination'}"
        with _audited(access, request, ConsoleActionKind.RESEND, series, to, job_id):
            sent = operations.resend(db, config, job_id=job_id, destination=destination or None)
        log.info(
            "console: %s resent job %d to %s", who(request), job_id, ", ".join(sent.destinations)
        )
        message = f"{sent.queued} export(s) queued to {', '.join(sent.destinations)}"
        location = f"/jobs/{job_id}?message={urllib.parse.quote(message)}"
        return RedirectResponse(location, status_code=303)

    @router.post("/jobs/{job_id}/retry", dependencies=[Depends(same_site)])
    def retry(request: Request, job_id: int) -> Response:
        """Compute a failed job's series again, with the same AIF/VOF choice."""
        job = _detail_or_404(db, job_id).job
        detail = f"failed job {job_id} again"
        with _audited(
            access, request, ConsoleActionKind.RETRY, job.series_instance_uid, detail
        ) as done:
            if job.state != "failed":
                raise HTTPException(400, f"job {job_id} is {job.state}, not failed")
            done.job_id = operations.reprocess(
                db,
                config,
                series_uid=job.series_instance_uid,
                aif_zyx=parse_zyx(job.aif_zyx, "the AIF"),
                vof_zyx=parse_zyx(job.vof_zyx, "the VOF"),
                requested_by=who(request),
            )
        return RedirectResponse(f"/jobs/{done.job_id}", status_code=303)


@dataclass
class _Done:
    """What an audited action did: the job it queued or acted on."""

    job_id: int | None = None


@contextlib.contextmanager
def _audited(
    access: Access,
    request: Request,
    action: str,
    series_uid: str,
    detail: str,
    job_id: int | None = None,
) -> Iterator[_Done]:
    """Record ``action`` in the console's audit trail once it is done (with the job it
    queued), or refused (an operator's refusal becomes a 400 with its sentence)."""
    done = _Done(job_id)
    try:
        yield done
    except (operations.OperatorError, HTTPException) as exc:
        why = str(exc) if isinstance(exc, operations.OperatorError) else str(exc.detail)
        access.record(
            request,
            action,
            outcome="refused",
            series_uid=series_uid,
            job_id=job_id,
            detail=f"{detail}: {why}",
        )
        if isinstance(exc, operations.OperatorError):
            raise HTTPException(400, why) from None
        raise
    access.record(request, action, series_uid=series_uid, job_id=done.job_id, detail=detail)
