"""The database on a real SQLite file: ingest decisions, job leases, the outbox."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading

from sqlalchemy import select

from ctp_node.store.ingest import (
    ReceivedInstance,
    decide_series,
    find_instance,
    forget_instances,
    instance_paths,
    list_series,
    record_instance,
    series_purge_states,
    stable_series,
)
from ctp_node.store.models import ExportState, Instance, Job, JobState, SeriesState, utcnow
from ctp_node.store.others import list_other_series, record_other_object
from ctp_node.store.outbox import (
    OutputObject,
    due_exports,
    enqueue_exports,
    list_exports,
    mark_attempt_failed,
    mark_sent,
    retry_failed_exports,
)
from ctp_node.store.queue import (
    VersionRecord,
    claim_job,
    claim_notice,
    fail_job,
    failed_jobs_without_notice,
    finish_job,
    heartbeat,
    list_jobs,
    notice_failed,
    record_notice,
    release_worker_jobs,
    retry_later,
)


def _instance(n: int, series: str = "1.2.3.1") -> ReceivedInstance:
    return ReceivedInstance(
        sop_instance_uid=f"{series}.{n}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        series_instance_uid=series,
        study_instance_uid="1.2.3",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        modality="CT",
        accession_number="ACC1",
        series_number=4,
        path=f"spool/{series}/{n}.dcm",
        size_bytes=100,
        calling_ae_title="CT1",
        sha256="a" * 64,
    )


def test_series_becomes_stable_only_after_quiet_time(db):
    for n in range(3):
        record_instance(db, _instance(n))
    assert stable_series(db, stable_after_s=10) == []
    later = utcnow() + dt.timedelta(seconds=11)
    assert stable_series(db, stable_after_s=10, now=later) == ["1.2.3.1"]
    assert len(instance_paths(db, "1.2.3.1")) == 3


def test_resent_instance_is_not_counted_twice(db):
    assert record_instance(db, _instance(1)) is None
    (first,) = list_series(db)
    earlier = record_instance(db, dataclasses.replace(_instance(1), sha256="b" * 64, path="x"))
    assert (earlier.path, earlier.sha256) == ("spool/1.2.3.1/1.dcm", "a" * 64)
    (series,) = list_series(db)
    assert series.instance_count == 1
    assert series.last_received_at == first.last_received_at  # nothing changed
    assert find_instance(db, "1.2.3.1.1") == earlier
    assert find_instance(db, "1.2.3.1.2") is None


def test_concurrent_arrivals_of_one_uid_in_several_series_record_one(db):
    """The insert decides; the others change nothing, not even by adding an empty series."""
    arrivals = [
        dataclasses.replace(
            _instance(1, series=f"1.2.3.{n}"), sop_instance_uid="1.2.3.9.9", sha256=f"{n:064d}"
        )
        for n in range(1, 9)
    ]
    outcomes = {}
    threads = [
        threading.Thread(target=lambda a=a: outcomes.update({a.sha256: record_instance(db, a)}))
        for a in arrivals
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    (winner,) = [sha for sha, earlier in outcomes.items() if earlier is None]
    assert len(outcomes) == 8
    assert {earlier.sha256 for earlier in outcomes.values() if earlier} == {winner}
    (series,) = list_series(db)
    assert series.instance_count == 1 and find_instance(db, "1.2.3.9.9").sha256 == winner


def test_announced_size_is_recorded(db):
    record_instance(
        db,
        dataclasses.replace(
            _instance(1), temporal_positions=30, images_in_acquisition=480, slice_position_mm=-12.5
        ),
    )
    with db.session() as s:
        instance = s.scalars(select(Instance)).one()
        assert (instance.temporal_positions, instance.images_in_acquisition) == (30, 480)
        assert (instance.frames, instance.slice_position_mm) == (1, -12.5)


def test_records_of_missing_files_are_forgotten(db):
    for n in range(3):
        record_instance(db, _instance(n))
    assert series_purge_states(db) == {"1.2.3.1": False}
    assert forget_instances(db, ["1.2.3.1.0", "1.2.3.1.2", "9.9.9"]) == 2
    (series,) = list_series(db)
    assert series.instance_count == 1 and instance_paths(db, "1.2.3.1") == ["spool/1.2.3.1/1.dcm"]


def test_other_objects_are_listed_by_series_and_class(db):
    for n, (series, sop_class, path) in enumerate(
        [
            ("1.2.3.7", "1.2.840.10008.5.1.4.1.1.7", ""),
            ("1.2.3.7", "1.2.840.10008.5.1.4.1.1.7", "other/a.dcm"),
            ("1.2.3.8", "1.2.840.10008.5.1.4.1.1.4", ""),
        ]
    ):
        record_other_object(
            db,
            calling_ae_title="CT1",
            sop_class_uid=sop_class,
            sop_instance_uid=f"{series}.{n}",
            series_instance_uid=series,
            study_instance_uid="1.2.3",
            modality="OT" if series.endswith("7") else "MR",
            reason="not CT",
            size_bytes=1000,
            path=path,
        )
    listed = [(o.series_instance_uid, o.modality, o.objects, o.kept) for o in list_other_series(db)]
    assert listed == [("1.2.3.7", "OT", 2, 1), ("1.2.3.8", "MR", 1, 0)]


def test_decision_is_dropped_when_instances_arrived_meanwhile(db):
    for n in range(3):
        record_instance(db, _instance(n))
    assert (
        decide_series(db, "1.2.3.1", perfusion=True, reason="", expected_instance_count=2) is None
    )
    job_id = decide_series(db, "1.2.3.1", perfusion=True, reason="ok", expected_instance_count=3)
    assert job_id is not None
    assert list_series(db)[0].state == SeriesState.PERFUSION


def test_late_instance_rearms_series_and_supersedes_queued_job(db):
    for n in range(3):
        record_instance(db, _instance(n))
    decide_series(db, "1.2.3.1", perfusion=True, reason="ok", expected_instance_count=3)
    record_instance(db, _instance(3))
    assert list_series(db)[0].state == SeriesState.RECEIVING
    assert [j.state for j in list_jobs(db)] == [JobState.SUPERSEDED]


def test_ignored_series_records_reason_and_no_job(db):
    record_instance(db, _instance(0))
    decide_series(db, "1.2.3.1", perfusion=False, reason="one volume", expected_instance_count=1)
    (series,) = list_series(db)
    assert series.state == SeriesState.IGNORED and series.reason == "one volume"
    assert list_jobs(db) == []


def _queue_job(db, series="1.2.3.1") -> int:
    record_instance(db, _instance(0, series))
    return decide_series(db, series, perfusion=True, reason="", expected_instance_count=1)


def test_job_is_claimed_once_by_concurrent_workers(db):
    job_id = _queue_job(db)
    claimed = []

    def work(name):
        job = claim_job(db, name, lease_s=60, max_attempts=3)
        if job is not None:
            claimed.append((name, job.id))

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(claimed) == 1 and claimed[0][1] == job_id


def test_expired_lease_is_reclaimed_and_attempts_are_bounded(db):
    job_id = _queue_job(db)
    first = claim_job(db, "w1", lease_s=-1, max_attempts=2)  # lease already expired
    assert first.id == job_id
    second = claim_job(db, "w2", lease_s=-1, max_attempts=2)
    assert second.id == job_id and second.attempts == 2
    assert not heartbeat(db, job_id, "w1", lease_s=60)  # no longer w1's
    assert claim_job(db, "w3", lease_s=60, max_attempts=2) is None
    (job,) = list_jobs(db)
    assert job.state == JobState.FAILED and "gave up after 2 attempts" in job.error


def _version(number: int, key: str, predecessor: int | None = None) -> VersionRecord:
    return VersionRecord(f"digest-{key}", 1, number, key, predecessor, "")


def _finish(db, job_id: int, number: int, key: str, *uids: str, worker="w") -> bool:
    return finish_job(
        db,
        job_id,
        worker_id=worker,
        result_dir=f"results/{job_id}",
        summary={"core_ml": 1.5},
        version=_version(number, key),
        exports=[("pacs", OutputObject(uid, "parametric_maps", f"r/{uid}.dcm")) for uid in uids],
    )


def test_finish_and_fail(db):
    a = _queue_job(db, "1.2.3.1")
    b = _queue_job(db, "1.2.3.2")
    claim_job(db, "w", 60, 3)
    claim_job(db, "w", 60, 3)
    assert _finish(db, a, 1, "k1", "9.1")
    fail_job(db, b, "contrast never arrives", retry=False, max_attempts=3)
    states = {j.id: (j.state, j.error, j.version) for j in list_jobs(db)}
    assert states[a] == (JobState.DONE, "", 1)
    assert states[b] == (JobState.FAILED, "contrast never arrives", 0)
    assert [(e.job_id, e.state) for e in list_exports(db)] == [(a, ExportState.PENDING)]


def test_a_new_version_cancels_what_the_old_one_has_not_sent(db):
    first = _queue_job(db)
    claim_job(db, "w", 60, 3)
    assert _finish(db, first, 1, "k1", "9.1", "9.2", "9.3")
    sent, pending, failed = (e.id for e in list_exports(db))
    mark_sent(db, [sent])
    mark_attempt_failed(db, [failed], "refused", max_attempts=1, backoff_s=1, backoff_max_s=1)

    record_instance(db, _instance(1))  # a late image: the series is complete again
    second = decide_series(db, "1.2.3.1", perfusion=True, reason="", expected_instance_count=2)
    claim_job(db, "w", 60, 3)
    assert _finish(db, second, 2, "k2", "9.4")

    states = {e.id: e.state for e in list_exports(db)}
    assert states[sent] == ExportState.SENT
    assert states[pending] == states[failed] == ExportState.CANCELLED
    assert [e.sop_instance_uid for e in due_exports(db)] == ["9.4"]
    assert retry_failed_exports(db) == 0  # a cancelled export is never tried again


def test_a_new_job_supersedes_the_running_one_whose_result_is_then_dropped(db):
    first = _queue_job(db)
    claim_job(db, "w1", 60, 3)
    record_instance(db, _instance(1))
    second = decide_series(db, "1.2.3.1", perfusion=True, reason="", expected_instance_count=2)
    assert not heartbeat(db, first, "w1", 60)
    assert not _finish(db, first, 1, "k1", "9.1", worker="w1")  # nothing recorded, nothing sent
    assert list_exports(db) == []
    states = {j.id: j.state for j in list_jobs(db)}
    assert states == {first: JobState.SUPERSEDED, second: JobState.QUEUED}


def test_a_dead_workers_job_is_given_back_at_once_and_bounded(db):
    job_id = _queue_job(db)
    claim_job(db, "host:1", 600, 2)
    assert release_worker_jobs(db, "host:1", "the worker process ended", 2) == [job_id]
    again = claim_job(db, "host:2", 600, 2)  # no wait for the 600 s lease
    assert again.id == job_id and again.attempts == 2
    assert release_worker_jobs(db, "host:2", "the worker process ended", 2) == [job_id]
    (job,) = list_jobs(db)
    assert job.state == JobState.FAILED and "gave up after 2 attempts" in job.error


def test_a_transient_failure_waits_and_does_not_use_up_attempts(db):
    job_id = _queue_job(db)
    claim_job(db, "w", 60, 1)
    assert retry_later(db, job_id, "w", "OSError: No space left on device", delay_s=30)
    assert claim_job(db, "w", 60, 1) is None  # not due yet
    with db.session() as s:
        s.get(Job, job_id).next_attempt_at = utcnow() - dt.timedelta(seconds=1)
    job = claim_job(db, "w", 60, 1)  # max_attempts 1: the failed try did not count
    assert job.id == job_id and job.attempts == 1 and job.retries == 1


def test_failure_notice_is_claimed_under_a_lease_and_retried(db):
    job_id = _queue_job(db)
    claim_job(db, "w", 60, 3)
    fail_job(db, job_id, "no contrast", retry=False, max_attempts=3, notice_reason="No contrast.")
    assert [j.id for j in failed_jobs_without_notice(db)] == [job_id]
    assert claim_notice(db, job_id, "w1", lease_s=60)
    assert not claim_notice(db, job_id, "w2", lease_s=60)
    assert failed_jobs_without_notice(db) == []
    notice_failed(db, job_id, "OSError: No space left on device", delay_s=30)
    assert failed_jobs_without_notice(db) == []  # not due yet
    later = utcnow() + dt.timedelta(seconds=31)
    assert [j.id for j in failed_jobs_without_notice(db, now=later)] == [job_id]
    with db.session() as s:
        s.get(Job, job_id).next_attempt_at = None
    assert claim_notice(db, job_id, "w2", lease_s=60)
    assert record_notice(
        db,
        job_id,
        worker_id="w2",
        result_dir="results/n",
        version=_version(1, "kn"),
        exports=[("pacs", OutputObject("9.8", "secondary_captures", "r/n.dcm"))],
    )
    assert failed_jobs_without_notice(db, now=later) == []
    (job,) = list_jobs(db)
    assert job.version == 1 and job.result_dir == "results/n" and job.retries == 1


def test_export_backoff_then_give_up(db):
    job_id = _queue_job(db)
    enqueue_exports(db, job_id, [("pacs", OutputObject("9.9.1", "parametric_maps", "r/1.dcm"))])
    (export,) = due_exports(db)
    mark_attempt_failed(db, [export.id], "refused", max_attempts=3, backoff_s=30, backoff_max_s=60)
    assert due_exports(db) == []  # not due before its backoff
    assert len(due_exports(db, now=utcnow() + dt.timedelta(seconds=31))) == 1
    mark_attempt_failed(db, [export.id], "refused", max_attempts=3, backoff_s=30, backoff_max_s=60)
    mark_attempt_failed(db, [export.id], "refused", max_attempts=3, backoff_s=30, backoff_max_s=60)
    (export,) = list_exports(db)
    assert export.state == ExportState.FAILED and export.attempts == 3


def test_export_sent(db):
    job_id = _queue_job(db)
    enqueue_exports(db, job_id, [("pacs", OutputObject("9.9.1", "parametric_maps", "r/1.dcm"))])
    mark_sent(db, [e.id for e in due_exports(db)])
    assert list_exports(db)[0].state == ExportState.SENT


def test_many_workers_claim_every_job_exactly_once(db):
    job_ids = {_queue_job(db, f"1.2.3.{n}") for n in range(1, 21)}
    claimed: list[int] = []
    lock = threading.Lock()

    def work(name):
        while (job := claim_job(db, name, lease_s=60, max_attempts=3)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(claimed) == sorted(job_ids)  # all claimed, none twice


def test_concurrent_receivers_of_one_series(db):
    """Several associations deliver instances of one new series at once."""
    threads = [threading.Thread(target=record_instance, args=(db, _instance(n))) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    (series,) = list_series(db)
    assert series.instance_count == 12
    assert len(instance_paths(db, series.series_instance_uid)) == 12


def test_database_of_an_earlier_release_gains_the_new_columns(db):
    """Upgrading keeps every record: columns added since are added with their defaults."""
    from sqlalchemy import inspect, text

    from ctp_node.store.models import Job

    record_instance(db, _instance(1))
    decide_series(db, "1.2.3.1", perfusion=True, reason="r", expected_instance_count=1)
    with db.engine.begin() as connection:  # as the tables were before these columns existed
        connection.execute(text("ALTER TABLE jobs DROP COLUMN version_reason"))
        connection.execute(text("ALTER TABLE jobs DROP COLUMN version"))
        connection.execute(text("ALTER TABLE instances DROP COLUMN sha256"))
    assert "version" not in {c["name"] for c in inspect(db.engine).get_columns("jobs")}

    db.create_schema()

    (job,) = list_jobs(db)
    assert isinstance(job, Job) and job.version == 0 and job.version_reason == ""
    assert job.state == JobState.QUEUED
    assert len(instance_paths(db, "1.2.3.1")) == 1
