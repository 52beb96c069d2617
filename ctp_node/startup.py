"""What can be known about a configuration before the node starts, and how a start that fails
is told: one or two sentences and an exit code, never a traceback (unless ``--debug``).

Exit codes of every command: 0 ok; 1 something needs attention (``status``: a failed job or an
undelivered output; ``config check --echo``: a destination that does not answer a C-ECHO, or a
DICOMweb search; an unexpected error); 2 configuration or usage (an invalid file, a port another
program holds, a bind address of another machine, a database driver not installed or a database
that cannot be reached, a missing database for ``status``, a bad argument).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ctp_node.config import (
    Config,
    ConfigError,
    ConfigProblem,
    DestinationConfig,
    config_warnings,
    database_password,
    relative_path_warnings,
)
from ctp_node.receive.listen_check import ListenObstacle, is_local_host, listen_problem
from ctp_node.send.echo import EchoResult, echo, unresolved_host
from ctp_node.store import DatabaseUnavailable, database_problem

log = logging.getLogger("ctp_node")

EXIT_OK = 0
EXIT_ATTENTION = 1
EXIT_CONFIGURATION = 2


@dataclass
class Preflight:
    """What ``config check`` found: ``problems`` stop the node from starting (exit 2);
    ``warnings`` are allowed but probably not meant, or true only now (a port in use)."""

    problems: list[ConfigProblem] = field(default_factory=list)
    warnings: list[ConfigProblem] = field(default_factory=list)


def preflight(config: Config, *, connect: bool = False) -> Preflight:
    """Every check ``config check`` makes beyond the file's own validity: engine overrides,
    TLS files, the listener's address and ports, the database's driver (and, with
    ``connect``, a connection), the destinations' host names and that none is the node
    itself, the allowed callers' host names."""
    from ctp_node.receive.allow_list import Caller, unresolvable_hosts
    from ctp_node.wiring import perfusion_parameters, tls_problems

    found = Preflight()
    try:
        perfusion_parameters(config)
    except ConfigError as exc:
        found.problems += exc.problems
    found.problems += tls_problems(config)  # files exist, key matches, not expired
    for obstacle, problem in listener_problems(config):
        # In use or not permitted is true now, for this user: the running node holds its own
        # port, and the service may run with other privileges.
        (found.warnings if obstacle in ("in_use", "denied") else found.problems).append(problem)
    why = database_problem(config.database.url, database_password(config.database), connect=connect)
    if why is not None:
        found.problems.append(ConfigProblem("database.url", why))
    found.problems += destinations_to_self(config)
    found.warnings += [
        ConfigProblem(f"destinations.{index}.{key}", why)
        for index, destination in enumerate(config.destinations)
        for key, host in [_destination_host(destination)]
        if (why := unresolved_host(host)) is not None
    ]
    callers = [Caller(c.ae_title, c.host) for c in config.node.allowed_callers]
    found.warnings += [
        ConfigProblem(f"node.allowed_callers.{index}.host", why)
        for index, why in unresolvable_hosts(callers).items()
    ]
    found.warnings += config_warnings(config) + relative_path_warnings(config)
    found.warnings.sort(key=lambda w: w.key_path)
    return found


def listener_problems(config: Config) -> list[tuple[ListenObstacle, ConfigProblem]]:
    """Why the listener (and the TLS listener) could not listen now, with the key to change."""
    ports = [("node.port", config.node.port)]
    if config.node.tls is not None:
        ports.append(("node.tls.port", config.node.tls.port))
    found: list[tuple[ListenObstacle, ConfigProblem]] = []
    for key_path, port in ports:
        problem = listen_problem(config.node.bind, port)
        if problem is None:
            continue
        if problem.obstacle == "not_local":  # the same for every port: say it once
            return [(problem.obstacle, ConfigProblem("node.bind", problem.message))]
        found.append((problem.obstacle, ConfigProblem(key_path, problem.message)))
    return found


def refuse_unusable_listener(config: Config) -> None:
    """Before ``serve`` starts anything: raise :class:`ConfigError` when its listener could
    not listen (a port in use, a bind address of another machine)."""
    problems = [problem for _, problem in listener_problems(config)]
    if problems:
        raise ConfigError(problems, config.source_path)


def destinations_to_self(config: Config) -> list[ConfigProblem]:
    """Destinations that are the node itself: its AE title, one of its listener's ports and a
    host of this machine. Results sent there would come back in, not reach PACS."""
    ports = {config.node.port} | ({config.node.tls.port} if config.node.tls else set())
    return [
        ConfigProblem(
            f"destinations.{index}",
            f"{destination.ae_title}@{destination.host}:{destination.port} is this node's own "
            "listener: results would come back to the node instead of reaching PACS; give "
            "the PACS's AE title, host and port",
        )
        for index, destination in enumerate(config.destinations)
        if destination.kind == "dimse"
        and destination.ae_title == config.node.ae_title
        and destination.port in ports
        and is_local_host(destination.host)
    ]


def echo_destinations(config: Config) -> list[tuple[str, EchoResult]]:
    """A C-ECHO to each DICOM destination, a search (QIDO-RS) on each DICOMweb one, as the
    sender would call it: (key path, result)."""
    from ctp_node.send.stow import StowPeer, reach
    from ctp_node.wiring import peers

    return [
        (f"destinations.{index}", reach(peer) if isinstance(peer, StowPeer) else echo(peer))
        for index, peer in enumerate(peers(config).values())
    ]


def _destination_host(destination: DestinationConfig) -> tuple[str, str]:
    """The key that names a destination's host (``host``, or ``url`` for DICOMweb) and the
    host."""
    if destination.kind == "dicomweb":
        return "url", urlsplit(str(destination.url)).hostname or ""
    return "host", str(destination.host)


def report_failure(command: str, exc: BaseException, *, debug: bool = False) -> int:
    """Tell why ``ctp-node COMMAND`` stopped, on standard error, and return its exit code:
    a configuration that cannot be used or a database that cannot be used (2) in the words of
    the error; anything else (1) in one line. With ``debug``, the traceback too (not for an
    invalid configuration, whose problems say it all)."""
    if isinstance(exc, ConfigError):
        print(f"ctp-node {command}: {exc}", file=sys.stderr)
        return EXIT_CONFIGURATION
    from ctp_node.service import StartupError

    if isinstance(exc, StartupError):
        print(f"ctp-node {command}: cannot start: {exc}", file=sys.stderr)
        return EXIT_ATTENTION
    # through logging, not Python's own report, so that quoted element values are withheld
    if isinstance(exc, DatabaseUnavailable):
        print(f"ctp-node {command}: database.url: {exc}", file=sys.stderr)
        if debug:
            log.exception("the database's own error")
        return EXIT_CONFIGURATION
    if debug:
        log.exception("ctp-node %s stopped on an unexpected error", command)
    else:
        log.error(
            "ctp-node %s stopped on an unexpected error: %s: %s (run `ctp-node --debug %s ...` "
            "for the traceback)",
            command,
            type(exc).__name__,
            exc,
            command,
        )
    return EXIT_ATTENTION
