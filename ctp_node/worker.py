"""A worker's side of a job: compute the series, choose the result's version, write the outputs,
record them with their exports — or, when the series cannot give maps, a failure notice.

Failures are of three kinds:

- the series cannot give maps (:class:`~ctp_node.pipeline.AcquisitionUnusableError`): final;
  PACS gets a failure notice that says why;
- transient (the disk is full, the database is locked or unreachable): the job goes back to the
  queue and is tried again with doubling delays for ``worker.retry_for_s``, without using up
  its attempts;
- anything else (a bug, a crash of the worker process): retried up to ``worker.max_attempts``,
  then final with a failure notice.

A failure notice that cannot be written (the disk is full) is tried again with the same
delays until it is: nobody waits for a result that will not come without being told.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import sqlalchemy.exc

from ctp_node.file_modes import make_folders, restrict_tree
from ctp_node.log_filter import withhold_values
from ctp_node.pipeline import (
    AcquisitionUnusableError,
    ComputedSeries,
    PipelineSettings,
    ProcessedSeries,
    WrittenOutput,
    compute_series,
    write_failure_notice,
    write_outputs,
    write_summary_page,
)
from ctp_node.report.versions import (
    FAILURE_SR_KIND,
    RESULT_SR_KIND,
    Predecessor,
    ResultVersion,
    content_digest,
    version_key,
)
from ctp_node.send.notify_rules import NotifyRules
from ctp_node.store import Database
from ctp_node.store.ingest import instance_records, other_perfusion_series, series_sender
from ctp_node.store.models import Job, JobState, utcnow
from ctp_node.store.outbox import OutputObject
from ctp_node.store.queue import (
    VersionRecord,
    claim_notice,
    fail_job,
    failed_jobs_without_notice,
    finish_job,
    get_job,
    heartbeat,
    latest_reported_job,
    notice_failed,
    record_notice,
    retry_later,
)
from ctp_node.user_region import parse_region

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobContext:
    """What a worker needs to run jobs.

    Attributes
    ----------
    storage_root : ``storage.root``.
    settings : engine, report and quality settings.
    destinations : destination name → the output kinds it receives.
    lease_s : seconds a claimed job stays reserved without a heartbeat.
    max_attempts : attempts at a job that crash or raise an unexpected error.
    retry_backoff_s : seconds before the first retry after a transient failure; doubles.
    retry_backoff_max_s : longest delay between two retries, seconds.
    retry_for_s : how long after its creation a job is still retried after transient failures,
        seconds; then it fails with a failure notice.
    notify : which notification channels a result or a failure tells (``notifications:``);
        queued with it, in its transaction.
    """

    storage_root: Path
    settings: PipelineSettings
    destinations: dict[str, tuple[str, ...]]
    lease_s: float
    max_attempts: int
    retry_backoff_s: float = 15.0
    retry_backoff_max_s: float = 600.0
    retry_for_s: float = 6 * 3600.0
    notify: NotifyRules = field(default_factory=NotifyRules)

    def retry_delay_s(self, retries: int) -> float:
        """Delay before the next try after ``retries`` transient failures."""
        return min(self.retry_backoff_max_s, self.retry_backoff_s * 2 ** min(retries, 30))


def run_job(
    db: Database,
    job: Job,
    context: JobContext,
    worker_id: str,
    outputs_queued: Callable[[], object] | None = None,
) -> None:
    """Process a claimed job: record its result (a new version of the series' result, with one
    export per output and destination) or its failure; the lease is renewed while it runs.
    ``outputs_queued`` is called once the result's exports are queued (it wakes the sender)."""
    root = context.storage_root
    records = instance_records(db, job.series_instance_uid)
    paths = [root / path for _, path in records]
    aif_zyx, vof_zyx = parse_zyx(job.aif_zyx), parse_zyx(job.vof_zyx)
    digest = _digest(job, [uid for uid, _ in records], context)
    relative_out = Path("results") / job.series_instance_uid / f"job-{job.id}"
    keeper = _LeaseKeeper(
        lambda: heartbeat(db, job.id, worker_id, context.lease_s),
        interval_s=max(1.0, context.lease_s / 3),
    )
    try:
        with keeper:
            computed = compute_series(
                paths,
                context.settings,
                aif_zyx=aif_zyx,
                vof_zyx=vof_zyx,
                other_slabs=len(other_perfusion_series(db, job.series_instance_uid)),
                calling_ae=series_sender(db, job.series_instance_uid),
                region=parse_region(job.region),
            )
            version, record, processed = _write_result(
                db, job, context, computed, digest, len(records), root / relative_out
            )
    except AcquisitionUnusableError as exc:
        _cannot_give_maps(db, job, context, worker_id, exc)
        return
    except Exception as exc:
        _failed(db, job, context, worker_id, exc)
        return
    exports = destination_exports(relative_out, processed.outputs, context.destinations)
    if not finish_job(
        db,
        job.id,
        worker_id=worker_id,
        result_dir=relative_out.as_posix(),
        summary=processed.summary,
        version=record,
        exports=exports,
        notifications=context.notify.for_result(processed.summary),
    ):
        log.info("job %d was superseded while it ran: its outputs are not sent", job.id)
        return
    if outputs_queued is not None:
        outputs_queued()
    log.info(
        "job %d (series %s) done: %d outputs (version %d), %d export(s) queued",
        job.id,
        job.series_instance_uid,
        len(processed.outputs),
        version.number,
        len(exports),
    )
    _write_summary_page(computed, processed, root / relative_out)


def _write_result(
    db: Database,
    job: Job,
    context: JobContext,
    computed: ComputedSeries,
    digest: str,
    instances: int,
    out: Path,
) -> tuple[ResultVersion, VersionRecord, ProcessedSeries]:
    """Choose the version the computed result takes in its series (from the inputs' ``digest``
    and the ``instances`` counted) and write its outputs into ``out``, owner-only."""
    version, record = plan_version(
        db,
        job,
        digest,
        instances,
        time_points=int(computed.loaded.acquisition.hu.shape[0]),
        algorithm=computed.result.algorithm,
    )
    report = replace(context.settings.report, version=version)
    make_folders(out)  # owner-only before any output is in it
    processed = write_outputs(computed, out, report, summary_png=False)
    restrict_tree(out)
    return version, record, processed


def _cannot_give_maps(
    db: Database, job: Job, context: JobContext, worker_id: str, exc: AcquisitionUnusableError
) -> None:
    """The series cannot give maps: the job fails for good and PACS gets a notice saying why."""
    log.warning("job %d (series %s) cannot give maps: %s", job.id, job.series_instance_uid, exc)
    if fail_job(
        db,
        job.id,
        str(exc),
        retry=False,
        max_attempts=context.max_attempts,
        worker_id=worker_id,
        notice_reason=str(exc),
    ):
        notify_failed_jobs(db, context, worker_id, only=job.id)


def _write_summary_page(computed: ComputedSeries, processed: ProcessedSeries, out: Path) -> None:
    """``summary.png``, once the outputs are on their way to PACS (it is for people reading
    the result folder); a failure to write it is logged, the result stands."""
    try:
        write_summary_page(computed, processed.summary, out)
    except Exception as exc:
        log.warning("series %s: summary.png not written: %s", processed.series_instance_uid, exc)


def _failed(db: Database, job: Job, context: JobContext, worker_id: str, exc: Exception) -> None:
    # recorded, listed by status and written into the failure notice: no quoted header value
    error = withhold_values(f"{exc.__class__.__name__}: {exc}")
    age_s = (utcnow() - job.created_at).total_seconds()
    if is_transient(exc) and age_s < context.retry_for_s:
        delay = context.retry_delay_s(job.retries)
        log.warning("job %d: %s; tried again in %.0f s", job.id, error, delay)
        retry_later(db, job.id, worker_id, error, delay_s=delay)
        return
    if is_transient(exc):
        log.error("job %d: %s, for %.1f h: it fails", job.id, error, age_s / 3600)
        fail_job(db, job.id, error, retry=False, max_attempts=1, worker_id=worker_id)
        return
    log.exception("job %d failed unexpectedly; it will be retried", job.id)
    fail_job(db, job.id, error, retry=True, max_attempts=context.max_attempts, worker_id=worker_id)


def is_transient(exc: BaseException) -> bool:
    """An error that time may cure: the file system (full, unreachable) or the database
    (locked, restarting)."""
    return isinstance(exc, OSError | sqlalchemy.exc.OperationalError)


def plan_version(
    db: Database,
    job: Job,
    digest: str,
    instances: int,
    *,
    time_points: int | None = None,
    algorithm: str = "",
    failure: bool = False,
) -> tuple[ResultVersion, VersionRecord]:
    """The version a job's result (or failure notice, with ``failure``) takes in its series.

    The same inputs as the series' latest reported result of the same kind give that version
    again (same key, hence the same UIDs: a harmless duplicate in PACS); anything else is the
    next version, which supersedes it.
    """
    latest = latest_reported_job(db, job.series_instance_uid, before_job_id=job.id)
    same = (
        latest is not None
        and latest.content_digest == digest
        and (latest.state == JobState.FAILED) == failure
    )
    if latest is not None and same:
        predecessor = get_job(db, latest.predecessor_job_id) if latest.predecessor_job_id else None
        number, key, reason = latest.version, latest.version_key, latest.version_reason
    else:
        predecessor = latest
        number = latest.version + 1 if latest is not None else 1
        key = version_key(digest, latest.version_key if latest is not None else None)
        reason = _why_new(latest, job, instances, algorithm) if latest is not None else ""
    version = ResultVersion(
        number=number,
        key=key,
        predecessor=_predecessor(predecessor, instances, time_points),
        reason=reason,
    )
    record = VersionRecord(
        content_digest=digest,
        input_instances=instances,
        version=number,
        version_key=key,
        predecessor_job_id=predecessor.id if predecessor is not None else None,
        reason=reason,
    )
    return version, record


def _predecessor(job: Job | None, instances: int, time_points: int | None) -> Predecessor | None:
    if job is None:
        return None
    summary = json.loads(job.summary_json) if job.state == JobState.DONE else {}
    earlier_points = (summary.get("acquisition") or {}).get("time_points")
    extent = ""
    if earlier_points and time_points and earlier_points != time_points:
        extent = f"{earlier_points} of {time_points} time points"
    elif job.input_instances and job.input_instances != instances:
        extent = (
            f"{job.input_instances} of {instances} images"
            if job.input_instances < instances
            else f"{job.input_instances} images (now {instances})"
        )
    reported = job.finished_at
    return Predecessor(
        key=job.version_key,
        number=job.version,
        reported_at=reported.replace(tzinfo=dt.UTC).astimezone() if reported else None,
        extent=extent,
        sr_kind=RESULT_SR_KIND if job.state == JobState.DONE else FAILURE_SR_KIND,
    )


def _why_new(latest: Job, job: Job, instances: int, algorithm: str) -> str:
    """Why a job's result is a new version of the series' result, as a short phrase."""
    reasons = []
    if latest.input_instances != instances:
        reasons.append(
            "more images arrived" if instances > latest.input_instances else "the series changed"
        )
    if (job.aif_zyx, job.vof_zyx) != (latest.aif_zyx, latest.vof_zyx):
        chosen = [
            f"{name} at (slice, row, column) ({value})"
            for name, value in (("arterial input", job.aif_zyx), ("venous output", job.vof_zyx))
            if value
        ]
        reasons.append(
            "chosen by a person: " + " and ".join(chosen)
            if chosen
            else "arterial and venous inputs chosen automatically"
        )
    if job.region != latest.region:
        reasons.append(
            f"a region given by a person (slice, row, column, radius mm) ({job.region})"
            if job.region
            else "no region given by a person"
        )
    earlier = json.loads(latest.summary_json).get("algorithm", "") if latest.summary_json else ""
    if algorithm and earlier and algorithm != earlier:
        reasons.append(f"engine {algorithm} instead of {earlier}")
    if not reasons:
        reasons.append(
            "reprocessed on request" if job.requested_by == "operator" else "settings changed"
        )
    return "; ".join(reasons)


def notify_failed_jobs(
    db: Database, context: JobContext, worker_id: str, *, only: int | None = None
) -> int:
    """Write and queue the failure notice of every job that failed for good without one (the
    series cannot give maps, unexpected errors on every attempt, workers that died on it), so
    that no study fails silently. A notice that cannot be written now is tried again later.

    Returns how many notices were written.
    """
    written = 0
    for job in failed_jobs_without_notice(db):
        if only is not None and job.id != only:
            continue
        if not claim_notice(db, job.id, worker_id, context.lease_s):
            continue  # another worker took it
        try:
            if _write_notice(db, job, context, worker_id):
                written += 1
        except Exception as exc:
            delay = context.retry_delay_s(job.retries)
            log.error(
                "job %d: the failure notice could not be written (%s); tried again in %.0f s",
                job.id,
                exc,
                delay,
            )
            error = withhold_values(f"{exc.__class__.__name__}: {exc}")
            notice_failed(db, job.id, error, delay_s=delay)
    return written


def _write_notice(db: Database, job: Job, context: JobContext, worker_id: str) -> bool:
    root = context.storage_root
    records = instance_records(db, job.series_instance_uid)
    paths = [root / path for _, path in records]
    reason = notice_reason(job)
    version, record = plan_version(
        db, job, _digest(job, [uid for uid, _ in records], context), len(records), failure=True
    )
    relative_out = Path("results") / job.series_instance_uid / f"job-{job.id}"
    report = replace(context.settings.report, version=version)
    make_folders(root / relative_out)
    notice = write_failure_notice(paths, root / relative_out, reason, report)
    restrict_tree(root / relative_out)
    exports = destination_exports(relative_out, notice, context.destinations)
    if not record_notice(
        db,
        job.id,
        worker_id=worker_id,
        result_dir=relative_out.as_posix(),
        version=record,
        exports=exports,
        notifications=context.notify.for_failure(reason),
    ):
        return False
    if notice:
        log.error("job %d failed for good; failure notice queued: %s", job.id, job.error)
    else:
        log.error("job %d failed for good; no header can be read to attach a notice to", job.id)
    return True


def notice_reason(job: Job) -> str:
    """What the failure notice says: the reason the series cannot give maps, or that the node
    could not process it."""
    recorded = json.loads(job.summary_json).get("notice_reason") if job.summary_json else None
    if recorded:
        return str(recorded)
    return (
        f"The node could not process this series after {job.attempts} attempt(s) "
        f"({job.error or 'no error recorded'}). The node's administrator has the details; "
        "use the source images and the scanner's own tools meanwhile."
    )


def destination_exports(
    relative_out: Path,
    outputs: Sequence[WrittenOutput],
    destinations: dict[str, tuple[str, ...]],
) -> list[tuple[str, OutputObject]]:
    """One export per output for every destination that receives its kind."""
    return [
        (name, OutputObject(o.sop_instance_uid, o.output_kind, f"{relative_out}/{o.path.name}"))
        for name, kinds in destinations.items()
        for o in outputs
        if o.output_kind in kinds
    ]


def _digest(job: Job, sop_instance_uids: Iterable[str], context: JobContext) -> str:
    return content_digest(
        job.series_instance_uid,
        sop_instance_uids,
        algorithm_version=context.settings.report.algorithm_version,
        settings=context.settings.digest_text(),
        aif_zyx=parse_zyx(job.aif_zyx),
        vof_zyx=parse_zyx(job.vof_zyx),
        region=job.region,
    )


def parse_zyx(text: str) -> tuple[int, int, int] | None:
    """``"Z,Y,X"`` (slice, row, column; 0-based voxel indices) → a tuple; "" → None."""
    if not text:
        return None
    z, y, x = (int(v) for v in text.split(","))
    return z, y, x


class _LeaseKeeper:
    """Renews a job's lease from a background thread while the job runs."""

    def __init__(self, renew: Callable[[], bool], interval_s: float) -> None:
        self._renew = renew
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="lease")

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                if not self._renew():
                    log.warning("the job is no longer this worker's (superseded or taken over)")
                    return
            except Exception:
                log.exception("renewing the job's lease failed")

    def __enter__(self) -> _LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
