"""The ``http:`` section: the HTTP face inside ``serve`` (health, metrics, the web console), who
may use its console (``http.auth``) and HTTPS (``http.tls``)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, model_validator
from pydantic_core import PydanticCustomError

from ctp_node.config.values import (
    SECTION_CONFIG,
    PemFile,
    PortNumber,
    _check_ip_address,
    _raise_at,
)

#: The header a reverse proxy names its signed-in user in (Apache, nginx, oauth2-proxy's default).
DEFAULT_PROXY_HEADER = "X-Forwarded-User"


def _check_network(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise PydanticCustomError(
            "network",
            "must be an IP address (10.1.2.3) or a network in CIDR notation (10.1.2.0/24); "
            "got '{value}'",
            {"value": value},
        ) from None
    return value


class HttpAuthConfig(BaseModel):
    """Who may use the web console (``/health/*`` and ``/metrics`` stay open: a load balancer
    and Prometheus do not sign in, and they show counts and states, no patient data).

    Attributes
    ----------
    mode : ``none``: no sign-in; allowed only while ``http.bind`` is a loopback address (this
        machine's users only). ``users``: a person signs in at ``/login`` with a name and
        password from ``users_file``. ``proxy``: a reverse proxy that signed the person in
        (e.g. single sign-on) names them in ``proxy_header``; the header is believed only
        from ``trusted_proxies``.
    users_file : the file of console users, ``name: <argon2 hash>`` per line, relative to the
        configuration file's folder; written by ``ctp-node user add|remove`` (owner-only, as
        it holds password hashes). Read again when it changes: no restart is needed. A missing
        file means no users (nobody can sign in yet). Required with ``users``.
    proxy_header : the request header naming the signed-in user, with ``proxy``.
    trusted_proxies : IP addresses or CIDR networks of the reverse proxies whose
        ``proxy_header`` is believed; a request with the header from any other address is
        refused (403): anyone could type the header. Default: this machine (a proxy on it).
    session_minutes : minutes without a request after which a signed-in user is signed out
        (``users``), so that a console left open on a shared workstation does not stay usable.
    """

    model_config = SECTION_CONFIG

    mode: Literal["none", "users", "proxy"] = "none"
    users_file: Path | None = Field(None, strict=False)
    proxy_header: str = Field(DEFAULT_PROXY_HEADER, min_length=1, pattern=r"^[A-Za-z0-9-]+$")
    trusted_proxies: list[Annotated[str, AfterValidator(_check_network)]] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"]
    )
    session_minutes: float = Field(30.0, gt=0, strict=False)

    @model_validator(mode="after")
    def _users_file_with_users(self) -> HttpAuthConfig:
        if self.mode == "users" and self.users_file is None:
            _raise_at(
                ("users_file",),
                "needed with mode: users: the file `ctp-node user add NAME` writes the console's "
                "users to, e.g. console-users.yaml",
                {},
                None,
            )
        return self


class HttpTLSConfig(BaseModel):
    """HTTPS for the HTTP face (the console's passwords and session cookie must not cross the
    network in clear).

    Attributes
    ----------
    certificate : PEM file with the face's certificate (its chain may follow it).
    private_key : PEM file with its unencrypted private key; readable by the node's user only.
    """

    model_config = SECTION_CONFIG

    certificate: PemFile
    private_key: PemFile


class HttpConfig(BaseModel):
    """The node's HTTP face inside ``serve``: health checks, Prometheus metrics and the web
    console (:mod:`ctp_node.http`).

    Attributes
    ----------
    enabled : serve ``/health/live``, ``/health/ready``, ``/metrics`` and the console. Off by
        default: a node that is not asked for an HTTP face opens no second port.
    bind : IP address the HTTP face listens on. ``127.0.0.1`` (the default) keeps it to this
        machine. Any other address needs ``auth.mode`` ``users`` or ``proxy``: the console can
        reprocess and resend. ``0.0.0.0`` in a container, where the host publishes the port
        only where it chooses.
    port : TCP port it listens on; not ``node.port`` (nor ``node.tls.port``) when both bind
        the same address. ``serve`` refuses to start, with a sentence, when it is in use.
    auth : who may use the console (:class:`HttpAuthConfig`).
    tls : serve HTTPS with this certificate (:class:`HttpTLSConfig`); ``null``: plain HTTP.
    """

    model_config = SECTION_CONFIG

    enabled: bool = False
    bind: Annotated[str, AfterValidator(_check_ip_address)] = "127.0.0.1"
    port: PortNumber = 8080
    auth: HttpAuthConfig = HttpAuthConfig()
    tls: HttpTLSConfig | None = None

    @model_validator(mode="after")
    def _sign_in_beyond_loopback(self) -> HttpConfig:
        if self.enabled and self.auth.mode == "none" and not is_loopback(self.bind):
            _raise_at(
                ("auth", "mode"),
                "is none, but http.bind {bind} is not a loopback address: anyone who can reach "
                "the port could reprocess and resend; set http.auth.mode to users (with "
                "http.auth.users_file) or proxy, or bind 127.0.0.1",
                {"bind": self.bind},
                "none",
            )
        return self


def is_loopback(address: str) -> bool:
    """``address`` (an IP address) is this machine's loopback (127.0.0.0/8, ::1)."""
    return ipaddress.ip_address(address).is_loopback
