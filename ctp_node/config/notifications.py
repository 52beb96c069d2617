"""The ``notifications:`` section: webhooks and e-mail told of results and failures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ctp_node.config.values import (
    Host,
    MailAddress,
    PortNumber,
    PositiveSeconds,
    Section,
    WebURL,
    _check_environment_name,
    _raise_at,
    check_backoff,
    check_short_name,
)

NotifyWhen = Literal["result", "notable_result", "failure"]
"""When a channel is told: ``result`` every result; ``notable_result`` a result with a target
mismatch or a core of at least ``notifications.large_core_ml``; ``failure`` a job that failed
(its failure notice is sent) and an output that gave up on a destination."""


class _NotifyChannel(Section):
    # `when`, not `on`: YAML 1.1 (PyYAML) reads the key `on` as the boolean true.
    when: list[NotifyWhen] = ["result", "failure"]

    @model_validator(mode="before")
    @classmethod
    def _on_is_when(cls, data: Any) -> Any:
        if isinstance(data, dict) and True in data:
            _raise_at(
                ("on",),
                "the key is `when` (YAML reads the key `on` as the value true)",
                {},
                data[True],
            )
        return data

    @field_validator("when")
    @classmethod
    def _something_to_tell(cls, when: list[NotifyWhen]) -> list[NotifyWhen]:
        if not when:
            raise PydanticCustomError(
                "on_empty", "an empty list tells nothing; remove the channel instead"
            )
        if len(set(when)) != len(when):
            raise PydanticCustomError("when_repeated", "lists an event more than once")
        if "result" in when and "notable_result" in when:
            raise PydanticCustomError(
                "on_both",
                "result already includes notable_result; give one of the two",
            )
        return when


def _one_secret(model: BaseModel, file_key: str, env_key: str) -> None:
    """A secret is given in a file or a variable, not both."""
    if getattr(model, file_key) is not None and getattr(model, env_key) is not None:
        _raise_at(
            (env_key,),
            f"give the secret in one place: {file_key} or {env_key}, not both",
            {},
            getattr(model, env_key),
        )


class WebhookConfig(_NotifyChannel):
    """A URL that receives a JSON summary of each event by HTTP POST (a chat's incoming
    webhook, a ticketing system, a pager gateway).

    Attributes
    ----------
    name : short unique name, in logs, the notifications outbox and ``ctp-node status``.
    url : http:// or https:// URL POSTed to; https is verified against the system's CAs.
    headers : extra HTTP headers sent with each POST (e.g. an API key header the receiver
        wants). They are part of the YAML: put a secret token in ``bearer_token_file`` or
        ``bearer_token_env`` instead.
    bearer_token_file : file holding a token sent as ``Authorization: Bearer <token>``
        (its final newline is not part of it), relative to the configuration file's folder;
        keeps the secret out of the YAML.
    bearer_token_env : name of an environment variable holding that token; at most one of
        the two.
    timeout_s : seconds to wait for the receiver to connect and answer one POST; a receiver
        that takes longer counts as a failed attempt, retried later.
    when : which events (:data:`NotifyWhen`).
    """

    name: str
    url: WebURL
    headers: dict[str, str] = {}
    bearer_token_file: Path | None = Field(None, strict=False)
    bearer_token_env: Annotated[str, AfterValidator(_check_environment_name)] | None = None
    timeout_s: PositiveSeconds = 10.0

    @field_validator("name")
    @classmethod
    def _short_name(cls, name: str) -> str:
        return check_short_name(name)

    @model_validator(mode="after")
    def _one_token(self) -> WebhookConfig:
        _one_secret(self, "bearer_token_file", "bearer_token_env")
        return self


class EmailConfig(_NotifyChannel):
    """An SMTP server that sends a short e-mail for each event.

    Attributes
    ----------
    host, port : the SMTP server; 587 is submission with STARTTLS, 465 implicit TLS, 25
        plain relay.
    security : ``starttls`` (upgrade the connection; refuse a server that cannot),
        ``ssl`` (TLS from the first byte, port 465) or ``none`` (a relay on a trusted
        network only: the message and any password cross it in clear). The server's
        certificate is verified against the system's CAs.
    user : user name to sign in with; ``None``: the server takes mail without signing in.
    password_file, password_env : where that user's password is (a file relative to the
        configuration file's folder, or an environment variable), never in the YAML; one of
        them when ``user`` is given.
    from : the sender's address (``From:``).
    to : the recipients' addresses, at least one.
    timeout_s : seconds to wait for the server at each step; longer counts as a failed
        attempt, retried later.
    when : which events (:data:`NotifyWhen`).
    """

    model_config = ConfigDict(populate_by_name=True)

    host: Host
    port: PortNumber = 587
    security: Literal["starttls", "ssl", "none"] = "starttls"
    user: str | None = None
    password_file: Path | None = Field(None, strict=False)
    password_env: Annotated[str, AfterValidator(_check_environment_name)] | None = None
    from_address: MailAddress = Field(alias="from")
    to: list[MailAddress]
    timeout_s: PositiveSeconds = 30.0

    @model_validator(mode="after")
    def _password_with_user(self) -> EmailConfig:
        _one_secret(self, "password_file", "password_env")
        given = self.password_file is not None or self.password_env is not None
        if self.user is None and given:
            _raise_at(("user",), "a password is given without a user to sign in as", {}, None)
        if self.user is not None and not given:
            _raise_at(
                ("password_file",),
                "user {user} needs a password: give password_file or password_env",
                {"user": self.user},
                None,
            )
        if not self.to:
            _raise_at(("to",), "give at least one recipient", {}, self.to)
        return self


class NotificationsConfig(Section):
    """Who is told when a result or a failure is recorded: webhooks and/or e-mail
    (:mod:`ctp_node.send.notify`). A message names the study by its UIDs and accession
    number, never the patient.

    Attributes
    ----------
    webhooks : URLs POSTed a JSON summary (:class:`WebhookConfig`); none by default.
    email : an SMTP server and recipients (:class:`EmailConfig`); ``None``: no e-mail.
    large_core_ml : a core (rCBF < 30 %) of at least this volume, in ml, makes a result
        ``notable_result`` even without a target mismatch; 70 ml is the core limit of the
        late-window thrombectomy trials (DEFUSE 3).
    include_patient_identity : also put the patient's name and ID (read from a received
        image's header) into every message. Off by default: a chat channel or a mailbox is
        rarely a place for patient data, and the accession number finds the study in the
        PACS. Turn it on only where the receivers are cleared to hold patient data.
    console_url : the address people open the node's console at, put into every message;
        ``None``: ``http://<http.bind>:<http.port>/`` when ``http.enabled`` (the machine's
        name for 0.0.0.0), else no link.
    max_attempts : attempts at delivering one message to one channel before giving up
        (``ctp-node status`` then lists it); about 12 h with the default delays.
    retry_backoff_s : seconds before the first retry; doubles at each further retry.
    retry_backoff_max_s : longest delay in seconds between two retries.
    """

    webhooks: list[WebhookConfig] = []
    email: EmailConfig | None = None
    large_core_ml: float = Field(70.0, gt=0, strict=False)
    include_patient_identity: bool = False
    console_url: WebURL | None = None
    max_attempts: int = Field(80, ge=1)
    retry_backoff_s: PositiveSeconds = 30.0
    retry_backoff_max_s: PositiveSeconds = 600.0

    @model_validator(mode="after")
    def _checks(self) -> NotificationsConfig:
        check_backoff(self.retry_backoff_s, self.retry_backoff_max_s)
        names = [w.name for w in self.webhooks]
        for index, name in enumerate(names):
            if name in names[:index]:
                _raise_at(
                    ("webhooks", index, "name"),
                    "name '{name}' is already used by webhooks.{first}; names must be unique",
                    {"name": name, "first": names.index(name)},
                    name,
                )
        return self
