"""The notifications outbox on both databases: queued with the result or the failure in one
transaction, retried with backoff, given up and listed; an export that gives up queues one."""

from __future__ import annotations

import datetime as dt

from ctp_node.store.models import NotificationEvent, NotificationState, utcnow
from ctp_node.store.notifications import (
    PendingNotification,
    due_notifications,
    list_notifications,
    mark_notification_failed,
    mark_notification_sent,
    retry_failed_notifications,
)
from ctp_node.store.outbox import OutputObject, due_exports, enqueue_exports, mark_attempt_failed
from ctp_node.store.queue import claim_job, finish_job, list_jobs
from tests.store.test_store import _queue_job, _version

RESULT = NotificationEvent.RESULT


def finish_with_notifications(db, job_id, summary, notifications, worker_id="w") -> bool:
    """Record a claimed job's result (version 1, no exports) with its notifications."""
    return finish_job(
        db,
        job_id,
        worker_id=worker_id,
        result_dir="results/1",
        summary=summary,
        version=_version(1, "k1"),
        exports=[],
        notifications=notifications,
    )


def test_a_result_queues_its_notifications_with_the_jobs_facts(db):
    job_id = _queue_job(db)
    claim_job(db, "w", 60, 3)
    told = [PendingNotification("webhook:a", RESULT), PendingNotification("email", RESULT)]
    assert finish_with_notifications(db, job_id, {"volumes": {"core_ml": 12.5}}, told)
    due = due_notifications(db)
    assert [(n.channel, n.event) for n in due] == [("webhook:a", "result"), ("email", "result")]
    first = due[0]
    assert (first.job_id, first.version, first.accession_number) == (job_id, 1, "ACC1")
    assert (first.study_instance_uid, first.series_instance_uid) == ("1.2.3", "1.2.3.1")
    assert '"core_ml": 12.5' in first.summary_json


def test_a_result_that_is_not_recorded_queues_no_notification(db):
    job_id = _queue_job(db)
    claim_job(db, "w", 60, 3)
    told = [PendingNotification("email", RESULT)]
    # the claim was lost (another worker's): nothing is recorded
    recorded = finish_with_notifications(db, job_id, {}, told, worker_id="another worker")
    assert not recorded and due_notifications(db) == [] and list_jobs(db)[0].state == "running"


def test_backoff_then_give_up_then_listed(db):
    job_id = _queue_job(db)
    claim_job(db, "w", 60, 3)
    finish_with_notifications(db, job_id, {}, [PendingNotification("email", RESULT)])
    (n,) = due_notifications(db)
    policy = {"max_attempts": 2, "backoff_s": 30, "backoff_max_s": 60}
    assert not mark_notification_failed(db, n.id, "connection refused", **policy)
    assert due_notifications(db) == []  # not due before its backoff
    later = utcnow() + dt.timedelta(seconds=31)
    assert [d.attempts for d in due_notifications(db, now=later)] == [1]
    assert mark_notification_failed(db, n.id, "connection refused", **policy)
    (failed,) = list_notifications(db, NotificationState.FAILED)
    assert (failed.attempts, failed.last_error) == (2, "connection refused")
    assert due_notifications(db, now=later + dt.timedelta(hours=1)) == []
    assert retry_failed_notifications(db) == 1  # at start-up: new attempts, due now
    assert [(d.id, d.attempts) for d in due_notifications(db)] == [(n.id, 0)]


def test_sent_is_not_due_again(db):
    job_id = _queue_job(db)
    from ctp_node.store.notifications import enqueue_notifications

    enqueue_notifications(db, job_id, [PendingNotification("email", NotificationEvent.FAILURE)])
    (n,) = due_notifications(db)
    mark_notification_sent(db, n.id)
    assert due_notifications(db) == []
    (sent,) = list_notifications(db, NotificationState.SENT)
    assert sent.attempts == 1 and sent.sent_at is not None


def test_exports_that_give_up_queue_one_notification_per_destination(db):
    job_id = _queue_job(db)
    outputs = [("pacs", OutputObject(f"9.{n}", "parametric_maps", f"r/{n}.dcm")) for n in (1, 2)]
    enqueue_exports(db, job_id, outputs)
    ids = [e.id for e in due_exports(db)]
    for export_id in ids:  # the sender's per-object path: one call per refused object
        mark_attempt_failed(
            db,
            [export_id],
            "refused: 0xA700",
            max_attempts=1,
            backoff_s=1,
            backoff_max_s=1,
            notify=["webhook:a", "email"],
        )
    due = due_notifications(db)
    assert sorted((n.channel, n.event, n.destination, n.detail) for n in due) == [
        ("email", "export_failed", "pacs", "refused: 0xA700"),
        ("webhook:a", "export_failed", "pacs", "refused: 0xA700"),
    ]
