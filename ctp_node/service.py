"""The long-running node: the DICOM listener, the completion scheduler, the sender (threads of
``serve``) and the workers (child processes, so that a worker that runs out of memory cannot
take the receiver down with it).
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import multiprocessing.util
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from ctp_node.assemble.completion import CompletionSettings, decide_complete_series
from ctp_node.config import (
    Config,
    ConfigError,
    ConfigProblem,
)
from ctp_node.file_modes import restrict_storage_root
from ctp_node.receive.admission import record_refused_connection
from ctp_node.receive.listen_check import bind_failure
from ctp_node.receive.reconcile import reconcile_spool
from ctp_node.receive.scp import ListenerSettings, start_listener
from ctp_node.receive.spool import Spool
from ctp_node.retention import apply_due_retention, retention_policy
from ctp_node.send.notify import send_due_notifications
from ctp_node.send.notify_channels import configured_channels
from ctp_node.send.notify_message import MessageSettings
from ctp_node.send.notify_rules import console_url, notify_rules
from ctp_node.send.sender import RetryPolicy, send_due_exports
from ctp_node.store.counts import stale_running_jobs
from ctp_node.store.notifications import retry_failed_notifications
from ctp_node.store.outbox import retry_failed_exports
from ctp_node.store.queue import claim_job, release_worker_jobs, running_worker_ids
from ctp_node.tls import describe, server_context
from ctp_node.wiring import (
    job_context,
    listener_settings,
    open_database,
    peers,
    perfusion_parameters,
    server_tls,
    tls_problems,
)
from ctp_node.worker import notify_failed_jobs, run_job

log = logging.getLogger(__name__)

SENDER_INTERVAL_S = 1.0
#: How often the notifications outbox is looked at, seconds.
NOTIFIER_INTERVAL_S = 1.0
#: How often the supervisor looks at its worker processes, seconds: a dead worker's job is
#: given back and the worker replaced within about this time.
WORKER_CHECK_INTERVAL_S = 1.0
#: A worker that dies sooner than this after its start (seconds) is one that cannot start (a
#: broken installation, a configuration it refuses): the next is started only after
#: WORKER_RESTART_DELAY_S, so that the supervisor does not spin.
WORKER_MIN_LIFETIME_S = 2.0
WORKER_RESTART_DELAY_S = 5.0


#: Longest path of an AF_UNIX socket, in bytes (Linux's ``sun_path`` holds 108, with its NUL).
UNIX_SOCKET_PATH_MAX = 107


def fork_server_problem() -> str | None:
    """Why ``serve`` could not start its workers, in a sentence, or ``None``.

    The workers are forked by multiprocessing's fork server, whose socket is a file in its
    temporary folder (in ``TMPDIR``). A ``TMPDIR`` so long that the socket's path passes
    :data:`UNIX_SOCKET_PATH_MAX` would let the node receive studies that no worker ever
    computes, so ``serve`` refuses to start instead."""
    folder = multiprocessing.util.get_temp_dir()  # the folder the fork server will use
    socket_path = os.path.join(folder, "listener-" + "x" * 8)  # as multiprocessing names it
    if len(os.fsencode(socket_path)) <= UNIX_SOCKET_PATH_MAX:
        return None
    return (
        f"the workers' fork server cannot start: its socket would be in {folder}, and a socket "
        f"path may have at most {UNIX_SOCKET_PATH_MAX} bytes; set TMPDIR to a shorter folder "
        "(e.g. /tmp) for ctp-node serve"
    )


class StartupError(Exception):
    """``serve`` cannot start, for a reason a sentence explains (e.g. a port in use)."""


class Waitable(Protocol):
    """An event of :mod:`threading` or :mod:`multiprocessing`."""

    def wait(self, timeout: float | None = None) -> bool: ...

    def clear(self) -> None: ...


class Wakeups:
    """Events that end a wait of the node's polling loops early, so that a study does not
    wait a poll interval at each hand-over (about a second in all, on average).

    Attributes
    ----------
    jobs_queued : set by the scheduler when it has queued a job; ``serve``'s workers wait on
        it between claims.
    results_ready : set by a worker when it has queued outputs for PACS; the sender waits on
        it between rounds.

    Polling stays as it was (``worker.poll_interval_s``, the sender's interval): a job queued
    by another process (``reprocess``, a worker of another host) is found on the next round.
    """

    def __init__(self, context: multiprocessing.context.BaseContext) -> None:
        self.jobs_queued = context.Event()
        self.results_ready = context.Event()

    def set_all(self) -> None:
        self.jobs_queued.set()
        self.results_ready.set()


def pause(stop: threading.Event, wake: Waitable | None, seconds: float) -> None:
    """Wait ``seconds``, less when ``wake`` is set (it is cleared) or ``stop`` is."""
    if wake is None:
        stop.wait(seconds)
    elif not stop.is_set() and wake.wait(seconds):
        wake.clear()


def _loop(
    name: str,
    stop: threading.Event,
    interval_s: float,
    step: Callable[[], object],
    wake: Waitable | None = None,
) -> threading.Thread:
    """Run ``step`` every ``interval_s`` (sooner when ``wake`` is set) until ``stop``; an
    error is logged, never fatal."""

    def run() -> None:
        while not stop.is_set():
            try:
                step()
            except Exception:
                log.exception("%s: step failed; trying again in %.0f s", name, interval_s)
            pause(stop, wake, interval_s)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def run_workers(
    config: Config,
    stop: threading.Event,
    *,
    parent_pid: int | None = None,
    serve_pid: int | None = None,
    wakeups: Wakeups | None = None,
) -> None:
    """Claim and run jobs until ``stop``, or until the parent process (``parent_pid``, the
    fork server) or the ``serve`` process that started it (``serve_pid``) is gone. With
    ``wakeups`` (``serve``'s workers), a queued job ends the wait between claims and a done
    job wakes the sender."""
    context = job_context(config)
    db = open_database(config)
    worker_id = f"{socket.gethostname()}:{os.getpid()}"
    log.info("worker %s ready", worker_id)
    while not stop.is_set():
        orphaned = parent_pid is not None and os.getppid() != parent_pid
        if orphaned or (serve_pid is not None and not _process_exists(serve_pid)):
            # (serve killed with SIGKILL: its fork server may linger; a restarted serve
            # must not find the old workers still running beside its own)
            log.warning("the serve process is gone; worker %s stops", worker_id)
            return
        try:
            job = claim_job(db, worker_id, context.lease_s, context.max_attempts)
        except Exception:
            log.exception("claiming a job failed")
            job = None
        if job is None:
            try:
                notify_failed_jobs(db, context, worker_id)
            except Exception:
                log.exception("sending the failure notices of failed jobs failed")
            pause(stop, wakeups and wakeups.jobs_queued, config.worker.poll_interval_s)
            continue
        log.info(
            "job %d (series %s) started, attempt %d", job.id, job.series_instance_uid, job.attempts
        )
        try:
            run_job(
                db,
                job,
                context,
                worker_id,
                outputs_queued=wakeups.results_ready.set if wakeups is not None else None,
            )
            if wakeups is not None:  # a failure notice is an output too
                wakeups.results_ready.set()
        except Exception:  # e.g. the database went away while recording the outcome
            log.exception("job %d: recording its outcome failed; its lease will expire", job.id)
            stop.wait(config.worker.poll_interval_s)
    db.dispose()


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _worker_process(
    config_path: str,
    serve_pid: int | None = None,
    log_level: int | None = None,
    wakeups: Wakeups | None = None,
) -> None:
    """A worker process of ``serve`` (forked from the fork server, modules already loaded).
    It logs as ``serve`` does (``logging:``, and ``serve``'s level: ``--verbose``), to the same
    file, which ``serve`` rotates."""
    from ctp_node.config import load_config
    from ctp_node.logs import configure_logging

    configure_logging(level=log_level)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # serve's Ctrl-C stops workers by SIGTERM
    try:
        # The fork server is the parent: when serve ends, so does it, and then the worker.
        config = load_config(Path(config_path))
        configure_logging(config.logging, level=log_level, rotate=False, source=config.source_path)
        run_workers(config, stop, parent_pid=os.getppid(), serve_pid=serve_pid, wakeups=wakeups)
    except KeyboardInterrupt:
        stop.set()


def _listen(key_path: str, settings: ListenerSettings, spool, db, config, context=None):  # type: ignore[no-untyped-def]
    """:func:`start_listener`, with a port that another program took since ``serve`` checked
    it (:func:`ctp_node.startup.refuse_unusable_listener`) told as a configuration problem."""
    try:
        return start_listener(settings, spool, db, context)
    except OSError as exc:
        problem = bind_failure(settings.bind, settings.port, exc)
        key_path = "node.bind" if problem.obstacle == "not_local" else key_path
        raise ConfigError([ConfigProblem(key_path, problem.message)], config.source_path) from exc


#: Modules the fork server imports once, so that a replacement worker starts in a fraction of
#: a second instead of the seconds numpy, scipy, pydicom, highdicom and matplotlib take.
WORKER_PRELOAD = ["ctp_node.service", "ctp_node.worker"]


@dataclass
class _WorkerProcess:
    config_path: str
    process: multiprocessing.process.BaseProcess | None = None
    started_at: float = 0.0  # time.monotonic() of the last start
    restart_at: float = 0.0  # not restarted before this time.monotonic()


class Node:
    """The node's front end: listener, scheduler, sender and supervised worker processes.

    Parameters
    ----------
    config : the validated configuration; its ``source_path`` is handed to the workers.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        perfusion_parameters(config)  # refuse bad engine overrides before listening
        unusable = tls_problems(config, lapsed=False)
        if unusable:
            raise ConfigError(unusable, config.source_path)
        # An expired certificate does not stop the node, as it would not stop a running one:
        # TLS peers refuse it, the plain listener and the other destinations go on.
        for problem in tls_problems(config):
            if problem not in unusable:
                log.error("%s; TLS peers will refuse it", problem)
        if config.worker.count and (why := fork_server_problem()) is not None:
            raise ConfigError([ConfigProblem("worker.count", why)], config.source_path)
        self.stop_event = threading.Event()
        restrict_storage_root(Path(config.storage.root))  # patient data: owner only
        self.db = open_database(config)
        self.spool = Spool(
            Path(config.storage.root),
            config.storage.min_free_bytes,
            config.storage.retention.quarantine_max_bytes,
        )
        self._threads: list[threading.Thread] = []
        self._server = None
        self._tls_server = None
        self._http = None
        self._workers: list[_WorkerProcess] = []
        self._context = multiprocessing.get_context("forkserver")
        self._wakeups = Wakeups(self._context)

    def start(self) -> None:
        """Start everything; raises :class:`ConfigError` when the HTTP face's or a
        listener's address cannot be bound (the HTTP face's before anything else has started),
        :class:`StartupError` when the HTTP face does not come up."""
        config = self.config
        if config.http.enabled:
            self._start_http()
        reconcile_spool(self.spool, self.db)
        self._recover()
        self._start_listeners()
        self._start_loops()
        self._start_workers()
        # What start-up loaded (modules, dictionaries, the ORM) lives as long as serve: kept
        # out of the cyclic collector, a full collection need not walk 250 000 objects (0.1 s
        # with the interpreter held, during which no association is served).
        gc.freeze()
        log.info(
            "node %s serving on %s:%d with %d worker(s)",
            config.node.ae_title,
            config.node.bind,
            config.node.port,
            config.worker.count,
        )

    def _start_listeners(self) -> None:
        """The DICOM listener (``node.port``) and, with ``node.tls``, the TLS one; raises
        :class:`ConfigError` when an address cannot be bound."""
        config = self.config
        settings = listener_settings(config)
        self._server = _listen("node.port", settings, self.spool, self.db, config)
        tls = server_tls(config)
        if tls is not None:
            db = self.db
            context = server_context(tls, lambda p, r: record_refused_connection(db, p, r))
            self._tls_server = _listen(
                "node.tls.port",
                replace(settings, port=config.node.tls.port),
                self.spool,
                db,
                config,
                context,
            )
            log.info("TLS listener's certificate: %s", describe(tls.certificate))

    def _start_loops(self) -> None:
        """The node's own threads, each a loop: the scheduler (finds complete series, queues
        their jobs), the sender (exports to the destinations), the notifier and retention."""
        config = self.config
        root = Path(config.storage.root)
        completion = CompletionSettings(
            config.ingest.series_stable_after_s, config.ingest.min_time_points
        )
        self._threads.append(
            _loop(
                "scheduler",
                self.stop_event,
                config.ingest.scan_interval_s,
                lambda: self._schedule(root, completion),
            )
        )
        policy = RetryPolicy(
            config.send.max_attempts, config.send.retry_backoff_s, config.send.retry_backoff_max_s
        )
        destinations = peers(config)
        told_of_failures = notify_rules(config).failure_channels()
        self._threads.append(
            _loop(
                "sender",
                self.stop_event,
                SENDER_INTERVAL_S,
                lambda: send_due_exports(self.db, root, destinations, policy, told_of_failures),
                wake=self._wakeups.results_ready,
            )
        )
        self._start_notifier()
        retention = retention_policy(config)
        self._threads.append(
            _loop(
                "retention",
                self.stop_event,
                config.storage.retention.interval_s,
                lambda: apply_due_retention(self.db, root, retention),
            )
        )

    def _start_workers(self) -> None:
        """``worker.count`` worker processes and the loop that replaces those that die; none
        with ``worker.count: 0`` (workers run elsewhere, as ``ctp-node worker``)."""
        config = self.config
        if not config.worker.count:
            return
        if config.source_path is None:
            raise ValueError("workers need the configuration file's path")
        # Workers are forked from a fork server that has loaded the engine: a worker that
        # died is replaced, and its job taken up, within about a second.
        self._context.set_forkserver_preload(WORKER_PRELOAD)
        self._workers = [
            _WorkerProcess(str(config.source_path)) for _ in range(config.worker.count)
        ]
        self._threads.append(
            _loop("workers", self.stop_event, WORKER_CHECK_INTERVAL_S, self._supervise_workers)
        )

    def _start_notifier(self) -> None:
        """The notifications outbox's sender (``notifications:``), in a thread of its own so
        that a slow webhook or mail server holds up no export. Without channels it still runs:
        a message queued before they were removed gives up, recorded, instead of waiting."""
        config = self.config
        notifications = config.notifications
        channels = configured_channels(config)
        policy = RetryPolicy(
            notifications.max_attempts,
            notifications.retry_backoff_s,
            notifications.retry_backoff_max_s,
        )
        settings = MessageSettings(
            config.node.ae_title,
            console_url(config),
            notifications.large_core_ml,
            notifications.include_patient_identity,
        )
        root = Path(config.storage.root)
        self._threads.append(
            _loop(
                "notifier",
                self.stop_event,
                NOTIFIER_INTERVAL_S,
                lambda: send_due_notifications(self.db, channels, policy, settings, root),
            )
        )

    def _start_http(self) -> None:
        """The HTTP face (``http:``): health checks, metrics and the web console, served by
        uvicorn in a thread."""
        # Imported here: FastAPI and uvicorn stay out of serve without http, and out of the
        # workers' fork server, which preloads this module.
        from ctp_node.http.access import Access
        from ctp_node.http.app import build_app
        from ctp_node.http.console import build_console
        from ctp_node.http.health import database_check, disk_check, listener_check
        from ctp_node.http.metrics import node_registry
        from ctp_node.http.server import HttpFace, HttpStartError

        min_free = self.config.storage.min_free_bytes
        checks = {
            "listener": listener_check(self._listeners),
            "database": database_check(self.db),
            "disk": disk_check(self.spool.free_bytes, min_free),
            "workers": self._worker_problem,
        }
        registry = node_registry(self.db, self.spool.free_bytes, min_free)
        access = Access(self.config.http, self.db, Path(self.config.storage.root))
        app = build_app(checks, registry, build_console(self.db, self.config, access), access)
        face = HttpFace(app, self.config.http.bind, self.config.http.port, self.config.http.tls)
        try:
            face.start()
        except HttpStartError as exc:
            if exc.bind_failed:  # a port in use, an address of another machine: configuration
                problem = ConfigProblem("http.port", str(exc))
                raise ConfigError([problem], self.config.source_path) from None
            raise StartupError(str(exc)) from None
        self._http = face

    def _listeners(self) -> list[tuple[str, object]]:
        """The DICOM listeners that should be accepting, with their addresses."""
        node = self.config.node
        listeners = [(f"{node.bind}:{node.port}", self._server)]
        if node.tls is not None:
            listeners.append((f"{node.bind}:{node.tls.port} (TLS)", self._tls_server))
        return listeners

    def _worker_problem(self) -> str | None:
        """Readiness of the workers: every worker process of this node alive; with
        ``worker.count: 0`` (workers elsewhere), no running job whose worker has been silent
        for two leases (its lease expired ``lease_s`` ago and no worker took it over)."""
        count = self.config.worker.count
        if count:
            alive = sum(1 for w in self._workers if w.process is not None and w.process.is_alive())
            if alive < count:
                return f"{count - alive} of {count} worker process(es) not running"
            return None
        stale = stale_running_jobs(self.db, self.config.worker.lease_s)
        if stale:
            return (
                f"worker.count is 0 and {stale} running job(s) have had no heartbeat for two "
                "leases: are the `ctp-node worker` processes running?"
            )
        return None

    def _recover(self) -> None:
        """What a restart owes to the work of the previous run: the jobs its dead workers held
        are given back, and exports and notifications that ran out of attempts get new ones."""
        host = socket.gethostname()
        for worker_id in running_worker_ids(self.db):
            name, _, pid = worker_id.rpartition(":")
            if name == host and pid.isdigit() and not _process_exists(int(pid)):
                released = release_worker_jobs(
                    self.db, worker_id, "the node stopped", self.config.worker.max_attempts
                )
                log.warning("job(s) %s of a worker of the previous run given back", released)
        retried = retry_failed_exports(self.db)
        if retried:
            log.warning("%d export(s) that had run out of attempts are tried again", retried)
        retried = retry_failed_notifications(self.db)
        if retried:
            log.warning("%d notification(s) that had given up are tried again", retried)

    def _supervise_workers(self) -> None:
        """Replace dead workers, giving their jobs back at once (not after the lease)."""
        for worker in self._workers:
            process = worker.process
            if process is not None:
                if process.is_alive():
                    continue
                released = release_worker_jobs(
                    self.db,
                    f"{socket.gethostname()}:{process.pid}",
                    f"the worker process ended (exit status {process.exitcode})",
                    self.config.worker.max_attempts,
                )
                log.error(
                    "worker process %s exited with %s; job(s) %s given back; starting another",
                    process.pid,
                    process.exitcode,
                    released or "none",
                )
                worker.process = None
                lived_s = time.monotonic() - worker.started_at
                if lived_s < WORKER_MIN_LIFETIME_S:
                    worker.restart_at = time.monotonic() + WORKER_RESTART_DELAY_S
            if time.monotonic() < worker.restart_at:
                continue
            process = self._context.Process(
                target=_worker_process,
                args=(worker.config_path, os.getpid(), logging.getLogger().level, self._wakeups),
                name="ctp-node worker",
            )
            # Kept only once started: a start that fails (the loop logs it and tries again)
            # must not leave a never-started process, whose pid is None, to be "replaced".
            process.start()
            worker.process = process
            worker.started_at = time.monotonic()

    def _schedule(self, root: Path, completion: CompletionSettings) -> None:
        """Queue the jobs of series now complete; wake the workers when there are any."""
        if decide_complete_series(self.db, root, completion):
            self._wakeups.jobs_queued.set()

    def stop(self) -> None:
        self.stop_event.set()
        self._wakeups.set_all()  # the loops and workers waiting on them see the stop now
        if self._http is not None:
            self._http.stop()
        for server in (self._server, self._tls_server):
            if server is not None:
                server.shutdown()
        for thread in self._threads:
            thread.join(timeout=10)
        for worker in self._workers:
            if worker.process is not None and worker.process.is_alive():
                worker.process.terminate()
        for worker in self._workers:
            if worker.process is not None:
                worker.process.join(timeout=15)
                if worker.process.is_alive():
                    worker.process.kill()
                    worker.process.join(timeout=5)
        self.db.dispose()
        log.info("node stopped")
