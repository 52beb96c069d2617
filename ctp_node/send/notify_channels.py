"""Delivering one message: an HTTP POST to a webhook (httpx) or an e-mail through an SMTP
server (smtplib). Either succeeds or raises :class:`DeliveryError` with a sentence; the
caller retries."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import urlsplit

import httpx

from ctp_node.config import Config, notification_secrets


class DeliveryError(Exception):
    """A message was not delivered; the text says why (never a secret)."""


@dataclass(frozen=True)
class WebhookChannel:
    """Where and how to POST (``notifications.webhooks[]``); the token is never shown."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    token: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0


@dataclass(frozen=True)
class EmailChannel:
    """The SMTP server and the recipients (``notifications.email``)."""

    host: str
    port: int
    from_address: str
    to: tuple[str, ...]
    security: str = "starttls"  # "starttls", "ssl" or "none"
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 30.0


Channel = WebhookChannel | EmailChannel


def configured_channels(config: Config) -> dict[str, Channel]:
    """The channels of ``notifications:`` by name (``webhook:<name>``, ``email``), with their
    secrets read (``ConfigError`` when one cannot be)."""
    notifications = config.notifications
    secrets = notification_secrets(notifications)
    channels: dict[str, Channel] = {
        f"webhook:{w.name}": WebhookChannel(
            w.url, dict(w.headers), secrets.get(f"webhook:{w.name}"), w.timeout_s
        )
        for w in notifications.webhooks
    }
    email = notifications.email
    if email is not None:
        channels["email"] = EmailChannel(
            email.host,
            email.port,
            email.from_address,
            tuple(email.to),
            email.security,
            email.user,
            secrets.get("email"),
            email.timeout_s,
        )
    return channels


def post_webhook(hook: WebhookChannel, message: dict[str, Any]) -> None:
    """POST ``message`` as JSON; any 2xx answer is delivery (a redirect is not followed)."""
    headers = dict(hook.headers)
    if hook.token is not None:
        headers["Authorization"] = f"Bearer {hook.token}"
    where = _origin(hook.url)  # a webhook's path is often its secret (chat services)
    try:
        response = httpx.post(hook.url, json=message, headers=headers, timeout=hook.timeout_s)
    except httpx.HTTPError as exc:
        why = str(exc).replace(hook.url, where) or "no answer"
        raise DeliveryError(f"{where}: {type(exc).__name__}: {why}") from None
    if not response.is_success:
        raise DeliveryError(
            f"{where} answered HTTP {response.status_code} {response.reason_phrase}"
        )


def _origin(url: str) -> str:
    """``scheme://host:port`` of a URL: what logs and errors show of it."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def send_email(mail: EmailChannel, subject: str, body: str) -> list[str]:
    """Send a plain-text e-mail; returns the recipients the server refused while it took the
    others (retrying would send the others a copy again; when it refuses every recipient,
    that is a :class:`DeliveryError`)."""
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = mail.from_address
    message["To"] = ", ".join(mail.to)
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=mail.from_address.rpartition("@")[2].strip(">"))
    message.set_content(body)
    context = ssl.create_default_context()
    where = f"SMTP server {mail.host}:{mail.port}"
    try:
        if mail.security == "ssl":
            smtp = smtplib.SMTP_SSL(mail.host, mail.port, timeout=mail.timeout_s, context=context)
        else:
            smtp = smtplib.SMTP(mail.host, mail.port, timeout=mail.timeout_s)
        with smtp:
            if mail.security == "starttls":
                smtp.starttls(context=context)
            if mail.user is not None:
                smtp.login(mail.user, mail.password or "")
            refused = smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"{where}: {type(exc).__name__}: {exc}") from None
    return sorted(refused)
