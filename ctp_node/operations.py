"""What an operator asks of a running node from the command line: send a result again, compute a
series again (a new version, e.g. with a person's arterial input), each checked first so that a
mistake gets a sentence, not a result nobody wanted in PACS.

The commands only write to the database; the ``serve`` (or ``worker``) processes do the work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ctp_node.assemble.headers import UnreadableImageError, read_usable_images
from ctp_node.assemble.layout import NotPerfusionError, layout_acquisition
from ctp_node.config import Config
from ctp_node.store import Database
from ctp_node.store.ingest import get_series, instance_paths
from ctp_node.store.models import JobState, SeriesState
from ctp_node.store.outbox import send_again
from ctp_node.store.queue import enqueue_reprocessing, get_job, latest_reported_job
from ctp_node.user_region import UserRegion


class OperatorError(Exception):
    """The request cannot be carried out as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Resent:
    job_id: int
    version: int
    destinations: tuple[str, ...]
    queued: int


def resend(
    db: Database,
    config: Config,
    *,
    job_id: int | None = None,
    series_uid: str | None = None,
    destination: str | None = None,
) -> Resent:
    """Queue a job's outputs again (``series_uid``: the series' latest result) to one or every
    configured destination. A superseded version is refused: it must never reach PACS after
    the version that replaced it."""
    if (job_id is None) == (series_uid is None):
        raise OperatorError("give either --job N or --series UID")
    if job_id is not None:
        job = get_job(db, job_id)
        if job is None:
            raise OperatorError(f"there is no job {job_id}; `ctp-node status` lists the jobs")
    else:
        job = latest_reported_job(db, str(series_uid))
        if job is None:
            raise OperatorError(
                f"series {series_uid} has no result to send yet; `ctp-node status --series "
                f"{series_uid}` shows where it is"
            )
    if job.version == 0 or job.state not in (JobState.DONE, JobState.FAILED):
        raise OperatorError(
            f"job {job.id} is {job.state} and has no outputs to send; "
            f"`ctp-node status --series {job.series_instance_uid}` shows its series"
        )
    latest = latest_reported_job(db, job.series_instance_uid)
    if latest is not None and latest.version > job.version:
        raise OperatorError(
            f"job {job.id} is version {job.version} of its series, superseded by version "
            f"{latest.version} (job {latest.id}); resend job {latest.id} instead"
        )
    names = [d.name for d in config.destinations]
    if destination is not None and destination not in names:
        raise OperatorError(
            f"no destination {destination!r} in the configuration; configured: "
            f"{', '.join(names) or 'none'}"
        )
    if not (Path(config.storage.root) / job.result_dir).is_dir():
        raise OperatorError(
            f"the outputs of job {job.id} are no longer on disk (deleted by retention after "
            f"storage.retention.results_days); compute the series again with `ctp-node "
            f"reprocess --series {job.series_instance_uid}`"
        )
    chosen = (destination,) if destination is not None else tuple(names)
    return Resent(job.id, job.version, chosen, send_again(db, job.id, chosen))


def reprocess(
    db: Database,
    config: Config,
    *,
    series_uid: str,
    aif_zyx: tuple[int, int, int] | None = None,
    vof_zyx: tuple[int, int, int] | None = None,
    region: UserRegion | None = None,
    requested_by: str = "operator",
) -> int:
    """Queue a series to be computed again, optionally with a person's arterial input and
    venous output locations (``(slice, row, column)``, 0-based voxel indices of the source
    images) and a region whose statistics the reports give. Its result is a new version when
    anything differs from the last one; the same inputs and choices give the same version
    again. ``requested_by`` is recorded with the job (at most 32 characters: "operator" for the
    CLI, "console <user or address>" for the web console). Returns the job's id."""
    series = get_series(db, series_uid)
    if series is None:
        raise OperatorError(f"the node has no series {series_uid}; `ctp-node status` lists them")
    if series.state == SeriesState.RECEIVING:
        raise OperatorError(
            f"series {series_uid} is still receiving images; it is processed once complete"
        )
    root = Path(config.storage.root)
    paths = [root / p for p in instance_paths(db, series_uid)]
    if not paths or not all(p.is_file() for p in paths):
        raise OperatorError(
            f"the images of series {series_uid} are no longer on disk (deleted by retention "
            "after storage.retention.spool_days); send the series to the node again"
        )
    try:
        layout = layout_acquisition(read_usable_images(paths).refs, config.ingest.min_time_points)
    except (UnreadableImageError, NotPerfusionError) as exc:
        raise OperatorError(f"series {series_uid} cannot be processed: {exc}") from exc
    _, slices, rows, columns = layout.shape
    for name, location in (("--aif", aif_zyx), ("--vof", vof_zyx)):
        if location is not None and not (
            0 <= location[0] < slices and 0 <= location[1] < rows and 0 <= location[2] < columns
        ):
            raise OperatorError(
                f"{name} {','.join(map(str, location))} lies outside the images: slice 0-"
                f"{slices - 1}, row 0-{rows - 1}, column 0-{columns - 1} (0-based)"
            )
    outside = region.outside((slices, rows, columns)) if region is not None else None
    if outside is not None:
        raise OperatorError(outside)
    return enqueue_reprocessing(
        db,
        series_uid,
        ",".join(map(str, aif_zyx)) if aif_zyx else "",
        ",".join(map(str, vof_zyx)) if vof_zyx else "",
        region=region.text() if region is not None else "",
        requested_by=requested_by,
    )
