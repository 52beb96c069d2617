"""Where the results go, in the configuration: ``destinations:`` (C-STORE or STOW-RS, TLS)
and the outbox's retries (``send:``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from ctp_node.config.values import (
    AETitle,
    Host,
    PemFile,
    PortNumber,
    PositiveSeconds,
    Section,
    _check_environment_name,
    _raise_at,
    check_backoff,
    check_short_name,
    hide_url_password,
)

OutputKind = Literal["parametric_maps", "secondary_captures", "structured_report"]
OUTPUT_KINDS: tuple[OutputKind, ...] = get_args(OutputKind)

#: A STOW-RS URL: http or https, a host, no user or password (a token goes in its own key).
_STOW_URL = re.compile(r"^https?://[^/@\s?#]+(/[^\s?#]*)?$")


class DestinationTLSConfig(Section):
    """DICOM TLS to a destination (BCP 195 non-downgrading; see :mod:`ctp_node.tls`).

    Attributes
    ----------
    ca_certificates : PEM bundle of the CAs that may have signed the destination's
        certificate; the system's CAs are not trusted.
    certificate, private_key : PEM files of the node's client certificate and its
        unencrypted key, for a destination that asks for one; both or neither.
    verify_host_name : check that the destination's certificate names ``host`` in its
        subjectAltName (a DNS name, or an IP address when ``host`` is one). True by default,
        as for any TLS client: a certificate signed by the hospital's CA for another machine
        must not do. False only for a PACS whose certificate names no host (common in DICOM,
        where peers are addressed by IP); its CA's signature is still checked.
    """

    ca_certificates: PemFile
    certificate: PemFile | None = None
    private_key: PemFile | None = None
    verify_host_name: bool = True

    @model_validator(mode="after")
    def _certificate_with_its_key(self) -> DestinationTLSConfig:
        if (self.certificate is None) != (self.private_key is None):
            missing = "private_key" if self.private_key is None else "certificate"
            _raise_at(
                (missing,),
                "a client certificate needs both certificate and private_key; give both, or "
                "neither when the destination asks for no client certificate",
                {},
                None,
            )
        return self


DestinationKind = Literal["dimse", "dicomweb"]

#: The keys that belong to one kind of destination only.
_KIND_KEYS: dict[str, tuple[str, ...]] = {
    "dimse": ("ae_title", "host", "port", "calling_ae_title"),
    "dicomweb": ("url", "bearer_token_file", "bearer_token_env"),
}


class DestinationConfig(Section):
    """A peer (usually a PACS) that receives the results: by C-STORE (``kind: dimse``) or by
    DICOMweb STOW-RS (``kind: dicomweb``). Both go through the same outbox and retries.

    Attributes
    ----------
    name : short unique name used in logs, the outbox and ``ctp-node status``.
    kind : ``dimse`` (the default): DICOM C-STORE to ``ae_title``@``host``:``port``;
        ``dicomweb``: an HTTP POST of the files to ``url`` (PS3.18 STOW-RS).
    ae_title : the destination's (called) AE title (dimse only, required).
    host, port : where it listens (dimse only, required).
    calling_ae_title : AE title the node presents; ``None`` uses ``node.ae_title`` (dimse).
    url : the STOW-RS endpoint, ``http(s)://host[:port]/…/studies`` (dicomweb only,
        required), e.g. Orthanc's ``http://pacs:8042/dicom-web/studies``.
    bearer_token_file : file holding an OAuth bearer token sent as ``Authorization: Bearer``
        (its final newline is not part of it), relative to the configuration file's folder;
        read at each start, never logged (dicomweb only).
    bearer_token_env : name of an environment variable holding that token instead; at most
        one of the two (dicomweb only).
    send : output kinds it receives; ``None`` means every output.
    timeout_s : network timeout in seconds: one association (dimse), or the connection and
        each read of one STOW-RS request (dicomweb).
    tls : dimse: send over DICOM TLS; dicomweb: the CAs (and client certificate) for an
        ``https`` url, instead of the system's CAs (:class:`DestinationTLSConfig`). ``None``:
        plain TCP (dimse) or the system's CAs, host name verified (https).
    """

    name: str
    kind: DestinationKind = "dimse"
    ae_title: AETitle | None = None
    host: Host | None = None
    port: PortNumber | None = None
    url: str | None = None
    bearer_token_file: Path | None = Field(None, strict=False)
    bearer_token_env: Annotated[str, AfterValidator(_check_environment_name)] | None = None
    send: list[OutputKind] | None = None
    calling_ae_title: AETitle | None = None
    timeout_s: PositiveSeconds = 30.0
    tls: DestinationTLSConfig | None = None

    @model_validator(mode="after")
    def _keys_of_its_kind(self) -> DestinationConfig:
        errors = [
            InitErrorDetails(
                type=PydanticCustomError(
                    "destination_kind",
                    "belongs to a destination of kind {other}; this one is kind {kind}",
                    {"other": other, "kind": self.kind},
                ),
                loc=(key,),
                input=getattr(self, key),
            )
            for other, keys in _KIND_KEYS.items()
            if other != self.kind
            for key in keys
            if getattr(self, key) is not None
        ]
        required = ("ae_title", "host", "port") if self.kind == "dimse" else ("url",)
        errors += [
            InitErrorDetails(
                type=PydanticCustomError(
                    "destination_needs",
                    "a destination of kind {kind} needs {key}",
                    {"kind": self.kind, "key": key},
                ),
                loc=(key,),
                input=None,
            )
            for key in required
            if getattr(self, key) is None
        ]
        if errors:
            raise ValidationError.from_exception_data("destination", errors)
        if self.kind == "dicomweb":
            self._check_dicomweb()
        return self

    def _check_dicomweb(self) -> None:
        url = self.url or ""
        if not _STOW_URL.match(url):
            _raise_at(
                ("url",),
                "must be an http:// or https:// URL with a host, such as "
                "http://pacs:8042/dicom-web/studies, without user or password; got '{url}'",
                {"url": hide_url_password(url)},
                url,
            )
        if self.tls is not None and not url.startswith("https://"):
            _raise_at(("tls",), "TLS settings need an https:// url", {}, None)
        if self.bearer_token_file is not None and self.bearer_token_env is not None:
            _raise_at(
                ("bearer_token_env",),
                "give the token in one place: bearer_token_file or bearer_token_env, not both",
                {},
                self.bearer_token_env,
            )

    @field_validator("name")
    @classmethod
    def _short_name(cls, name: str) -> str:
        return check_short_name(name)

    @field_validator("send")
    @classmethod
    def _some_outputs(cls, send: list[OutputKind] | None) -> list[OutputKind] | None:
        if send is not None and not send:
            raise PydanticCustomError(
                "send_empty",
                "an empty list would send nothing; leave `send` out (or null) to send "
                "every output, or remove the destination",
            )
        if send is not None and len(set(send)) != len(send):
            raise PydanticCustomError("send_repeated", "lists an output kind more than once")
        return send

    def output_kinds(self) -> tuple[OutputKind, ...]:
        """The output kinds this destination receives, in the order of :data:`OUTPUT_KINDS`."""
        return tuple(kind for kind in OUTPUT_KINDS if self.send is None or kind in self.send)


class SendConfig(Section):
    """Retries of the outbox.

    Attributes
    ----------
    max_attempts : attempts at sending one object to one destination before giving up; the
        default, 150, keeps trying for about 24 h with the default delays (a PACS outage
        overnight loses nothing). An export that gave up is tried again when the node restarts
        and by ``ctp-node resend``, and ``ctp-node status`` exits non-zero while one exists.
    retry_backoff_s : seconds before the first retry; the delay doubles at each retry.
    retry_backoff_max_s : longest delay in seconds between two retries.
    """

    max_attempts: int = Field(150, ge=1)
    retry_backoff_s: PositiveSeconds = 30.0
    retry_backoff_max_s: PositiveSeconds = 600.0

    @model_validator(mode="after")
    def _backoff_cap_above_first_delay(self) -> SendConfig:
        check_backoff(self.retry_backoff_s, self.retry_backoff_max_s)
        return self
