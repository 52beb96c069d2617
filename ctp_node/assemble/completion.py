"""The completion scheduler's step: decide every series that is complete.

A series is complete when it has been quiet for ``ingest.series_stable_after_s`` **or**, sooner,
when what has arrived is what its headers announce (:func:`announced_complete`). Each complete
series is examined from its headers alone: a dynamic perfusion acquisition gets a job, any other
series is recorded as ignored with the reason, and a series that cannot be examined is recorded
as an error with the reason — one series' trouble never stops the others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ctp_node.assemble.layout import POSITION_TOLERANCE_MM, cluster_positions
from ctp_node.assemble.loader import examine_series
from ctp_node.store import Database
from ctp_node.store.ingest import (
    AnnouncedSize,
    announced_sizes,
    decide_series,
    instance_paths,
    record_series_error,
    stable_series,
)

log = logging.getLogger(__name__)


#: Seconds without a new image before a series whose NumberOfTemporalPositions × slices have
#: arrived counts as complete (see :func:`announced_complete`): longer than a sender's pause
#: between two images of one send (milliseconds), much shorter than the quiet time.
ANNOUNCED_SETTLE_S = 2.0


@dataclass(frozen=True)
class CompletionSettings:
    """When a series counts as complete.

    Attributes
    ----------
    stable_after_s : quiet time in seconds after the last instance (``ingest.series_stable_
        after_s``): the rule for series that do not announce their size.
    min_time_points : fewest time points of a dynamic perfusion acquisition.
    """

    stable_after_s: float
    min_time_points: int


def announced_complete(size: AnnouncedSize) -> bool:
    """Whether a series holds every image its headers announce.

    - ImagesInAcquisition (0020,1002), the same in every instance: the images received (frames
      counted) equal it;
    - NumberOfTemporalPositions (0020,0105), the same in every instance: every slice position
      has exactly that many single-frame images, or (multi-frame instances of equal size, one
      per time point) that many instances have arrived; and nothing has arrived for
      :data:`ANNOUNCED_SETTLE_S`. The header does not say how many slice positions there are,
      so a sender that goes slice by slice has every position seen so far complete after each
      slice: the short settle waits until it has stopped sending.

    A scanner that announces neither waits for the quiet time.
    """
    if size.images_in_acquisition and size.images_in_acquisition > 1:
        if size.images == size.images_in_acquisition:
            return True
    temporal = size.temporal_positions
    if not temporal or temporal < 2:
        return False
    if size.frames_per_instance and size.frames_per_instance > 1:
        return size.instances == temporal
    if size.frames_per_instance != 1 or len(size.slice_positions_mm) != size.instances:
        return False
    if size.quiet_s < ANNOUNCED_SETTLE_S:
        return False
    cluster_of = cluster_positions(list(size.slice_positions_mm), POSITION_TOLERANCE_MM)
    per_position: dict[int, int] = {}
    for position in size.slice_positions_mm:
        per_position[cluster_of[position]] = per_position.get(cluster_of[position], 0) + 1
    return set(per_position.values()) == {temporal}


def decide_complete_series(
    db: Database, storage_root: Path, settings: CompletionSettings
) -> list[int]:
    """Examine each complete series: queue a job for a dynamic perfusion acquisition, record
    anything else as ignored (or as an error) with its reason. Returns the new job ids."""
    quiet = stable_series(db, settings.stable_after_s)
    early = [
        uid
        for uid, size in announced_sizes(db, settings.stable_after_s).items()
        if announced_complete(size)
    ]
    jobs = []
    for series_uid in [*quiet, *early]:
        try:
            job_id = _decide(db, storage_root, series_uid, settings, quiet=series_uid in quiet)
        except Exception as exc:  # confined to this series: the others go on
            log.error("series %s could not be examined: %s", series_uid, exc)
            count = len(instance_paths(db, series_uid))
            record_series_error(
                db,
                series_uid,
                f"could not be examined: {exc.__class__.__name__}: {exc}",
                expected_instance_count=count,
            )
            continue
        if job_id is not None:
            jobs.append(job_id)
    return jobs


def _decide(
    db: Database, storage_root: Path, series_uid: str, settings: CompletionSettings, *, quiet: bool
) -> int | None:
    paths = instance_paths(db, series_uid)
    count = len(paths)
    how = "quiet" if quiet else "all announced images arrived"
    examination = examine_series([storage_root / p for p in paths], settings.min_time_points)
    if not quiet and not (examination.perfusion and examination.laid_out):
        return None  # what the headers announced may be wrong: wait for the quiet time
    if examination.verdict == "unreadable":
        if record_series_error(db, series_uid, examination.reason, expected_instance_count=count):
            log.warning("series %s cannot be examined: %s", series_uid, examination.reason)
        return None
    if not examination.laid_out:
        return decide_series(
            db, series_uid, perfusion=True, reason=examination.reason, expected_instance_count=count
        )
    if not examination.perfusion:
        reason = examination.reason
        decide_series(db, series_uid, perfusion=False, reason=reason, expected_instance_count=count)
        log.info("series %s ignored: %s", series_uid, examination.reason)
        return None
    job_id = decide_series(
        db,
        series_uid,
        perfusion=True,
        reason=f"{examination.reason} ({how})",
        expected_instance_count=count,
    )
    if job_id is not None:
        log.info("series %s queued as job %d (%s; %s)", series_uid, job_id, examination.reason, how)
    return job_id
