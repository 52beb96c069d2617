"""The completion scheduler's step: decide every series that has been quiet long enough."""

from __future__ import annotations

import logging
from pathlib import Path

from ctp_node.assemble.headers import UnreadableImageError, read_series
from ctp_node.assemble.layout import NotPerfusionError, layout_acquisition
from ctp_node.assemble.loader import check_modality
from ctp_node.store import Database
from ctp_node.store.ingest import decide_series, instance_paths, stable_series

log = logging.getLogger(__name__)


def decide_stable_series(
    db: Database, storage_root: Path, stable_after_s: float, min_time_points: int
) -> list[int]:
    """Examine each stable series from its headers: queue a job for a dynamic perfusion
    acquisition, record anything else as ignored with its reason. Returns new job ids."""
    jobs = []
    for series_uid in stable_series(db, stable_after_s):
        paths = instance_paths(db, series_uid)
        try:
            refs, header = read_series([storage_root / p for p in paths])
            check_modality(header)
            layout = layout_acquisition(refs, min_time_points)
        except (NotPerfusionError, UnreadableImageError) as exc:
            decide_series(
                db, series_uid, perfusion=False, reason=str(exc), expected_instance_count=len(paths)
            )
            log.info("series %s ignored: %s", series_uid, exc)
            continue
        t, z, rows, columns = layout.shape
        reason = f"dynamic perfusion acquisition: {t} time points x {z} slices of {rows}x{columns}"
        job_id = decide_series(
            db, series_uid, perfusion=True, reason=reason, expected_instance_count=len(paths)
        )
        if job_id is not None:
            log.info("series %s queued as job %d (%s)", series_uid, job_id, reason)
            jobs.append(job_id)
    return jobs
