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
from ctp_node.perfusion.result import DISPLAY_UNITS
from ctp_node.profiles import DEFAULT_PROFILE, PROFILES
from ctp_node.retention.disk import measure_disk
from ctp_node.store import Database, open_database
from ctp_node.store.audit import AssociationAudit, SeriesCounts, list_associations
from ctp_node.store.console_audit import list_console_actions
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


#: How many associations ``status --audit`` prints as a table (``--json`` writes every one).
AUDIT_TABLE_ROWS = 50


def print_audit(config: Config, *, as_json: bool = False, only: StatusFilter | None = None) -> int:
    """Print the audit trail: a table of the latest associations received and sent, or (with
    ``as_json``) every one as JSON lines, oldest first, for a SIEM. Returns 0."""
    only = only or StatusFilter()
    db = open_database(config.database.url, database_password(config.database), must_exist=True)
    try:
        audits = list_associations(
            db,
            since=(
                utcnow() - dt.timedelta(seconds=only.since_s) if only.since_s is not None else None
            ),
            series_instance_uid=only.series,
            needs_attention=only.failed,
            carried_instances=not as_json,
            latest=None if as_json else AUDIT_TABLE_ROWS,
        )
    finally:
        db.dispose()
    if as_json:
        for audit in audits:
            print(json.dumps(audit_record(audit)))
        return 0
    print(
        f"audit trail: {len(audits)} association(s)"
        + (f", the last {AUDIT_TABLE_ROWS}" if len(audits) == AUDIT_TABLE_ROWS else "")
        + "; those released without instances (C-ECHO) only with --json"
    )
    for audit in audits:
        print("  " + _audit_line(audit))
        for series in audit.series:
            print(
                f"      study {series.study_instance_uid or '?'}"
                f"  acc {series.accession_number or '-'}"
                f"  series {series.series_instance_uid or '?'}  {series.modality or '-'}"
                f"  {_instance_outcomes(series)}"
            )
    return 0


def print_console_audit(
    config: Config, *, as_json: bool = False, only: StatusFilter | None = None
) -> int:
    """Print the web console's audit trail (sign-ins, failed ones, sign-outs, refusals,
    actions): a table of the latest, newest first, or (``as_json``) every one as JSON lines,
    oldest first. ``--failed``: only what was refused. Returns 0."""
    only = only or StatusFilter()
    since = utcnow() - dt.timedelta(seconds=only.since_s) if only.since_s is not None else None
    db = open_database(config.database.url, database_password(config.database), must_exist=True)
    try:
        actions = list_console_actions(
            db,
            latest=None if as_json else AUDIT_TABLE_ROWS,
            since=since,
            series_instance_uid=only.series,
            refused=only.failed,
        )
    finally:
        db.dispose()
    if as_json:
        for action in reversed(actions):
            record = asdict(action)
            record["at"] = action.at.isoformat(timespec="milliseconds") + "Z"
            print(json.dumps(record))
        return 0
    print(f"console audit trail: {len(actions)} action(s), newest first")
    for a in actions:
        where = f"  series {a.series_instance_uid}" if a.series_instance_uid else ""
        job = f"  job {a.job_id}" if a.job_id is not None else ""
        detail = f"  {a.detail}" if a.detail else ""
        print(
            f"  {a.at:%Y-%m-%d %H:%M:%S}  {a.user or '-'} from {a.address}  {a.action}"
            f"  {a.outcome}{where}{job}{detail}"
        )
    return 0


def audit_record(audit: AssociationAudit) -> dict:
    """One association as plain values (times ISO 8601 UTC, with a Z): a JSON line's object."""
    return {
        "id": audit.id,
        "direction": audit.direction,
        "started_at": audit.started_at.isoformat(timespec="milliseconds") + "Z",
        "ended_at": audit.ended_at.isoformat(timespec="milliseconds") + "Z",
        "peer_ae_title": audit.peer_ae_title,
        "peer_address": audit.peer_address,
        "local_ae_title": audit.local_ae_title,
        "outcome": audit.outcome,
        "reason": audit.reason,
        "instances": audit.instances,
        "stored": audit.stored,
        "duplicate": audit.duplicate,
        "refused": audit.refused,
        "series": [asdict(series) for series in audit.series],
    }


def _audit_line(audit: AssociationAudit) -> str:
    """``<start> received from SCANNER at 10.0.0.7:40112 (called CTPNODE) released 12.3 s …``"""
    peer = f"{audit.peer_ae_title or '?'} at {audit.peer_address}"
    who = (
        f"received from {peer} (called {audit.local_ae_title or '?'})"
        if audit.direction == "received"
        else f"sent to {peer} (as {audit.local_ae_title})"
    )
    lasted = (audit.ended_at - audit.started_at).total_seconds()
    line = f"{audit.started_at.isoformat(timespec='seconds')}Z  {who}  {audit.outcome}"
    line += f"  {lasted:.1f} s"
    if audit.instances:
        line += f"  {_instance_outcomes(audit)}"
    return line + (f"  {audit.reason}" if audit.reason else "")


def _instance_outcomes(counts: AssociationAudit | SeriesCounts) -> str:
    """``164 instances: 160 stored, 2 duplicate, 1 refused, 1 not sent``"""
    parts = [f"{counts.stored} stored"]
    parts += [
        f"{n} {name}"
        for n, name in ((counts.duplicate, "duplicate"), (counts.refused, "refused"))
        if n
    ]
    missing = counts.instances - counts.stored - counts.duplicate - counts.refused
    if missing:
        parts.append(f"{missing} not sent")
    plural = "" if counts.instances == 1 else "s"
    return f"{counts.instances} instance{plural}: {', '.join(parts)}"


#: The hypoperfusion intensity ratio's key in ``results.json``'s volumes and the truth.
HIR_KEY = "hypoperfusion_intensity_ratio"


def print_result(summary: dict, out: Path, truth: dict | None = None) -> None:
    """Print one series' profile, volumes (a profile with stroke volumes), hemispheric
    comparison and enhancing region (if any) and map medians as a table, each with its unit
    (with the truth, if known)."""
    volumes = summary["volumes"]
    profile = summary.get("profile") or {"name": DEFAULT_PROFILE, "chosen_by": "-"}
    stroke = PROFILES[profile["name"]].stroke_volumes
    rows = []
    if stroke:
        rows += [
            ("core (rCBF<30%)", "ml", volumes["core_ml"], "core_ml"),
            ("hypoperfusion (Tmax>6s)", "ml", volumes["tmax6_ml"], "tmax6_ml"),
            ("hypoperfusion (Tmax>10s)", "ml", volumes["tmax10_ml"], "tmax10_ml"),
            ("mismatch", "ml", volumes["mismatch_ml"], "mismatch_ml"),
            ("mismatch ratio", "ratio", volumes["mismatch_ratio"], "mismatch_ratio"),
            ("HIR", "ratio", volumes["hypoperfusion_intensity_ratio"], HIR_KEY),
        ]
    rows += _asymmetry_rows(summary.get("asymmetry"))
    rows += _permeability_rows(summary.get("permeability"))
    if summary.get("user_region"):
        rows += _region_rows("user", summary["user_region"])
    rows += [
        (f"median {name}", DISPLAY_UNITS.get(name, "?"), stats["median_in_tissue"], None)
        for name, stats in summary["maps"].items()
    ]
    print(f"\nseries {summary['series_instance_uid']}  ({summary['algorithm']})")
    print(f"  profile {profile['name']}, chosen by {profile['chosen_by']}")
    header = f"  {'quantity':<28}{'unit':<14}{'ctp-node':>10}"
    print(header + (f"{'truth':>10}" if truth else ""))
    for name, unit, value, key in rows:
        line = f"  {name:<28}{unit:<14}{_fmt(value):>10}"
        if truth and key:
            line += f"{_fmt(truth.get(key)):>10}"
        print(line)
    if stroke:
        target = "yes" if volumes["target_mismatch"] else "no"
        print(f"  {'target mismatch (DEFUSE 3)':<28}{'yes/no':<14}{target:>10}")
    print(
        f"  outputs: {len(summary['outputs'])} DICOM objects, results.json and summary.png in {out}"
    )


def _asymmetry_rows(asymmetry: dict | None) -> list[tuple[str, str, float | None, None]]:
    """Per compared map: each side's mean, and the difference (time maps) or ratio (flow
    maps), flagged maps marked with ``!``."""
    if not asymmetry:
        return []
    first, second = asymmetry["sides"]
    rows = []
    for name, item in asymmetry["maps"].items():
        unit = DISPLAY_UNITS.get(name, "?")
        mark = " !" if item["flagged"] else ""
        rows += [(f"{name} {s} mean", unit, item["mean"][s], None) for s in (first, second)]
        if unit == "s":
            rows.append((f"{name} {second} - {first}{mark}", "s", item["difference"], None))
        else:
            rows.append((f"{name} lower/higher{mark}", "ratio", item["ratio"], None))
    return rows


def _permeability_rows(permeability: dict | None) -> list[tuple[str, str, float | None, None]]:
    """The enhancing region's volume and each map's mean in it and outside it."""
    if not permeability:
        return []
    return _region_rows("enhancing", permeability["enhancing_region"])


def _region_rows(label: str, region: dict | None) -> list[tuple[str, str, float | None, None]]:
    """A region's volume (``label``: how the rows name it) and each map's mean in it and
    outside it."""
    if region is None:
        return [(f"{label} region (none)", "ml", 0.0, None)]
    rows = [(f"{label} region", "ml", region["volume_ml"], None)]
    for name, item in (region.get("maps") or {}).items():
        unit = DISPLAY_UNITS.get(name, "?")
        rows += [
            (f"{name} {label} mean", unit, item["mean"], None),
            (f"{name} outside mean", unit, item["outside_mean"], None),
        ]
    return rows


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
