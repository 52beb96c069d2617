"""What the HTTP face reads, on SQLite and PostgreSQL: counts by state and outcome, the
queues due now, done jobs' durations and stage timings, jobs whose worker is gone."""

from __future__ import annotations

import datetime as dt

from ctp_node.store.audit import SeriesCounts, record_association
from ctp_node.store.counts import (
    done_job_ids,
    done_job_times,
    node_counts,
    ping,
    stale_running_jobs,
)
from ctp_node.store.ingest import record_rejection
from ctp_node.store.models import utcnow
from ctp_node.store.outbox import OutputObject
from ctp_node.store.queue import claim_job, finish_job
from tests.store.test_audit import _received
from tests.store.test_store import _queue_job, _version


def test_counts_by_state_and_outcome(db) -> None:
    ping(db)
    assert node_counts(db).received_instances == {"stored": 0, "duplicate": 0, "refused": 0}
    ct = SeriesCounts("1.2.3", "1.2.3.4", "ACC1", "CT", instances=10, stored=8, duplicate=1)
    sr = SeriesCounts("1.2.3", "1.2.3.5", "ACC1", "SR", instances=1, refused=1)
    record_association(db, _received(utcnow(), "released", ct, sr))
    record_association(db, _received(utcnow(), "aborted", ct))
    record_rejection(db, calling_ae_title="CT1", status=0xA700, reason="disk full")
    record_rejection(db, calling_ae_title="CT1", status=0xA700, reason="disk full")
    record_rejection(db, calling_ae_title="X", status=0, reason="called AE", kind="association")

    done = _queue_job(db, "1.2.3.1")
    _queue_job(db, "1.2.3.2")  # stays queued
    claim_job(db, "w", 60, 3)
    summary = {"timing_s": {"load": 1.5, "compute": 7.0, "total": 9.0}}
    outputs = [("pacs", OutputObject(uid, "parametric_maps", f"r/{uid}.dcm")) for uid in "12"]
    assert finish_job(
        db,
        done,
        worker_id="w",
        result_dir="results/1",
        summary=summary,
        version=_version(1, "k1"),
        exports=outputs,
    )

    counts = node_counts(db)
    assert counts.received_instances == {"stored": 16, "duplicate": 2, "refused": 1}
    assert counts.rejections == {("c-store", 0xA700): 2, ("association", 0): 1}
    assert counts.series == {"perfusion": 2}
    assert counts.jobs == {"done": 1, "queued": 1}
    assert counts.exports == {("pacs", "pending"): 2}
    assert (counts.jobs_due, counts.exports_due) == (1, 2)
    assert done_job_ids(db) == {done}
    [(job_id, times)] = done_job_times(db, {done, done + 1}).items()  # done + 1: queued
    assert job_id == done and times.duration_s is not None and 0 <= times.duration_s < 60
    assert times.stages_s == {"load": 1.5, "compute": 7.0, "total": 9.0}


def test_a_running_job_whose_lease_ran_out_long_ago_is_stale(db) -> None:
    _queue_job(db)
    claim_job(db, "gone", lease_s=10, max_attempts=3)
    assert stale_running_jobs(db, older_than_s=10) == 0
    later = utcnow() + dt.timedelta(seconds=25)  # the lease expired 15 s before
    assert stale_running_jobs(db, older_than_s=10, now=later) == 1
    assert stale_running_jobs(db, older_than_s=20, now=later) == 0
