"""Draining the notifications outbox: each due message built from its job's record and
delivered to its channel; a failure is retried with the exports' backoff until it gives up."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ctp_node.send.notify_channels import (
    Channel,
    DeliveryError,
    WebhookChannel,
    post_webhook,
    send_email,
)
from ctp_node.send.notify_message import MessageSettings, email_text, notification_message
from ctp_node.send.sender import RetryPolicy
from ctp_node.store import Database
from ctp_node.store.notifications import (
    DueNotification,
    due_notifications,
    mark_notification_failed,
    mark_notification_sent,
)

log = logging.getLogger(__name__)


def send_due_notifications(
    db: Database,
    channels: Mapping[str, Channel],
    policy: RetryPolicy,
    settings: MessageSettings,
) -> int:
    """Deliver every due notification once; returns how many were delivered."""
    delivered = 0
    for due in due_notifications(db):
        channel = channels.get(due.channel)
        if channel is None:
            _failed(db, due, f"channel {due.channel!r} is no longer configured", policy, final=True)
            continue
        try:
            deliver(channel, notification_message(due, settings))
        except DeliveryError as exc:
            _failed(db, due, str(exc), policy)
            continue
        mark_notification_sent(db, due.id)
        delivered += 1
        log.info(
            "notification %d (%s of job %d) sent to %s", due.id, due.event, due.job_id, due.channel
        )
    return delivered


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
