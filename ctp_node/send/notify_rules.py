"""Who is told what: the notification channels of ``notifications:`` and the events each
wants (``when:``). Pure: the worker asks it which notifications a result or a failure queues,
the sender which channels an export that gave up tells."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ctp_node.config import Config
from ctp_node.store.models import NotificationEvent
from ctp_node.store.notifications import PendingNotification

#: The addresses that mean "every interface": not one a reader of a message can open.
_ANY_ADDRESS = {"0.0.0.0", "::"}


@dataclass(frozen=True)
class NotifyRules:
    """The channels and what they want.

    Attributes
    ----------
    channels : (channel, its ``when`` choices) pairs; channel is ``webhook:<name>`` or
        ``email``.
    large_core_ml : a core of at least this volume (ml) makes a result notable.
    """

    channels: tuple[tuple[str, frozenset[str]], ...] = ()
    large_core_ml: float = 70.0

    def for_result(self, summary: Mapping[str, Any]) -> list[PendingNotification]:
        """The notifications a recorded result queues: to every channel that wants every
        result, and to those that want notable ones when it is notable."""
        wanted = (
            {"result", "notable_result"} if is_notable(summary, self.large_core_ml) else {"result"}
        )
        return [
            PendingNotification(channel, NotificationEvent.RESULT)
            for channel, when in self.channels
            if when & wanted
        ]

    def for_failure(self, reason: str) -> list[PendingNotification]:
        """The notifications a job that failed for good queues, with its reason."""
        return [
            PendingNotification(channel, NotificationEvent.FAILURE, reason)
            for channel in self.failure_channels()
        ]

    def failure_channels(self) -> list[str]:
        """The channels told of failures (a job, an export that gave up)."""
        return [channel for channel, when in self.channels if "failure" in when]


def is_notable(summary: Mapping[str, Any], large_core_ml: float) -> bool:
    """A target mismatch, or a core of at least ``large_core_ml`` ml; for a profile without
    stroke volumes, a map its hemispheric comparison flagged."""
    volumes = summary.get("volumes")
    if volumes is None:
        return bool((summary.get("asymmetry") or {}).get("flagged"))
    core = volumes.get("core_ml")
    return bool(volumes.get("target_mismatch")) or (core is not None and core >= large_core_ml)


def notify_rules(config: Config) -> NotifyRules:
    """The rules of a configuration's ``notifications:``."""
    notifications = config.notifications
    channels = [(f"webhook:{w.name}", frozenset(w.when)) for w in notifications.webhooks]
    if notifications.email is not None:
        channels.append(("email", frozenset(notifications.email.when)))
    return NotifyRules(tuple(channels), notifications.large_core_ml)


def console_url(config: Config) -> str | None:
    """The console's address for messages: ``notifications.console_url``, else the HTTP
    face's when it is enabled (the machine's name in place of an any-address), else None."""
    if config.notifications.console_url is not None:
        return config.notifications.console_url
    http = config.http
    if not http.enabled:
        return None
    host = socket.getfqdn() if http.bind in _ANY_ADDRESS else http.bind
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if http.tls is not None else 'http'}://{host}:{http.port}/"
