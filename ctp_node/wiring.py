"""What the configuration becomes when the node runs: the engine's parameters with the
``perfusion:`` overrides, a worker's job context, the listener's settings, the destinations as
the sender reaches them, the TLS files and their problems, the database. ``serve``, ``process``,
``demo`` and the start-up checks build their parts from these."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from ctp_node.assemble.spill import SPILL_FOLDER
from ctp_node.config import Config, ConfigError, ConfigProblem, bearer_token, database_password
from ctp_node.perfusion.parameters import PerfusionParameters
from ctp_node.pipeline import PipelineSettings
from ctp_node.qc import QualityLimits
from ctp_node.receive.scp import Caller, ListenerSettings
from ctp_node.report.settings import ReportSettings
from ctp_node.send.notify_rules import notify_rules
from ctp_node.send.scu import Peer
from ctp_node.send.stow import StowPeer
from ctp_node.store import Database
from ctp_node.store import open_database as store_database
from ctp_node.tls import ClientTLS, ServerTLS, pem_problems
from ctp_node.worker import JobContext


def perfusion_parameters(config: Config) -> PerfusionParameters:
    """The engine's parameters with the configuration's ``perfusion:`` overrides applied.

    Raises
    ------
    ConfigError : an override names no parameter or has the wrong type (every problem listed).
    """
    known = {f.name: f for f in fields(PerfusionParameters)}
    problems = []
    for name, value in config.perfusion.items():
        if name not in known:
            problems.append(
                ConfigProblem(
                    f"perfusion.{name}",
                    f"unknown engine parameter; known: {', '.join(sorted(known))}",
                )
            )
            continue
        default = getattr(PerfusionParameters(), name)
        if isinstance(default, bool) != isinstance(value, bool) or (
            isinstance(default, (int, float)) and not isinstance(value, (int, float))
        ):
            problems.append(
                ConfigProblem(
                    f"perfusion.{name}", f"must be {type(default).__name__}, not {value!r}"
                )
            )
    if problems:
        raise ConfigError(problems, config.source_path)
    try:
        return PerfusionParameters(**config.perfusion)  # type: ignore[arg-type]
    except ValueError as exc:  # a value the engine refuses, e.g. a negative threshold
        names = [name for name in config.perfusion if name in str(exc)] or sorted(config.perfusion)
        raise ConfigError(
            [ConfigProblem(f"perfusion.{names[0]}", str(exc))], config.source_path
        ) from exc


def job_context(config: Config) -> JobContext:
    return JobContext(
        storage_root=Path(config.storage.root),
        settings=PipelineSettings(
            parameters=perfusion_parameters(config),
            report=ReportSettings(
                series_number_start=config.report.series_number_start,
                institution_name=config.report.institution_name,
                series_description_suffix=config.report.series_description_suffix,
            ),
            min_time_points=config.ingest.min_time_points,
            quality_limits=QualityLimits(**config.quality.model_dump()),
            resident_hu_max_bytes=int(config.worker.resident_hu_max_mb * 2**20),
            spill_dir=Path(config.storage.root) / SPILL_FOLDER,
            profile_rules=tuple(rule.rule() for rule in config.profiles),
        ),
        destinations={d.name: tuple(d.output_kinds()) for d in config.destinations},
        lease_s=config.worker.lease_s,
        max_attempts=config.worker.max_attempts,
        retry_backoff_s=config.worker.retry_backoff_s,
        retry_backoff_max_s=config.worker.retry_backoff_max_s,
        retry_for_s=config.worker.retry_for_s,
        notify=notify_rules(config),
    )


def peers(config: Config) -> dict[str, Peer | StowPeer]:
    """Each destination as the sender reaches it, by name: a DICOM peer (``kind: dimse``) or
    a STOW-RS endpoint with its bearer token (``kind: dicomweb``).

    Raises
    ------
    ConfigError : a bearer token cannot be read (its file or variable).
    """
    found: dict[str, Peer | StowPeer] = {}
    for index, d in enumerate(config.destinations):
        tls = None if d.tls is None else ClientTLS(**d.tls.model_dump())
        if d.kind == "dicomweb":
            token = bearer_token(d, f"destinations.{index}")
            found[d.name] = StowPeer(str(d.url), token, d.timeout_s, tls)
            continue
        found[d.name] = Peer(
            ae_title=str(d.ae_title),
            host=str(d.host),
            port=int(d.port or 0),
            calling_ae_title=d.calling_ae_title or config.node.ae_title,
            timeout_s=d.timeout_s,
            tls=tls,
        )
    return found


def server_tls(config: Config) -> ServerTLS | None:
    """The TLS listener's files, or ``None`` when ``node.tls`` is not set."""
    tls = config.node.tls
    if tls is None:
        return None
    return ServerTLS(
        tls.certificate, tls.private_key, tls.ca_certificates, tls.require_client_certificate
    )


def tls_problems(config: Config, *, lapsed: bool = True) -> list[ConfigProblem]:
    """Every problem with the PEM files of ``node.tls``, ``http.tls`` and
    ``destinations[].tls``, with its key path; with ``lapsed=False``, without certificates
    that are only expired or not valid yet (see :class:`ctp_node.tls.PemProblem`)."""
    sections = [("node.tls", config.node.tls), ("http.tls", config.http.tls)] + [
        (f"destinations.{index}.tls", d.tls) for index, d in enumerate(config.destinations)
    ]
    problems = []
    for key_path, tls in sections:
        if tls is None:
            continue
        cas = getattr(tls, "ca_certificates", None)  # http.tls: no client certificates
        found = pem_problems(tls.certificate, tls.private_key, cas)
        problems += [
            ConfigProblem(f"{key_path}.{p.key}", p.message) for p in found if lapsed or not p.lapsed
        ]
    return problems


def listener_settings(config: Config) -> ListenerSettings:
    node = config.node
    return ListenerSettings(
        ae_title=node.ae_title,
        bind=node.bind,
        port=node.port,
        allowed_callers=tuple(Caller(c.ae_title, c.host) for c in node.allowed_callers),
        max_associations=node.max_associations,
        acse_timeout_s=node.acse_timeout_s,
        dimse_timeout_s=node.dimse_timeout_s,
        network_timeout_s=node.network_timeout_s,
        keep_other_objects=config.ingest.keep_other_objects,
        max_pending_connections=node.max_pending_connections,
        max_associations_per_caller=node.max_associations_per_caller,
        request_timeout_s=node.request_timeout_s,
        idle_eviction_s=node.idle_eviction_s,
        max_pdu_bytes=node.max_pdu_bytes,
        max_object_bytes=node.max_object_bytes,
    )


def open_database(config: Config) -> Database:
    return store_database(config.database.url, database_password(config.database))
