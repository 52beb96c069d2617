"""``ctp-node status``: series, jobs and exports with their state."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from ctp_node.config import Config
from ctp_node.retention.disk import measure_disk
from ctp_node.store import Database
from ctp_node.store.ingest import list_rejections, list_series
from ctp_node.store.outbox import list_exports
from ctp_node.store.queue import list_jobs


def collect_status(db: Database) -> dict:
    """Everything the node knows of its work, as plain values (UIDs and accession numbers only)."""
    exports_by_job: dict[int, Counter] = {}
    export_errors: dict[int, str] = {}
    for export in list_exports(db):
        exports_by_job.setdefault(export.job_id, Counter())[
            f"{export.destination}:{export.state}"
        ] += 1
        if export.last_error:
            export_errors[export.job_id] = export.last_error
    jobs = []
    for job in list_jobs(db):
        summary = json.loads(job.summary_json) if job.summary_json else {}
        jobs.append(
            {
                "id": job.id,
                "series_instance_uid": job.series_instance_uid,
                "state": job.state,
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
                "exports": dict(exports_by_job.get(job.id, {})),
                "last_export_error": export_errors.get(job.id, ""),
            }
        )
    series = [
        {
            "series_instance_uid": s.series_instance_uid,
            "study_instance_uid": s.study_instance_uid,
            "accession_number": s.accession_number,
            "modality": s.modality,
            "instances": s.instance_count,
            "state": s.state,
            "reason": s.reason,
            "last_received_at": s.last_received_at.isoformat(timespec="seconds") + "Z",
            "purged_at": s.purged_at.isoformat(timespec="seconds") + "Z" if s.purged_at else None,
        }
        for s in list_series(db)
    ]
    rejections = [
        {
            "received_at": r.received_at.isoformat(timespec="seconds") + "Z",
            "calling_ae_title": r.calling_ae_title,
            "sop_instance_uid": r.sop_instance_uid,
            "status": r.status,
            "reason": r.reason,
            "quarantine_path": r.quarantine_path,
        }
        for r in list_rejections(db)
    ]
    return {"series": series, "jobs": jobs, "rejections": rejections}


def print_status(config: Config, *, as_json: bool = False) -> int:
    db = Database(config.database.url)
    db.create_schema()
    status = collect_status(db)
    db.dispose()
    status["disk"] = asdict(measure_disk(Path(config.storage.root)))
    if as_json:
        print(json.dumps(status, indent=2))
        return 0
    disk = status["disk"]
    print(
        f"disk below {config.storage.root}: spool {disk['spool_bytes'] / 1e6:.1f} MB, "
        f"results {disk['results_bytes'] / 1e6:.1f} MB, quarantine "
        f"{disk['quarantine_bytes'] / 1e6:.1f} MB, other {disk['other_bytes'] / 1e6:.1f} MB; "
        f"{disk['free_bytes'] / 1e6:.1f} MB free"
    )
    print(f"series ({len(status['series'])})")
    for s in status["series"]:
        print(
            f"  {s['series_instance_uid']}  acc {s['accession_number'] or '-'}  {s['modality']}"
            f"  {s['instances']} inst.  {s['state']}  {s['reason']}"
            + (f"  (received files purged {s['purged_at']})" if s["purged_at"] else "")
        )
    print(f"jobs ({len(status['jobs'])})")
    for j in status["jobs"]:
        volumes = j["volumes"] or {}
        result = (
            f"core {volumes.get('core_ml')} ml, Tmax>6s {volumes.get('tmax6_ml')} ml"
            if volumes
            else j["error"]
        )
        exports = ", ".join(f"{k} {v}" for k, v in sorted(j["exports"].items())) or "no exports"
        print(
            f"  job {j['id']}  {j['series_instance_uid']}  {j['state']} "
            f"(attempt {j['attempts']})  {result}  [{exports}]"
        )
        if j["quality_checks"]:
            warned = j["quality_warnings"]
            listed = f" ({', '.join(warned)})" if warned else ""
            print(
                f"      acquisition quality: {len(warned)} warning{'' if len(warned) == 1 else 's'}"
                f" in {j['quality_checks']} checks{listed}"
            )
        if j["last_export_error"]:
            print(f"      last export error: {j['last_export_error']}")
    if status["rejections"]:
        print(f"refused objects ({len(status['rejections'])})")
        for r in status["rejections"][-20:]:
            print(
                f"  {r['received_at']}  {r['calling_ae_title']}  {r['sop_instance_uid'] or '-'}"
                f"  0x{r['status'] & 0xFFFF:04X}  {r['reason']}"
            )
    return 0


def print_result(summary: dict, out: Path, truth: dict | None = None) -> None:
    """Print one series' volumes and map medians as a table (with the truth, if known)."""
    volumes = summary["volumes"]
    rows = [
        ("core (rCBF<30%)", "ml", volumes["core_ml"], "core_ml"),
        ("hypoperfusion (Tmax>6s)", "ml", volumes["tmax6_ml"], "tmax6_ml"),
        ("hypoperfusion (Tmax>10s)", "ml", volumes["tmax10_ml"], "tmax10_ml"),
        ("mismatch", "ml", volumes["mismatch_ml"], "mismatch_ml"),
        ("mismatch ratio", "", volumes["mismatch_ratio"], "mismatch_ratio"),
        ("HIR", "", volumes["hypoperfusion_intensity_ratio"], "hypoperfusion_intensity_ratio"),
    ]
    print(f"\nseries {summary['series_instance_uid']}  ({summary['algorithm']})")
    header = f"  {'quantity':<26}{'unit':<6}{'ctp-node':>10}"
    print(header + (f"{'truth':>10}" if truth else ""))
    for name, unit, value, key in rows:
        line = f"  {name:<26}{unit:<6}{_fmt(value):>10}"
        if truth:
            line += f"{_fmt(truth.get(key)):>10}"
        print(line)
    target = "yes" if volumes["target_mismatch"] else "no"
    print(f"  {'target mismatch (DEFUSE 3)':<32}{target:>10}")
    for name, stats in summary["maps"].items():
        print(f"  median {name:<19}{'':<6}{_fmt(stats['median_in_tissue']):>10}")
    print(
        f"  outputs: {len(summary['outputs'])} DICOM objects, results.json and summary.png in {out}"
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
