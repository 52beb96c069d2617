"""``ctp-node status``: series, jobs and exports with their state, the objects that are not CT,
everything the listener refused; and with ``--audit``, the audit trail of associations."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from pydicom.uid import UID
from sqlalchemy.exc import OperationalError

from ctp_node.config import Config, database_password
from ctp_node.http.health import disk_check
from ctp_node.http.probe import ask_ready, ready_url
from ctp_node.retention.disk import measure_disk
from ctp_node.store import Database, open_database
from ctp_node.store.ingest import list_rejections, list_series
from ctp_node.store.models import (
    ExportState,
    Job,
    JobState,
    NotificationState,
    SeriesState,
    utcnow,
)
from ctp_node.store.notifications import list_notifications
from ctp_node.store.others import list_other_series
from ctp_node.store.outbox import list_exports
from ctp_node.store.queue import list_jobs


@dataclass(frozen=True)
class StatusFilter:
    """What ``ctp-node status`` shows.

    Attributes
    ----------
    series : only this series (its jobs and exports).
    since_s : only what happened in the last ``since_s`` seconds.
    failed : only what needs attention.
    """

    series: str | None = None
    since_s: float | None = None
    failed: bool = False


def collect_status(db: Database, only: StatusFilter | None = None) -> dict:
    """Everything the node knows of its work, as plain values (UIDs and accession numbers only),
    and what needs a person's attention (``attention``: one sentence each)."""
    only = only or StatusFilter()
    jobs, jobs_attention = _job_rows(db, only)
    series, series_attention = _series_rows(db, only)
    rejections = _rejection_rows(db, only)
    return {
        "series": series,
        "jobs": jobs,
        "other_objects": _other_object_rows(db, only),
        "rejections": rejections,
        "attention": jobs_attention + series_attention,
    }


def _job_rows(db: Database, only: StatusFilter) -> tuple[list[dict], list[str]]:
    """The jobs ``only`` wants, each with its exports and notifications counted by
    ``destination:state`` / ``channel:state``, and why they need a person."""
    exports_by_job, export_errors = _exports_by_job(db)
    notifications_by_job, notification_problems = _notifications_by_job(db)
    all_jobs = list_jobs(db)
    latest = {job.series_instance_uid: job.id for job in all_jobs}  # ids increase with time
    attention: list[str] = []
    jobs = []
    for job in all_jobs:
        exports = dict(exports_by_job.get(job.id, {}))
        needs = _job_attention(job, exports, export_errors.get(job.id, ""), latest)
        needs += notification_problems.get(job.id, [])
        if not _wanted(only, job.series_instance_uid, [job.created_at, job.finished_at], needs):
            continue
        attention += needs
        notifications = dict(notifications_by_job.get(job.id, {}))
        jobs.append(_job_row(job, exports, export_errors.get(job.id, ""), notifications))
    return jobs, attention


def _exports_by_job(db: Database) -> tuple[dict[int, Counter], dict[int, str]]:
    """Each job's exports counted by ``destination:state``, and its last export error (the
    error of an export cancelled on purpose is not one)."""
    exports_by_job: dict[int, Counter] = {}
    export_errors: dict[int, str] = {}
    for export in list_exports(db):
        exports_by_job.setdefault(export.job_id, Counter())[
            f"{export.destination}:{export.state}"
        ] += 1
        if export.last_error and export.state != ExportState.CANCELLED:
            export_errors[export.job_id] = export.last_error
    return exports_by_job, export_errors


def _notifications_by_job(db: Database) -> tuple[dict[int, Counter], dict[int, list[str]]]:
    """Each job's notifications counted by ``channel:state``, and a sentence for each one that
    gave up."""
    notifications_by_job: dict[int, Counter] = {}
    notification_problems: dict[int, list[str]] = {}
    for n in list_notifications(db):
        notifications_by_job.setdefault(n.job_id, Counter())[f"{n.channel}:{n.state}"] += 1
        if n.state == NotificationState.FAILED:
            notification_problems.setdefault(n.job_id, []).append(
                f"job {n.job_id}: the {n.event} notification to {n.channel} gave up after "
                f"{n.attempts} attempt(s) ({n.last_error}); a restart tries it again"
            )
    return notifications_by_job, notification_problems


def _job_row(
    job: Job, exports: dict[str, int], export_error: str, notifications: dict[str, int]
) -> dict:
    """One job as ``status`` shows it: its state, version, volumes and quality warnings from
    its summary, and its deliveries."""
    summary = json.loads(job.summary_json) if job.summary_json else {}
    return {
        "id": job.id,
        "series_instance_uid": job.series_instance_uid,
        "state": job.state,
        "version": job.version or None,
        "supersedes_job": job.predecessor_job_id,
        "version_reason": job.version_reason,
        "requested_by": job.requested_by,
        "attempts": job.attempts,
        "worker_id": job.worker_id,
        "error": job.error,
        "volumes": summary.get("volumes"),
        "quality_checks": len(summary.get("quality", [])),
        "quality_warnings": [
            finding["name"]
            for finding in summary.get("quality", [])
            if finding.get("result") == "warn"
        ],
        "result_dir": job.result_dir,
        "exports": exports,
        "last_export_error": export_error,
        "notifications": notifications,
    }


def _series_rows(db: Database, only: StatusFilter) -> tuple[list[dict], list[str]]:
    """The received series ``only`` wants, and one sentence for each that could not be
    examined."""
    attention: list[str] = []
    series = []
    for s in list_series(db):
        needs = (
            [f"series {s.series_instance_uid}: could not be examined: {s.reason}"]
            if s.state == SeriesState.ERROR
            else []
        )
        if not _wanted(only, s.series_instance_uid, [s.last_received_at, s.decided_at], needs):
            continue
        attention += needs
        series.append(
            {
                "series_instance_uid": s.series_instance_uid,
                "study_instance_uid": s.study_instance_uid,
                "accession_number": s.accession_number,
                "modality": s.modality,
                "instances": s.instance_count,
                "state": s.state,
                "reason": s.reason,
                "last_received_at": s.last_received_at.isoformat(timespec="seconds") + "Z",
                "purged_at": (
                    s.purged_at.isoformat(timespec="seconds") + "Z" if s.purged_at else None
                ),
            }
        )
    return series, attention


def _rejection_rows(db: Database, only: StatusFilter) -> list[dict]:
    """What the listener refused (associations, contexts, objects): none when ``only`` asks
    for one series or only failures, since a refusal belongs to no series and is no failure of
    the node's."""
    cutoff = utcnow() - dt.timedelta(seconds=only.since_s) if only.since_s is not None else None
    return [
        {
            "received_at": r.received_at.isoformat(timespec="seconds") + "Z",
            # Before refusals had a kind, a refused association was recorded with status -1.
            "kind": "association" if r.status == -1 else r.kind,
            "calling_ae_title": r.calling_ae_title,
            "peer_address": r.peer_address,
            "sop_instance_uid": r.sop_instance_uid,
            "status": r.status,
            "reason": r.reason,
            "quarantine_path": r.quarantine_path,
        }
        for r in list_rejections(db)
        if only.series is None and not only.failed and (cutoff is None or r.received_at >= cutoff)
    ]


def _other_object_rows(db: Database, only: StatusFilter) -> list[dict]:
    """The series of objects that are not CT (acknowledged, perhaps kept), which ``only``
    wants."""
    return [
        {
            "series_instance_uid": o.series_instance_uid,
            "study_instance_uid": o.study_instance_uid,
            "modality": o.modality,
            "sop_class_uid": o.sop_class_uid,
            "sop_class": UID(o.sop_class_uid).name,
            "objects": o.objects,
            "kept": o.kept,
            "reason": o.reason,
            "last_received_at": o.last_received_at.isoformat(timespec="seconds") + "Z",
        }
        for o in list_other_series(db)
        if _wanted(only, o.series_instance_uid, [o.last_received_at], [])
    ]


def _job_attention(
    job: Job, exports: dict[str, int], export_error: str, latest: dict[str, int]
) -> list[str]:
    """Why a job needs a person: it failed (and no later job of its series replaced it), or
    some of its outputs could not be delivered."""
    needs = []
    if job.state == JobState.FAILED and latest.get(job.series_instance_uid) == job.id:
        notice = _notice_state(job, exports)
        needs.append(
            f"job {job.id} (series {job.series_instance_uid}) failed ({notice}): {job.error}"
        )
    gave_up = {key: n for key, n in exports.items() if key.endswith(f":{ExportState.FAILED}")}
    for key, count in gave_up.items():
        destination = key.rsplit(":", 1)[0]
        needs.append(
            f"job {job.id}: {count} output(s) not delivered to {destination} ({export_error}); "
            f"`ctp-node resend --job {job.id}` tries again"
        )
    return needs


def _notice_state(job: Job, exports: dict[str, int]) -> str:
    if not job.result_dir:
        return "failure notice not written yet"
    if not exports:
        return "no failure notice could be sent: no destination, or no readable header"
    if all(key.endswith(f":{ExportState.SENT}") for key in exports):
        return "failure notice delivered"
    return "failure notice not delivered yet"


def _wanted(
    only: StatusFilter, series_uid: str, moments: list[dt.datetime | None], needs: list[str]
) -> bool:
    if only.series is not None and series_uid != only.series:
        return False
    if only.failed and not needs:
        return False
    if only.since_s is not None:
        cutoff = utcnow() - dt.timedelta(seconds=only.since_s)
        return any(moment is not None and moment >= cutoff for moment in moments)
    return True


def node_health(config: Config, free_bytes: int) -> list[str]:
    """Why the node is not healthy, one sentence each (empty when healthy). With ``http``
    enabled, ``serve``'s own ``/health/ready`` answers (listener, database, disk, workers),
    and no answer means serve is not running. Without it, what the command line can see:
    the free space against ``storage.min_free_bytes`` (the database was reached already)."""
    if config.http.enabled:
        problems = ask_ready(
            ready_url(config.http.bind, config.http.port, config.http.tls is not None)
        ).problems
    else:
        disk = disk_check(lambda: free_bytes, config.storage.min_free_bytes)()
        problems = () if disk is None else (f"disk: {disk}",)
    return [f"node not ready: {problem}" for problem in problems]


def print_status(config: Config, *, as_json: bool = False, only: StatusFilter | None = None) -> int:
    """Print the node's state; returns 1 when the node is not healthy (the database does not
    answer, :func:`node_health`) or something needs attention (a failed job, an output not
    delivered, a series in error), else 0. A database that does not exist is refused
    (``DatabaseUnavailable``), not created."""
    db = open_database(config.database.url, database_password(config.database), must_exist=True)
    try:
        status = collect_status(db, only)
    except OperationalError as exc:
        print(f"ctp-node: the database does not answer: {exc}", file=sys.stderr)
        return 1
    finally:
        db.dispose()
    status["disk"] = asdict(measure_disk(Path(config.storage.root)))
    status["health"] = node_health(config, status["disk"]["free_bytes"])
    status["attention"] = status["health"] + status["attention"]
    code = 1 if status["attention"] else 0
    if as_json:
        print(json.dumps(status, indent=2))
        return code
    _print_disk(config.storage.root, status["disk"])
    _print_series(status["series"])
    _print_jobs(status["jobs"])
    _print_other_objects(status["other_objects"])
    _print_rejections(status["rejections"])
    _print_attention(status["attention"])
    return code


def _print_disk(root: str | Path, disk: dict) -> None:
    """One line: the megabytes below ``storage.root`` by kind, and what is free."""
    print(
        f"disk below {root}: spool {disk['spool_bytes'] / 1e6:.1f} MB, "
        f"results {disk['results_bytes'] / 1e6:.1f} MB, quarantine "
        f"{disk['quarantine_bytes'] / 1e6:.1f} MB, other {disk['other_bytes'] / 1e6:.1f} MB; "
        f"{disk['free_bytes'] / 1e6:.1f} MB free"
    )


def _print_series(series: list[dict]) -> None:
    print(f"series ({len(series)})")
    for s in series:
        print(
            f"  {s['series_instance_uid']}  acc {s['accession_number'] or '-'}  {s['modality']}"
            f"  {s['instances']} inst.  {s['state']}  {s['reason']}"
            + (f"  (received files purged {s['purged_at']})" if s["purged_at"] else "")
        )


def _print_jobs(jobs: list[dict]) -> None:
    """A line per job (state, version, volumes or error, exports), then indented lines for
    what it supersedes, its quality warnings, its last export error and its notifications."""
    print(f"jobs ({len(jobs)})")
    for j in jobs:
        volumes = j["volumes"] or {}
        result = (
            f"core {volumes.get('core_ml')} ml, Tmax>6s {volumes.get('tmax6_ml')} ml"
            if volumes
            else j["error"]
        )
        exports = ", ".join(f"{k} {v}" for k, v in sorted(j["exports"].items())) or "no exports"
        version = f"  version {j['version']}" if j["version"] else ""
        print(
            f"  job {j['id']}  {j['series_instance_uid']}  {j['state']}{version} "
            f"(attempt {j['attempts']})  {result}  [{exports}]"
        )
        if j["supersedes_job"]:
            print(f"      supersedes job {j['supersedes_job']}: {j['version_reason']}")
        if j["quality_checks"]:
            warned = j["quality_warnings"]
            listed = f" ({', '.join(warned)})" if warned else ""
            print(
                f"      acquisition quality: {len(warned)} warning{'' if len(warned) == 1 else 's'}"
                f" in {j['quality_checks']} checks{listed}"
            )
        if j["last_export_error"]:
            print(f"      last export error: {j['last_export_error']}")
        if j["notifications"]:
            told = ", ".join(f"{k} {v}" for k, v in sorted(j["notifications"].items()))
            print(f"      notifications: {told}")


def _print_other_objects(other_objects: list[dict]) -> None:
    """The series of objects that are not CT; nothing when there are none."""
    if not other_objects:
        return
    print(f"other objects, acknowledged but not CT ({len(other_objects)} series)")
    for o in other_objects:
        kept = f", {o['kept']} kept" if o["kept"] else ", not kept"
        print(
            f"  {o['series_instance_uid'] or '-'}  {o['modality'] or '-'}  {o['sop_class']}"
            f"  {o['objects']} obj.{kept}  {o['reason']}"
        )


#: How many of the listener's latest refusals ``status`` prints (``--json`` writes every one).
REFUSALS_SHOWN = 20


def _print_rejections(rejections: list[dict]) -> None:
    """The latest :data:`REFUSALS_SHOWN` refusals; nothing when there are none."""
    if not rejections:
        return
    count = len(rejections)
    shown = f", the last {REFUSALS_SHOWN} shown" if count > REFUSALS_SHOWN else ""
    print(f"refused ({count}{shown})")
    for r in rejections[-REFUSALS_SHOWN:]:
        print(
            f"  {r['received_at']}  {r['calling_ae_title'] or '-'}"
            f" at {r['peer_address'] or '?'}  {_refusal(r)}  {r['reason']}"
        )


def _print_attention(attention: list[str]) -> None:
    """What needs a person, one sentence a line; nothing when all is well."""
    if not attention:
        return
    print(f"needs attention ({len(attention)})")
    for line in attention:
        print(f"  {line}")


def _refusal(rejection: dict) -> str:
    """What was refused, readably: ``C-STORE <UID> 0xA700`` or ``association``/``context``."""
    if rejection["kind"] != "c-store":
        return rejection["kind"]
    return f"C-STORE {rejection['sop_instance_uid'] or '-'} 0x{rejection['status'] & 0xFFFF:04X}"
