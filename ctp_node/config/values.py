"""Checks of single values: AE titles, hosts, names, engine parameter values."""

from __future__ import annotations

import ipaddress
import re
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

PerfusionValue = bool | int | float | str


#: Every section's pydantic settings: unknown keys refused; strict, so that YAML's `yes`, `on`
#: and `1.5` are not silently turned into integers or strings; frozen.
SECTION_CONFIG = ConfigDict(extra="forbid", strict=True, frozen=True)


class Section(BaseModel):
    """A section of the configuration: unknown keys refused, values of their own type (no
    coercion), frozen once loaded."""

    model_config = SECTION_CONFIG


PemFile = Annotated[Path, Field(strict=False)]
"""A PEM file; relative to the configuration file's folder once loaded by :func:`load_config`.
Whether it exists and holds what it should is checked by ``config check`` and at the start of
``serve`` (:func:`ctp_node.wiring.tls_problems`), not here: a certificate that expires must
not stop ``status`` or a worker from reading the configuration."""


def _raise_at(loc: tuple[str | int, ...], template: str, ctx: dict[str, Any], value: Any) -> None:
    raise ValidationError.from_exception_data(
        "config",
        [InitErrorDetails(type=PydanticCustomError("config", template, ctx), loc=loc, input=value)],
    )


# --------------------------------------------------------------------------------------------
# Value types shared by several sections

_AE_TITLE_MAX_CHARS = 16
_HOSTNAME_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_DESTINATION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PARAMETER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DATABASE_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+]*://")
_SQLITE_URL = re.compile(r"^(sqlite(?:\+[A-Za-z0-9_]+)?):///(.*)$", re.DOTALL)
_LO_MAX_CHARS = 64
_ENVIRONMENT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_ae_title(value: str) -> str:
    # DICOM PS3.5 AE VR: default repertoire without backslash or control characters, at most
    # 16 characters; leading and trailing spaces are not significant, all spaces is not a title.
    title = value.strip(" ")
    if not title:
        raise PydanticCustomError("ae_title", "an AE title must not be empty or all spaces")
    if len(title) > _AE_TITLE_MAX_CHARS:
        raise PydanticCustomError(
            "ae_title",
            "an AE title has at most 16 characters; '{title}' has {length}",
            {"title": title, "length": len(title)},
        )
    bad = sorted({c for c in title if not (" " <= c <= "~") or c == "\\"})
    if bad:
        raise PydanticCustomError(
            "ae_title",
            "an AE title may hold only printable ASCII characters without backslash; "
            "'{title}' contains {bad}",
            {"title": title, "bad": ", ".join(repr(c) for c in bad)},
        )
    return title


def _check_ip_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise PydanticCustomError(
            "ip_address",
            "must be an IP address such as 0.0.0.0 (every interface) or 127.0.0.1; got '{value}'",
            {"value": value},
        ) from None
    return value


def _check_host(value: str) -> str:
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    name = value.removesuffix(".")
    if 0 < len(name) <= 253 and all(_HOSTNAME_LABEL.match(label) for label in name.split(".")):
        return value
    raise PydanticCustomError(
        "host", "must be an IP address or a host name; got '{value}'", {"value": value}
    )


def _check_environment_name(value: str) -> str:
    if not _ENVIRONMENT_NAME.match(value):
        raise PydanticCustomError(
            "environment_name",
            "must be an environment variable's name (letters, digits and underscores, not "
            "starting with a digit), not its value; got {length} characters",
            {"length": len(value)},
        )
    return value


def url_password(url: str) -> str | None:
    """The password a database URL contains (``scheme://user:password@host/…``), or None."""
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def hide_url_password(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: safe to show."""
    head, at, tail = url.rpartition("@")
    scheme, slashes, user_info = head.rpartition("//")
    user, colon, _ = user_info.partition(":")
    return f"{scheme}{slashes}{user}:***@{tail}" if at and colon else url


def _check_caller_host(value: str) -> str:
    # An IP address, a network in CIDR notation, or a host name (resolved by the listener).
    if "/" not in value:
        return _check_host(value)
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise PydanticCustomError(
                "caller_host",
                "must be an IP address, a network such as 10.1.2.0/24 or fd00::/64, or a "
                "host name; got '{value}' ({why})",
                {"value": value, "why": str(exc)},
            ) from None
        raise PydanticCustomError(
            "caller_host",
            "'{value}' has host bits set after the /{prefix}; the network is {network}",
            {"value": value, "prefix": network.prefixlen, "network": str(network)},
        ) from None
    return value


def _check_long_string(value: str) -> str:
    # DICOM LO VR: at most 64 characters, no backslash.
    if not value.strip():
        raise PydanticCustomError("long_string", "must not be empty; use null to leave it out")
    if len(value) > _LO_MAX_CHARS or "\\" in value:
        raise PydanticCustomError(
            "long_string", "must have at most 64 characters and no backslash (DICOM LO)"
        )
    return value


def _check_parameter_name(value: str) -> str:
    if not _PARAMETER_NAME.match(value):
        raise PydanticCustomError(
            "parameter_name",
            "'{value}' is not a parameter name (letters, digits and underscores)",
            {"value": value},
        )
    return value


def _check_perfusion_value(value: Any) -> PerfusionValue:
    if isinstance(value, bool | int | float | str):
        return value
    raise PydanticCustomError(
        "perfusion_value",
        "must be a number, true/false or text; got {kind}",
        {"kind": type(value).__name__ if value is not None else "null"},
    )


#: The longest retention period accepted, days (100 years): longer is "for ever", i.e. null.
_RETENTION_DAYS_MAX = 36_500


def _check_retention_days(value: float) -> float:
    # 0 is ambiguous ("delete at once" or "never"); null says "never" without doubt.
    if not 0 < value <= _RETENTION_DAYS_MAX:
        raise PydanticCustomError(
            "retention_days",
            "must be more than 0 and at most {most} days (fractions allowed); use null to keep "
            "for ever (0 is refused: it could mean 'at once' as well as 'never'); got {value}",
            {"most": _RETENTION_DAYS_MAX, "value": value},
        )
    return value


def _check_retention_bytes(value: int) -> int:
    if value <= 0:
        raise PydanticCustomError(
            "retention_bytes",
            "must be more than 0 bytes; use null for no size limit (0 is refused: it could "
            "mean 'keep nothing' as well as 'no limit'); got {value}",
            {"value": value},
        )
    return value


AETitle = Annotated[str, AfterValidator(_check_ae_title)]
Host = Annotated[str, AfterValidator(_check_host)]
CallerHost = Annotated[str, AfterValidator(_check_caller_host)]
PositiveSeconds = Annotated[float, Field(gt=0)]
PortNumber = Annotated[int, Field(ge=1, le=65535)]


def _check_web_url(value: str) -> str:
    parsed = urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise PydanticCustomError(
            "web_url",
            "must be an http:// or https:// URL with a host, e.g. https://chat.example/hook; "
            "got '{value}'",
            {"value": hide_url_password(value)},
        )
    return value


def _check_mail_address(value: str) -> str:
    # "team@hospital.example" or "Stroke team <team@hospital.example>"
    address = parseaddr(value)[1]
    local, at, domain = address.rpartition("@")
    if not (at and local and domain) or any(c.isspace() for c in address):
        raise PydanticCustomError(
            "mail_address",
            "must be an e-mail address such as stroke-team@hospital.example; got '{value}'",
            {"value": value},
        )
    return value


WebURL = Annotated[str, AfterValidator(_check_web_url)]
MailAddress = Annotated[str, AfterValidator(_check_mail_address)]


def check_short_name(name: str) -> str:
    """A destination's or a channel's name: 1 to 64 letters, digits, '-', '_' or '.'."""
    if not _DESTINATION_NAME.match(name):
        raise PydanticCustomError(
            "destination_name",
            "a destination name is 1 to 64 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit; got '{name}'",
            {"name": name},
        )
    return name


def check_backoff(first_s: float, cap_s: float) -> None:
    if cap_s < first_s:
        _raise_at(
            ("retry_backoff_max_s",),
            "must be at least retry_backoff_s ({first} s); got {cap} s",
            {"first": first_s, "cap": cap_s},
            cap_s,
        )
