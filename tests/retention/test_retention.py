"""Retention on a real database (SQLite and PostgreSQL) and real files, with a clock we set:
what is delivered goes once its time has come; nothing undelivered or unprocessed, ever."""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import os
import time
from pathlib import Path

import pytest
from sqlalchemy import select, update

from ctp_node.retention import RetentionPolicy, apply_retention, plan_retention
from ctp_node.retention.apply import LOCK_FILE, TRASH_FOLDER
from ctp_node.store.ingest import instance_paths, list_rejections, list_series, record_rejection
from ctp_node.store.models import OtherObject, Series, SeriesState, utcnow
from tests.retention.history import STUDY, NodeHistory, later

POLICY = RetentionPolicy()  # spool 7 d, results 30 d, quarantine 30 d or 1 GB
A, B = "1.2.3.1", "1.2.3.2"
A_LONG_TIME = 36_500  # days: whatever the clock says


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "storage"


@pytest.fixture
def node(db, root) -> NodeHistory:
    return NodeHistory(db, root)


def purge(db, root, days: float, policy: RetentionPolicy = POLICY):
    """Plan at ``days`` from now and apply; the plan and what was freed."""
    plan = plan_retention(db, root, policy, later(days))
    return plan, apply_retention(db, root, plan)


def series_row(db, uid: str) -> Series:
    return next(s for s in list_series(db) if s.series_instance_uid == uid)


# --- Received instances ---------------------------------------------------------------------


def test_delivered_series_is_purged_spool_days_after_delivery_not_before(db, root, node) -> None:
    files, _, results = node.delivered_series(A)

    plan, freed = purge(db, root, 6.9)
    assert plan.spool == () and freed["spool"].items == 0
    (kept,) = [k for k in plan.kept if k.category == "spool"]
    assert not kept.held and "due " in kept.reason
    assert all(f.exists() for f in files)

    plan, freed = purge(db, root, 7.1)
    assert (freed["spool"].items, freed["spool"].files, freed["spool"].bytes) == (1, 3, 3000)
    assert plan.totals()["spool"] == freed["spool"]
    assert not any(f.exists() for f in files)
    assert not (root / "spool" / STUDY).exists()  # empty folders go too
    assert instance_paths(db, A) == []
    series = series_row(db, A)  # the row stays as history
    assert series.instance_count == 0 and series.purged_at == plan.now
    assert series.state == SeriesState.PERFUSION
    assert results.is_dir()  # results have their own period (30 d)
    assert not (root / TRASH_FOLDER).exists()

    plan, freed = purge(db, root, 7.2)  # nothing left to do, nothing breaks
    assert plan.spool == () and freed["spool"].items == 0


def _pending_export(node: NodeHistory) -> None:
    node.run(node.decide(A), A)


def _failed_export(node: NodeHistory) -> None:
    job = node.decide(A)
    node.run(job, A)
    node.deliver(job, "failed")


def _one_destination_failed(node: NodeHistory) -> None:
    job = node.decide(A)
    node.run(job, A, destinations=("pacs", "archive"))
    node.deliver(job, "sent", "pacs")
    node.deliver(job, "failed", "archive")


def _job_queued(node: NodeHistory) -> None:
    node.decide(A)


def _job_running(node: NodeHistory) -> None:
    node.claim(node.decide(A))


def _failed_without_notice(node: NodeHistory) -> None:
    from ctp_node.store.queue import fail_job

    job = node.decide(A)
    node.claim(job)
    fail_job(node.db, job, "worker crashed", retry=False, max_attempts=1)


def _failure_notice_reached_no_destination(node: NodeHistory) -> None:
    node.run(node.decide(A), A, outcome="failed", destinations=())


def _still_receiving(node: NodeHistory) -> None:
    pass


def _could_not_be_examined(node: NodeHistory) -> None:
    with node.db.session() as s:
        s.execute(update(Series).values(state=SeriesState.ERROR, decided_at=utcnow()))


def _newer_version_not_yet_sent(node: NodeHistory) -> None:
    first = node.decide(A)
    node.run(first, A)
    node.deliver(first)
    second = node.reprocess(A)
    node.run(second, A)


def _reprocessing_queued(node: NodeHistory) -> None:
    first = node.decide(A)
    node.run(first, A)
    node.deliver(first)
    node.reprocess(A)


@pytest.mark.parametrize(
    "history",
    [
        _pending_export,
        _failed_export,
        _one_destination_failed,
        _job_queued,
        _job_running,
        _failed_without_notice,
        _failure_notice_reached_no_destination,
        _still_receiving,
        _could_not_be_examined,
        _newer_version_not_yet_sent,
        _reprocessing_queued,
    ],
)
def test_undelivered_or_unprocessed_series_is_never_purged(db, root, node, history) -> None:
    files = node.receive(A)
    history(node)

    plan, freed = purge(db, root, A_LONG_TIME)

    assert plan.spool == () and freed["spool"].items == 0
    (kept,) = [k for k in plan.kept if k.category == "spool"]
    assert kept.held, kept
    assert all(f.exists() for f in files)
    assert len(instance_paths(db, A)) == 3 and series_row(db, A).purged_at is None


def test_series_that_is_not_perfusion_goes_spool_days_after_the_decision(db, root, node) -> None:
    files = node.receive(A, count=1)
    node.decide(A, perfusion=False)

    assert purge(db, root, 6.9)[1]["spool"].items == 0
    assert purge(db, root, 7.1)[1]["spool"].items == 1
    assert not files[0].exists() and instance_paths(db, A) == []


def test_cancelled_exports_of_a_superseded_version_do_not_hold_anything(db, root, node) -> None:
    files = node.receive(A)
    first = node.decide(A)
    first_results = node.run(first, A)
    node.deliver(first, "cancelled")  # replaced by the next version before it was sent
    second = node.reprocess(A)
    second_results = node.run(second, A)
    node.deliver(second)

    _, freed = purge(db, root, 30.1)

    assert freed["spool"].items == 1 and not any(f.exists() for f in files)
    assert freed["results"].items == 2
    assert not first_results.exists() and not second_results.exists()
    assert not (root / "results" / A).exists()


def test_a_failure_notice_that_reached_pacs_counts_as_delivered(db, root, node) -> None:
    files = node.receive(A)
    job = node.decide(A)
    node.run(job, A, outcome="failed")
    node.deliver(job)

    assert purge(db, root, 7.1)[1]["spool"].items == 1
    assert not any(f.exists() for f in files)


def test_without_destinations_a_written_result_counts_as_delivered(db, root, node) -> None:
    policy = dataclasses.replace(POLICY, destinations_configured=False)
    files = node.receive(A)
    job = node.decide(A)
    results = node.run(job, A, destinations=())

    assert purge(db, root, 6.9, policy)[1]["spool"].items == 0
    assert purge(db, root, 7.1, policy)[1]["spool"].items == 1
    assert not any(f.exists() for f in files)
    assert purge(db, root, 30.1, policy)[1]["results"].items == 1 and not results.exists()
    # With destinations configured, the same result reached no one: it is the only copy.
    node.receive(B)
    node.run(node.decide(B), B, destinations=())
    plan, _ = purge(db, root, A_LONG_TIME)
    assert plan.spool == () and plan.results == ()


def test_null_keeps_for_ever(db, root, node) -> None:
    files, _, results = node.delivered_series(A)
    policy = RetentionPolicy(spool_days=None, results_days=None)

    plan, freed = purge(db, root, A_LONG_TIME, policy)

    assert sum(f.items for f in freed.values()) == 0
    assert all(f.exists() for f in files) and results.is_dir()
    assert {k.reason.endswith("kept for ever (null)") for k in plan.kept} == {True}


# --- Results --------------------------------------------------------------------------------


def test_results_go_results_days_after_every_export_is_sent(db, root, node) -> None:
    _, _, results = node.delivered_series(A)
    assert purge(db, root, 29.9)[1]["results"].items == 0 and results.is_dir()

    _, freed = purge(db, root, 30.1)

    assert (freed["results"].items, freed["results"].files) == (1, 2)
    assert freed["results"].bytes == 2000
    assert not (root / "results" / A).exists()


def test_results_stay_while_an_export_is_pending_or_failed(db, root, node) -> None:
    node.receive(A)
    pending = node.run(node.decide(A), A)
    node.receive(B)
    failed_job = node.decide(B)
    failed = node.run(failed_job, B)
    node.deliver(failed_job, "failed")

    plan, freed = purge(db, root, A_LONG_TIME)

    assert freed["results"].items == 0 and pending.is_dir() and failed.is_dir()
    held = {k.subject: k.reason for k in plan.kept if k.category == "results"}
    assert "2 export(s) pending" in held[f"results/{A}/job-1"]
    assert "2 export(s) failed" in held[f"results/{B}/job-2"]


def test_folder_of_a_superseded_job_goes_and_of_a_job_still_running_stays(db, root, node) -> None:
    from ctp_node.store.models import Job, JobState

    node.receive(A)
    superseded = node.decide(A)
    node.claim(superseded)
    node.write(f"results/{A}/job-{superseded}/partial.dcm")
    with db.session() as s:
        s.execute(update(Job).values(state=JobState.SUPERSEDED, finished_at=utcnow()))
    running = node.reprocess(A)
    node.claim(running)
    node.write(f"results/{A}/job-{running}/partial.dcm")

    plan, _ = purge(db, root, 30.1)

    assert [r.job_id for r in plan.results] == [superseded]
    assert not (root / f"results/{A}/job-{superseded}").exists()
    assert (root / f"results/{A}/job-{running}/partial.dcm").exists()


# --- Quarantine -----------------------------------------------------------------------------


def _quarantined(node: NodeHistory, name: str, size: int, age_days: float) -> str:
    relative = f"quarantine/20240101/{name}.dcm"
    path = node.write(relative, b"\0" * size)
    moment = (dt.datetime.now(dt.UTC) - dt.timedelta(days=age_days)).timestamp()
    os.utime(path, (moment, moment))
    record_rejection(
        node.db, calling_ae_title="CT1", status=0xA900, reason="test", quarantine_path=relative
    )
    return relative


def test_quarantine_by_age_then_oldest_first_down_to_the_size_limit(db, root, node) -> None:
    old = _quarantined(node, "old", 100, age_days=31)
    older_young = _quarantined(node, "b", 300, age_days=10)
    young = [_quarantined(node, "c", 300, age_days=5), _quarantined(node, "d", 300, age_days=1)]
    record_rejection(
        db,
        calling_ae_title="CT1",
        status=0xA900,
        reason="t",
        quarantine_path="quarantine/x/gone.dcm",
    )
    policy = dataclasses.replace(POLICY, quarantine_max_bytes=700)

    plan, freed = purge(db, root, 0, policy)

    assert [(q.path, q.reason.split()[0]) for q in plan.quarantine] == [
        (old, "quarantined"),
        (older_young, "over"),
    ]
    assert (freed["quarantine"].items, freed["quarantine"].bytes) == (2, 400)
    assert not (root / old).exists() and not (root / older_young).exists()
    assert all((root / path).exists() for path in young)
    # The rejections stay as history; only the paths of files that are gone are cleared.
    recorded = [r.quarantine_path for r in list_rejections(db)]
    assert recorded == ["", "", *young, ""]


def test_quarantine_size_limit_applies_to_young_files(db, root, node) -> None:
    files = [_quarantined(node, f"refused{n}", 1_000_000, age_days=0) for n in range(5)]
    policy = dataclasses.replace(POLICY, quarantine_max_bytes=2_500_000)

    _, freed = purge(db, root, 0, policy)

    assert freed["quarantine"].items == 3
    assert [(root / f).exists() for f in files] == [False, False, False, True, True]


# --- Kept non-CT objects --------------------------------------------------------------------


def _other_object(node: NodeHistory, study: str, n: int) -> Path:
    relative = f"other/{study}/9.9/9.9.{n}.dcm"
    path = node.write(relative)
    with node.db.session() as s:
        s.add(
            OtherObject(
                received_at=utcnow(),
                calling_ae_title="CT1",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
                sop_instance_uid=f"9.9.{n}",
                series_instance_uid="9.9",
                study_instance_uid=study,
                modality="SR",
                reason="not CT",
                path=relative,
                size_bytes=node.size,
            )
        )
    return path


def test_kept_other_objects_go_with_the_last_series_of_their_study(db, root, node) -> None:
    dose_report = _other_object(node, STUDY, 1)
    node.delivered_series(A)
    node.receive(B)  # a second series of the study, still receiving

    _, freed = purge(db, root, 7.1)
    assert freed["spool"].items == 1 and freed["other"].items == 0 and dose_report.exists()

    node.decide(B, perfusion=False)
    _, freed = purge(db, root, 7.2)

    assert freed["spool"].items == 1 and freed["other"].items == 1
    assert not dose_report.exists() and not (root / "other" / STUDY).exists()
    with db.session() as s:
        assert s.scalars(select(OtherObject.path)).all() == [""]  # the record stays


def test_other_objects_of_a_study_without_ct_go_after_spool_days(db, root, node) -> None:
    alone = _other_object(node, "7.7.7", 1)

    assert purge(db, root, 6.9)[1]["other"].items == 0 and alone.exists()
    assert purge(db, root, 7.1)[1]["other"].items == 1 and not alone.exists()


# --- Races and crashes ----------------------------------------------------------------------


def test_series_sent_again_while_being_purged_keeps_every_file(db, root, node) -> None:
    files, _, _ = node.delivered_series(A)
    plan = plan_retention(db, root, POLICY, later(7.1))
    node.receive(A, count=1, first=3)  # one more image arrives; the series is receiving

    freed = apply_retention(db, root, plan)

    assert freed["spool"].items == 0
    assert all(f.exists() for f in files)
    assert len(instance_paths(db, A)) == 4 and series_row(db, A).purged_at is None
    assert not any((root / TRASH_FOLDER).glob("*/**/*.dcm"))


def test_series_sent_again_after_its_files_were_moved_aside_gets_them_back(
    db, root, node, monkeypatch
) -> None:
    """The receiver records an instance after the purge moved the files aside and before it
    changes the records: the records' re-check fails and every file returns."""
    from ctp_node.retention import apply

    files, _, _ = node.delivered_series(A)
    plan = plan_retention(db, root, POLICY, later(7.1))
    forget = apply.forget_series_instances

    def receive_meanwhile(*args, **kwargs):
        assert not any(f.exists() for f in files)  # moved aside
        node.receive(A, count=1, first=3)
        return forget(*args, **kwargs)

    monkeypatch.setattr(apply, "forget_series_instances", receive_meanwhile)
    freed = apply.apply_retention(db, root, plan)

    assert freed["spool"].items == 0
    assert all(f.exists() for f in files) and len(instance_paths(db, A)) == 4
    assert not (root / TRASH_FOLDER).exists()


def test_file_written_again_but_not_yet_recorded_is_not_deleted(db, root, node) -> None:
    """The receiver renames a file into the spool, then records it: a purge in between takes
    the records, never the new bytes."""
    files, _, _ = node.delivered_series(A)
    plan = plan_retention(db, root, POLICY, later(7.1))
    time.sleep(0.5)  # the purge tells new from old by more than half the time since
    files[0].write_bytes(b"sent again")  # newer than the series' last record

    apply_retention(db, root, plan)

    assert files[0].read_bytes() == b"sent again"
    assert not files[1].exists() and not files[2].exists()


def test_interrupted_purge_is_harmless(db, root, node, monkeypatch) -> None:
    files, _, _ = node.delivered_series(A)

    def crash(*args, **kwargs):
        raise RuntimeError("power cut")

    monkeypatch.setattr("ctp_node.retention.apply.forget_series_instances", crash)
    with pytest.raises(RuntimeError):
        purge(db, root, 7.1)
    assert all(f.exists() for f in files) and len(instance_paths(db, A)) == 3
    monkeypatch.undo()

    # A run killed after its records changed, before it deleted what it had moved aside:
    # a file still on record goes back to its place, one off record is deleted.
    trash = root / TRASH_FOLDER / "run"
    on_record = trash / files[0].relative_to(root)
    on_record.parent.mkdir(parents=True)
    os.replace(files[0], on_record)
    off_record = trash / "spool" / STUDY / "9.9" / "9.9.1.dcm"
    off_record.parent.mkdir(parents=True)
    off_record.write_bytes(b"purged")

    _, freed = purge(db, root, 7.1)

    assert freed["spool"].files == 3  # the file put back is purged with its series
    assert not any(f.exists() for f in files) and instance_paths(db, A) == []
    assert not (root / TRASH_FOLDER).exists()


def test_one_run_at_a_time(db, root, node) -> None:
    files, _, _ = node.delivered_series(A)
    with open(root / LOCK_FILE, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another process's run
        _, freed = purge(db, root, 7.1)
    assert freed["spool"].items == 0 and all(f.exists() for f in files)
    assert purge(db, root, 7.1)[1]["spool"].items == 1
