"""Retries with backoff, counted the same way for exports and notifications."""

from __future__ import annotations

import datetime as dt

from ctp_node.store.models import Export, Notification


def count_failed_attempt(
    row: Export | Notification,
    error: str,
    now: dt.datetime,
    *,
    max_attempts: int,
    backoff_s: float,
    backoff_max_s: float,
    final: bool = False,
) -> bool:
    """Count a failed attempt at sending ``row`` (an export or a notification): True when it
    has run out of attempts (or ``final``); else its next attempt is due after a delay of
    ``backoff_s`` doubled at each attempt, at most ``backoff_max_s`` seconds."""
    row.attempts += 1
    row.last_error = error
    if final or row.attempts >= max_attempts:
        return True
    delay = min(backoff_max_s, backoff_s * 2 ** (row.attempts - 1))
    row.next_attempt_at = now + dt.timedelta(seconds=delay)
    return False
