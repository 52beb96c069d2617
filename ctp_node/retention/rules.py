"""When a series' received instances and a job's results may be deleted.

Pure functions of the records (:mod:`ctp_node.store.retention`), the policy and a clock.
A verdict says whether a thing is due, and if not whether it is merely young or *held*:
undelivered or unprocessed, and so never deleted whatever the clock says.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from ctp_node.config import Config
from ctp_node.store.models import JobState, SeriesState
from ctp_node.store.retention import JobRecord, SeriesRecord

#: Job states after which nothing more happens to a job (a failed one once its notice is written).
_SETTLED_JOB_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.SUPERSEDED})


@dataclass(frozen=True)
class RetentionPolicy:
    """How long files are kept; see :class:`ctp_node.config.RetentionConfig`.

    Attributes
    ----------
    spool_days, results_days, quarantine_days : days, fractions allowed; None keeps for ever.
    quarantine_max_bytes : bytes the quarantine may hold; None for no limit.
    destinations_configured : whether results go anywhere; without destinations a result
        counts as delivered once it is written.
    """

    spool_days: float | None = 7.0
    results_days: float | None = 30.0
    quarantine_days: float | None = 30.0
    quarantine_max_bytes: int | None = 1_000_000_000
    destinations_configured: bool = True


def retention_policy(config: Config) -> RetentionPolicy:
    retention = config.storage.retention
    return RetentionPolicy(
        spool_days=retention.spool_days,
        results_days=retention.results_days,
        quarantine_days=retention.quarantine_days,
        quarantine_max_bytes=retention.quarantine_max_bytes,
        destinations_configured=bool(config.destinations),
    )


@dataclass(frozen=True)
class Verdict:
    """Whether something may be deleted now, and why (UIDs, job numbers and times only).

    ``held`` is True when it is undelivered or unprocessed: kept whatever the clock says.
    """

    due: bool
    reason: str
    held: bool = False


def held(reason: str) -> Verdict:
    return Verdict(False, reason, held=True)


def age_verdict(since: dt.datetime, days: float | None, now: dt.datetime, what: str) -> Verdict:
    """Due once ``days`` have passed since ``since``; ``what`` names the event (``delivered``)."""
    if days is None:
        return Verdict(False, f"{what} {_iso(since)}; kept for ever (null)")
    due_at = since + dt.timedelta(days=days)
    if due_at <= now:
        return Verdict(True, f"{what} {_iso(since)}")
    return Verdict(False, f"{what} {_iso(since)}; due {_iso(due_at)}")


def spool_verdict(series: SeriesRecord, policy: RetentionPolicy, now: dt.datetime) -> Verdict:
    """Whether a series' received instances may go.

    Only once its results were delivered to every destination: the series is decided, no job
    of it is queued, running or failed without its notice, no export of any of its jobs is
    pending or failed, and its latest reported job (the newest done, or failed with a notice
    written) had an export sent — or, with no destination configured, was written.
    ``spool_days`` are counted from that job's last export sent (or from its end, without
    destinations); for a series that is not perfusion, from the decision.
    """
    if series.state == SeriesState.RECEIVING:
        return held("still receiving")
    if series.state == SeriesState.ERROR:
        return held("could not be examined (error); kept for a person to look at")
    unsettled = _first_unsettled(series.jobs)
    if unsettled:
        return held(unsettled)
    if series.state == SeriesState.IGNORED:
        decided = series.decided_at or series.last_received_at
        return age_verdict(decided, policy.spool_days, now, "not perfusion, decided")
    if series.state != SeriesState.PERFUSION:
        return held(f"in state {series.state!r}, unknown to this release")
    reported = [job for job in series.jobs if job.state in (JobState.DONE, JobState.FAILED)]
    if not reported:
        return held("no result reported yet")
    latest = max(reported, key=lambda job: job.id)
    exports = latest.exports
    if exports.sent:
        assert exports.last_sent_at is not None
        return age_verdict(
            exports.last_sent_at, policy.spool_days, now, f"job {latest.id} delivered"
        )
    if policy.destinations_configured or exports.cancelled:
        return _reached_no_destination(latest)
    return age_verdict(_ended(latest), policy.spool_days, now, f"job {latest.id} written")


def results_verdict(
    job: JobRecord | None, newest_file_at: dt.datetime | None, policy: RetentionPolicy, now
) -> Verdict:
    """Whether a job's results folder may go: ``results_days`` after the last of its exports
    was sent (or cancelled: a superseded version), after the job ended, and after the last
    file in it was written, whichever is latest; never while an export is pending or failed."""
    if job is None:
        return held("no job of that number on record")
    unsettled = _first_unsettled([job])
    if unsettled:
        return held(unsettled)
    exports = job.exports
    reported = job.state in (JobState.DONE, JobState.FAILED)
    if reported and policy.destinations_configured and not (exports.sent or exports.cancelled):
        return _reached_no_destination(job)
    times = [_ended(job), exports.last_sent_at, newest_file_at]
    since = max(t for t in times if t is not None)
    return age_verdict(since, policy.results_days, now, f"job {job.id} settled")


def _first_unsettled(jobs: Iterable[JobRecord]) -> str:
    """Why some job is not finished with ("" when all are): queued or running, failed
    without its notice, an export pending, failed or in an unknown state."""
    for job in jobs:
        if job.state not in _SETTLED_JOB_STATES:
            return f"job {job.id} is {job.state}"
        if job.state == JobState.FAILED and not job.result_dir:
            return f"job {job.id} failed and its failure notice is not written yet"
        exports = job.exports
        for count, state in (
            (exports.pending, "pending"),
            (exports.failed, "failed"),
            (exports.other, "in an unknown state"),
        ):
            if count:
                return f"job {job.id} has {count} export(s) {state}"
    return ""


def _reached_no_destination(job: JobRecord) -> Verdict:
    # Nothing of it reached PACS (a failure notice with no object for the destinations, a
    # result written before destinations were configured): the node holds the only copy.
    outcome = "failure notice" if job.state == JobState.FAILED else "result"
    return held(f"job {job.id}'s {outcome} reached no destination")


def _ended(job: JobRecord) -> dt.datetime:
    return job.finished_at or job.created_at


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="seconds") + "Z"
