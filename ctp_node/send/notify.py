"""Draining the notifications outbox: each due message built from its job's record and
delivered to its channel; a failure is retried with the exports' backoff until it gives up."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from ctp_node.send.notify_channels import (
    Channel,
    DeliveryError,
    WebhookChannel,
    post_webhook,
    send_email,
)
from ctp_node.send.notify_message import (
    MessageSettings,
    PatientIdentity,
    email_text,
    notification_message,
)
from ctp_node.send.sender import RetryPolicy
from ctp_node.store import Database
from ctp_node.store.ingest import instance_records
from ctp_node.store.notifications import (
    DueNotification,
    due_notifications,
    mark_notification_failed,
    mark_notification_sent,
)

log = logging.getLogger(__name__)

_IDENTITY_TAGS = ["PatientName", "PatientID"]


def send_due_notifications(
    db: Database,
    channels: Mapping[str, Channel],
    policy: RetryPolicy,
    settings: MessageSettings,
    storage_root: Path | None = None,
) -> int:
    """Deliver every due notification once; returns how many were delivered. With
    ``settings.include_patient_identity``, the patient's name and ID are read from a received
    image of the series below ``storage_root``."""
    delivered = 0
    for due in due_notifications(db):
        channel = channels.get(due.channel)
        if channel is None:
            _failed(db, due, f"channel {due.channel!r} is no longer configured", policy, final=True)
            continue
        patient = None
        if settings.include_patient_identity and storage_root is not None:
            patient = patient_identity(db, storage_root, due.series_instance_uid)
        try:
            deliver(channel, notification_message(due, settings, patient))
        except DeliveryError as exc:
            _failed(db, due, str(exc), policy)
            continue
        mark_notification_sent(db, due.id)
        delivered += 1
        log.info(
            "notification %d (%s of job %d) sent to %s", due.id, due.event, due.job_id, due.channel
        )
    return delivered


def patient_identity(db: Database, storage_root: Path, series_instance_uid: str) -> PatientIdentity:
    """The patient's name and ID from the header of the series' first received image that
    can still be read (None each when none can: purged, unreadable)."""
    for _, path in instance_records(db, series_instance_uid):
        try:
            header = pydicom.dcmread(
                storage_root / path, stop_before_pixels=True, specific_tags=_IDENTITY_TAGS
            )
        except (OSError, InvalidDicomError):
            continue
        return PatientIdentity(
            str(header.get("PatientName", "") or "") or None,
            str(header.get("PatientID", "") or "") or None,
        )
    return PatientIdentity(None, None)


def deliver(channel: Channel, message: dict) -> None:
    """One message to one channel; raises :class:`DeliveryError`."""
    if isinstance(channel, WebhookChannel):
        post_webhook(channel, message)
        return
    refused = send_email(channel, *email_text(message))
    if refused:
        log.warning("the SMTP server took the e-mail but refused %s", ", ".join(refused))


def _failed(
    db: Database, due: DueNotification, error: str, policy: RetryPolicy, *, final: bool = False
) -> None:
    gave_up = mark_notification_failed(
        db,
        due.id,
        error,
        max_attempts=policy.max_attempts,
        backoff_s=policy.backoff_s,
        backoff_max_s=policy.backoff_max_s,
        final=final,
    )
    if gave_up:
        log.error(
            "notification %d (%s of job %d) to %s gave up after %d attempt(s): %s",
            due.id,
            due.event,
            due.job_id,
            due.channel,
            due.attempts + 1,
            error,
        )
    else:
        log.warning("notification %d to %s waits for a retry: %s", due.id, due.channel, error)
