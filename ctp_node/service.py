"""The long-running node: the DICOM listener, the completion scheduler, the sender (threads of
``serve``) and the workers (child processes, so that a worker that runs out of memory cannot
take the receiver down with it).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

from ctp_node.assemble.completion import decide_stable_series
from ctp_node.config import Config, ConfigError, ConfigProblem
from ctp_node.perfusion.parameters import PerfusionParameters
from ctp_node.perfusion.quality import QualityLimits
from ctp_node.pipeline import JobContext, PipelineSettings, notify_failed_jobs, run_job
from ctp_node.receive.reconcile import reconcile_spool
from ctp_node.receive.scp import Caller, ListenerSettings, start_listener
from ctp_node.receive.spool import Spool
from ctp_node.report.settings import ReportSettings
from ctp_node.send.scu import Peer
from ctp_node.send.sender import RetryPolicy, send_due_exports
from ctp_node.store import Database
from ctp_node.store.queue import claim_job

log = logging.getLogger(__name__)

SENDER_INTERVAL_S = 1.0
WORKER_RESTART_DELAY_S = 5.0


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
    return PerfusionParameters(**config.perfusion)  # type: ignore[arg-type]


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
        ),
        destinations={d.name: tuple(d.output_kinds()) for d in config.destinations},
        lease_s=config.worker.lease_s,
        max_attempts=config.worker.max_attempts,
    )


def peers(config: Config) -> dict[str, Peer]:
    return {
        d.name: Peer(
            ae_title=d.ae_title,
            host=d.host,
            port=d.port,
            calling_ae_title=d.calling_ae_title or config.node.ae_title,
            timeout_s=d.timeout_s,
        )
        for d in config.destinations
    }


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
    )


def open_database(config: Config) -> Database:
    db = Database(config.database.url)
    db.create_schema()
    return db


def _loop(
    name: str, stop: threading.Event, interval_s: float, step: Callable[[], object]
) -> threading.Thread:
    """Run ``step`` every ``interval_s`` until ``stop``; an error is logged, never fatal."""

    def run() -> None:
        while not stop.is_set():
            try:
                step()
            except Exception:
                log.exception("%s: step failed; trying again in %.0f s", name, interval_s)
            stop.wait(interval_s)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def run_workers(config: Config, stop: threading.Event, *, parent_pid: int | None = None) -> None:
    """Claim and run jobs until ``stop`` (or until the parent ``serve`` process is gone)."""
    context = job_context(config)
    db = open_database(config)
    worker_id = f"{socket.gethostname()}:{os.getpid()}"
    log.info("worker %s ready", worker_id)
    while not stop.is_set():
        if parent_pid is not None and os.getppid() != parent_pid:
            log.warning("the serve process is gone; worker %s stops", worker_id)
            return
        try:
            job = claim_job(db, worker_id, context.lease_s, context.max_attempts)
        except Exception:
            log.exception("claiming a job failed")
            job = None
        if job is None:
            try:
                notify_failed_jobs(db, context)
            except Exception:
                log.exception("sending the failure notices of failed jobs failed")
            stop.wait(config.worker.poll_interval_s)
            continue
        log.info(
            "job %d (series %s) started, attempt %d", job.id, job.series_instance_uid, job.attempts
        )
        run_job(db, job, context, worker_id)
    db.dispose()


@dataclass
class _WorkerProcess:
    command: list[str]
    process: subprocess.Popen | None = None


class Node:
    """The node's front end: listener, scheduler, sender and supervised worker processes.

    Parameters
    ----------
    config : the validated configuration; its ``source_path`` is handed to the workers.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        perfusion_parameters(config)  # refuse bad engine overrides before listening
        self.stop_event = threading.Event()
        self.db = open_database(config)
        self.spool = Spool(Path(config.storage.root), config.storage.min_free_bytes)
        self._threads: list[threading.Thread] = []
        self._server = None
        self._workers: list[_WorkerProcess] = []

    def start(self) -> None:
        config = self.config
        reconcile_spool(self.spool, self.db)
        self._server = start_listener(listener_settings(config), self.spool, self.db)
        root = Path(config.storage.root)
        self._threads.append(
            _loop(
                "scheduler",
                self.stop_event,
                config.ingest.scan_interval_s,
                lambda: decide_stable_series(
                    self.db,
                    root,
                    config.ingest.series_stable_after_s,
                    config.ingest.min_time_points,
                ),
            )
        )
        policy = RetryPolicy(
            config.send.max_attempts, config.send.retry_backoff_s, config.send.retry_backoff_max_s
        )
        destinations = peers(config)
        self._threads.append(
            _loop(
                "sender",
                self.stop_event,
                SENDER_INTERVAL_S,
                lambda: send_due_exports(self.db, root, destinations, policy),
            )
        )
        if config.worker.count:
            if config.source_path is None:
                raise ValueError("workers need the configuration file's path")
            command = [
                sys.executable,
                "-m",
                "ctp_node",
                "worker",
                "--config",
                str(config.source_path),
                "--parent-pid",
                str(os.getpid()),
            ]
            self._workers = [_WorkerProcess(command) for _ in range(config.worker.count)]
            self._threads.append(
                _loop("workers", self.stop_event, WORKER_RESTART_DELAY_S, self._supervise_workers)
            )
        log.info(
            "node %s serving on %s:%d with %d worker(s)",
            config.node.ae_title,
            config.node.bind,
            config.node.port,
            config.worker.count,
        )

    def _supervise_workers(self) -> None:
        for worker in self._workers:
            if worker.process is not None and worker.process.poll() is None:
                continue
            if worker.process is not None:
                log.error(
                    "worker process %d exited with %s; starting another",
                    worker.process.pid,
                    worker.process.returncode,
                )
            worker.process = subprocess.Popen(worker.command)

    def stop(self) -> None:
        self.stop_event.set()
        if self._server is not None:
            self._server.shutdown()
        for thread in self._threads:
            thread.join(timeout=10)
        for worker in self._workers:
            if worker.process is not None and worker.process.poll() is None:
                worker.process.terminate()
        for worker in self._workers:
            if worker.process is not None:
                try:
                    worker.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    worker.process.kill()
        self.db.dispose()
        log.info("node stopped")
