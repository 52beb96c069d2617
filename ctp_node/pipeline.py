"""One acquisition end to end: load, compute, build the DICOM outputs, write them and a summary.

Used by the worker (a job from the queue, outputs then enqueued to every destination) and by
``ctp-node process`` (files in, files out).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from ctp_node.assemble.headers import UnreadableImageError, read_header
from ctp_node.assemble.layout import NotPerfusionError
from ctp_node.assemble.loader import LoadedSeries, load_series
from ctp_node.perfusion import PerfusionResult
from ctp_node.perfusion.engine import compute_perfusion
from ctp_node.perfusion.errors import PerfusionError
from ctp_node.perfusion.parameters import PerfusionParameters
from ctp_node.perfusion.quality import QualityFinding, QualityLimits, assess_acquisition
from ctp_node.report import (
    ReportSettings,
    build_failure_notice,
    build_parametric_maps,
    build_secondary_captures,
    build_structured_report,
)
from ctp_node.report.summary_png import write_summary_png
from ctp_node.store import Database
from ctp_node.store.ingest import instance_paths, other_perfusion_series
from ctp_node.store.models import Job
from ctp_node.store.outbox import OutputObject, enqueue_exports
from ctp_node.store.queue import (
    claim_notice,
    fail_job,
    failed_jobs_without_notice,
    finish_job,
    heartbeat,
)

log = logging.getLogger(__name__)

RESULTS_JSON = "results.json"
SUMMARY_PNG = "summary.png"


class AcquisitionUnusableError(Exception):
    """The series cannot give maps; final (retrying will not help). The message says why."""


@dataclass(frozen=True)
class PipelineSettings:
    parameters: PerfusionParameters = field(default_factory=PerfusionParameters)
    report: ReportSettings = field(default_factory=ReportSettings)
    min_time_points: int = 10
    quality_limits: QualityLimits = field(default_factory=QualityLimits)


@dataclass(frozen=True)
class WrittenOutput:
    """One DICOM output written to disk."""

    sop_instance_uid: str
    output_kind: str  # "parametric_maps" | "secondary_captures" | "structured_report"
    path: Path
    series_description: str


@dataclass(frozen=True)
class ProcessedSeries:
    series_instance_uid: str
    outputs: list[WrittenOutput]
    summary: dict[str, Any]


def process_series(
    paths: Sequence[Path],
    out_dir: Path,
    settings: PipelineSettings,
    *,
    aif_zyx: tuple[int, int, int] | None = None,
    vof_zyx: tuple[int, int, int] | None = None,
    other_slabs: int = 0,
) -> ProcessedSeries:
    """Compute one series' maps and write its outputs, ``results.json`` and ``summary.png``.

    ``other_slabs`` is the number of further perfusion series (slabs with their own bolus) of
    the same study, for the acquisition quality checks.

    Raises
    ------
    AcquisitionUnusableError : the series is unreadable, not a perfusion acquisition, or the
        engine cannot produce maps from it (reason in the message).
    """
    started = time.perf_counter()
    try:
        loaded = load_series(paths, settings.min_time_points)
        loaded_s = time.perf_counter() - started
        result = compute_perfusion(
            loaded.acquisition, settings.parameters, aif_zyx=aif_zyx, vof_zyx=vof_zyx
        )
    except (UnreadableImageError, NotPerfusionError, PerfusionError) as exc:
        raise AcquisitionUnusableError(str(exc)) from exc
    computed_s = time.perf_counter() - started - loaded_s
    quality = assess_acquisition(
        loaded.acquisition, result, settings.quality_limits, other_slabs=other_slabs
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    notes = list(loaded.layout.notes)
    report = settings.report
    outputs = [
        _save(dataset, out_dir, "parametric_maps")
        for dataset in build_parametric_maps(result, loaded.source_images, report)
    ]
    outputs += [
        _save(dataset, out_dir, "secondary_captures")
        for dataset in build_secondary_captures(
            result,
            loaded.acquisition,
            loaded.source_images,
            report,
            notes=notes,
            quality=quality,
        )
    ]
    structured_report = build_structured_report(
        result,
        loaded.source_images,
        report,
        acquisition_facts=loaded.acquisition.facts,
        notes=notes,
        quality=quality,
    )
    outputs.append(_save(structured_report, out_dir, "structured_report"))
    summary = summarise(loaded, result, outputs, quality)
    summary["timing_s"] = {
        "load": round(loaded_s, 2),
        "compute": round(computed_s, 2),
        "total": round(time.perf_counter() - started, 2),
    }
    (out_dir / RESULTS_JSON).write_text(json.dumps(summary, indent=2) + "\n")
    write_summary_png(result, loaded.acquisition, summary, out_dir / SUMMARY_PNG)
    series_uid = str(loaded.header.SeriesInstanceUID)
    log.info(
        "series %s: %d outputs in %.1f s (core %.1f ml, Tmax>6s %.1f ml)",
        series_uid,
        len(outputs),
        summary["timing_s"]["total"],
        result.volumes.core_ml,
        result.volumes.tmax6_ml,
    )
    return ProcessedSeries(series_uid, outputs, summary)


def write_failure_notice(
    paths: Sequence[Path], out_dir: Path, reason: str, settings: PipelineSettings
) -> list[WrittenOutput]:
    """Write the Secondary Capture and SR that tell PACS users why no maps will come.

    Returns no outputs when not even one source header can be read (nothing to attach the
    notice to); the reason is recorded with the job either way.
    """
    header = None
    for path in paths:
        try:
            header = read_header(path)
            break
        except UnreadableImageError:
            continue
    if header is None:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    kinds = {"1.2.840.10008.5.1.4.1.1.7": "secondary_captures"}
    return [
        _save(dataset, out_dir, kinds.get(str(dataset.SOPClassUID), "structured_report"))
        for dataset in build_failure_notice(reason, [header], settings.report)
    ]


def summarise(
    loaded: LoadedSeries,
    result: PerfusionResult,
    outputs: Iterable[WrittenOutput],
    quality: Sequence[QualityFinding] = (),
) -> dict[str, Any]:
    """The results as plain JSON-able values (what ``results.json`` and ``status`` show);
    ``quality`` lists the acquisition quality findings, one dict per check."""
    acq = loaded.acquisition
    header = loaded.header
    tissue = result.tissue_mask
    volumes = result.volumes
    maps = {}
    for name, values in result.maps.items():
        inside = values[tissue]
        maps[name] = {
            "median_in_tissue": _round(np.median(inside)) if inside.size else None,
            "p95_in_tissue": _round(np.percentile(inside, 95)) if inside.size else None,
        }
    return {
        "study_instance_uid": str(header.StudyInstanceUID),
        "series_instance_uid": str(header.SeriesInstanceUID),
        "accession_number": str(header.get("AccessionNumber", "") or ""),
        "algorithm": result.algorithm,
        "acquisition": {
            "time_points": int(acq.hu.shape[0]),
            "slices": int(acq.hu.shape[1]),
            "matrix": [int(acq.hu.shape[2]), int(acq.hu.shape[3])],
            "duration_s": _round(float(acq.times_s[-1] - acq.times_s[0])),
            "pixel_spacing_mm": [_round(v) for v in acq.pixel_spacing_mm],
            "slice_spacing_mm": _round(acq.slice_spacing_mm),
            "notes": list(loaded.layout.notes),
            "facts": {k: v for k, v in vars(acq.facts).items()},
        },
        "volumes": {
            "core_ml": _round(volumes.core_ml),
            "tmax6_ml": _round(volumes.tmax6_ml),
            "tmax10_ml": _round(volumes.tmax10_ml),
            "mismatch_ml": _round(volumes.mismatch_ml),
            "mismatch_ratio": _round(volumes.mismatch_ratio),
            "hypoperfusion_intensity_ratio": _round(volumes.hypoperfusion_intensity_ratio),
            "target_mismatch": bool(volumes.target_mismatch),
        },
        "normal_cbf_ml_100g_min": _round(result.normal_cbf),
        "maps": maps,
        "aif": _curve(result.aif),
        "vof": _curve(result.vof) if result.vof is not None else None,
        "parameters": dict(result.parameters),
        "warnings": list(result.warnings),
        "quality": [finding.to_dict() for finding in quality],
        "outputs": [
            {
                "kind": o.output_kind,
                "sop_instance_uid": o.sop_instance_uid,
                "series_description": o.series_description,
                "file": o.path.name,
            }
            for o in outputs
        ],
    }


def group_files_by_series(inputs: Iterable[Path]) -> tuple[dict[str, list[Path]], list[str]]:
    """DICOM files below the inputs, grouped by Series Instance UID; plus what was skipped."""
    groups: dict[str, list[Path]] = defaultdict(list)
    skipped: list[str] = []
    for path in _files(inputs):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
            groups[str(ds.SeriesInstanceUID)].append(path)
        except (InvalidDicomError, AttributeError, OSError, ValueError) as exc:
            skipped.append(f"{path}: not a DICOM image ({exc.__class__.__name__})")
    return dict(groups), skipped


def _files(inputs: Iterable[Path]) -> Iterable[Path]:
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            yield from sorted(p for p in item.rglob("*") if p.is_file())
        elif item.is_file():
            yield item
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")


def _save(dataset: pydicom.Dataset, out_dir: Path, kind: str) -> WrittenOutput:
    path = out_dir / f"{kind}-{dataset.SeriesNumber}-{dataset.SOPInstanceUID}.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return WrittenOutput(
        str(dataset.SOPInstanceUID), kind, path, str(dataset.get("SeriesDescription", ""))
    )


def _curve(curve) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return {
        "selection": curve.selection,
        "centre_zyx": list(curve.centre_zyx),
        "voxels": len(curve.voxels_zyx),
        "arrival_s": _round(curve.arrival_s),
        "baseline_frames": int(curve.baseline_frames),
        "peak_hu": _round(float(np.max(curve.concentration_hu))),
        "times_s": [_round(t) for t in curve.times_s],
        "concentration_hu": [_round(v) for v in curve.concentration_hu],
    }


def _round(value: float | None, digits: int = 3) -> float | None:
    if value is None or not np.isfinite(value):
        return None
    return round(float(value), digits)


@dataclass(frozen=True)
class JobContext:
    """What a worker needs to run jobs."""

    storage_root: Path
    settings: PipelineSettings
    destinations: dict[str, tuple[str, ...]]  # destination name → output kinds it receives
    lease_s: float
    max_attempts: int


def run_job(db: Database, job: Job, context: JobContext, worker_id: str) -> None:
    """Process a claimed job and enqueue its outputs to every destination; record the outcome.

    A series that cannot give maps fails for good with its reason; an unexpected error is
    retried (up to ``max_attempts``); the lease is renewed while the job runs.
    """
    root = context.storage_root
    paths = [root / p for p in instance_paths(db, job.series_instance_uid)]
    relative_out = Path("results") / job.series_instance_uid / f"job-{job.id}"
    keeper = _LeaseKeeper(
        lambda: heartbeat(db, job.id, worker_id, context.lease_s),
        interval_s=max(1.0, context.lease_s / 3),
    )
    try:
        with keeper:
            processed = process_series(
                paths,
                root / relative_out,
                context.settings,
                other_slabs=len(other_perfusion_series(db, job.series_instance_uid)),
                aif_zyx=_zyx(job.aif_zyx),
                vof_zyx=_zyx(job.vof_zyx),
            )
    except AcquisitionUnusableError as exc:
        log.warning("job %d (series %s) cannot give maps: %s", job.id, job.series_instance_uid, exc)
        notice = write_failure_notice(paths, root / relative_out, str(exc), context.settings)
        _enqueue(db, job.id, relative_out, notice, context.destinations)
        fail_job(
            db,
            job.id,
            str(exc),
            retry=False,
            max_attempts=context.max_attempts,
            result_dir=relative_out.as_posix(),
        )
        return
    except Exception as exc:
        log.exception("job %d failed unexpectedly; it will be retried", job.id)
        fail_job(
            db,
            job.id,
            f"{exc.__class__.__name__}: {exc}",
            retry=True,
            max_attempts=context.max_attempts,
        )
        return
    _enqueue(db, job.id, relative_out, processed.outputs, context.destinations)
    finish_job(db, job.id, result_dir=relative_out.as_posix(), summary=processed.summary)


def notify_failed_jobs(db: Database, context: JobContext) -> int:
    """Send a failure notice for every job that failed for good without one (unexpected errors
    on every attempt, or workers that died on it), so that no study fails silently.

    Returns how many notices were written.
    """
    written = 0
    for job in failed_jobs_without_notice(db):
        relative_out = Path("results") / job.series_instance_uid / f"job-{job.id}"
        if not claim_notice(db, job.id, relative_out.as_posix()):
            continue  # another worker took it
        reason = (
            f"The node could not process this series after {job.attempts} attempt(s) "
            f"({job.error or 'no error recorded'}). The node's administrator has the details; "
            "use the source images and the scanner's own tools meanwhile."
        )
        root = context.storage_root
        paths = [root / p for p in instance_paths(db, job.series_instance_uid)]
        notice = write_failure_notice(paths, root / relative_out, reason, context.settings)
        _enqueue(db, job.id, relative_out, notice, context.destinations)
        log.error("job %d failed for good; failure notice sent: %s", job.id, job.error)
        written += 1
    return written


def _enqueue(
    db: Database,
    job_id: int,
    relative_out: Path,
    outputs: Sequence[WrittenOutput],
    destinations: dict[str, tuple[str, ...]],
) -> None:
    """One export per output for every destination that receives its kind."""
    enqueue_exports(
        db,
        job_id,
        [
            (name, OutputObject(o.sop_instance_uid, o.output_kind, f"{relative_out}/{o.path.name}"))
            for name, kinds in destinations.items()
            for o in outputs
            if o.output_kind in kinds
        ],
    )


def _zyx(text: str) -> tuple[int, int, int] | None:
    if not text:
        return None
    z, y, x = (int(v) for v in text.split(","))
    return z, y, x


class _LeaseKeeper:
    """Renews a job's lease from a background thread while the job runs."""

    def __init__(self, renew, interval_s: float) -> None:  # type: ignore[no-untyped-def]
        self._renew = renew
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="lease")

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                if not self._renew():
                    log.warning("the job's lease was lost to another worker")
                    return
            except Exception:
                log.exception("renewing the job's lease failed")

    def __enter__(self) -> _LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
