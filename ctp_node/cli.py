"""The ``ctp-node`` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from ctp_node import __version__, logs
from ctp_node.config import (
    check_config,
    database_password,
    default_config_path,
    load_config,
)
from ctp_node.config.schema import Config
from ctp_node.profiles import PROFILE_NAMES
from ctp_node.user_region import UserRegion, parse_region

log = logging.getLogger("ctp_node")

#: The phantom's default in-plane field of view: a head with some air around it.
FIELD_OF_VIEW_MM = 220.0

#: What ``add_subparsers`` returns, which each command's parser is added to (argparse has no
#: public name for it).
_Commands = argparse._SubParsersAction


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _configure_logging(args)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from ctp_node.startup import report_failure

        return report_failure(args.command, exc, debug=args.debug)


def _configure_logging(args: argparse.Namespace, config: Config | None = None) -> None:
    """Logging as the configuration's ``logging:`` section says (:mod:`ctp_node.logs`) once a
    command has loaded it, its defaults until then; ``--verbose`` is DEBUG whatever it says."""
    level = logging.DEBUG if getattr(args, "verbose", False) else None
    if config is None:
        logs.configure_logging(level=level)
    else:
        logs.configure_logging(config.logging, level=level, source=config.source_path)


def _parser() -> argparse.ArgumentParser:
    """The whole command line: the global options, then each command in the order ``--help``
    lists them."""
    parser = argparse.ArgumentParser(
        prog="ctp-node",
        description="A DICOM node that turns brain CT perfusion scans into perfusion maps and "
        "acute-stroke volumes.",
    )
    parser.add_argument("--version", action="version", version=f"ctp-node {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback when a command stops on an unexpected error",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_node_commands(commands)
    _add_process(commands)
    _add_phantom(commands)
    _add_demo(commands)
    _add_status(commands)
    _add_resend(commands)
    _add_reprocess(commands)
    _add_purge(commands)
    _add_user(commands)
    _add_config(commands)
    return parser


def _with_config(command: argparse.ArgumentParser) -> None:
    """``--config``, for the commands that act on a node's configuration."""
    command.add_argument(
        "--config",
        type=Path,
        default=None,
        help="configuration file (default: $CTP_NODE_CONFIG, then config/ctp-node.yaml if "
        "there is one here, then /etc/ctp-node/ctp-node.yaml)",
    )


def _add_node_commands(commands: _Commands) -> None:
    """``serve`` (the whole node) and ``worker`` (workers only)."""
    serve = commands.add_parser("serve", help="run the node: listener, scheduler, workers, sender")
    _with_config(serve)
    serve.set_defaults(run=_serve)

    worker = commands.add_parser("worker", help="run workers only (scale out on PostgreSQL)")
    _with_config(worker)
    worker.set_defaults(run=_worker)


def _add_process(commands: _Commands) -> None:
    """``process``: offline, DICOM files in, outputs out, optionally with a person's AIF/VOF."""
    process = commands.add_parser("process", help="offline: DICOM files/folders in, outputs out")
    process.add_argument("inputs", nargs="+", type=Path, help="DICOM files or folders")
    process.add_argument("--out", type=Path, required=True, help="folder for the outputs")
    process.add_argument(
        "--aif",
        type=_zyx,
        default=None,
        metavar="Z,Y,X",
        help="arterial input location instead of automatic: slice, row, column (0-based)",
    )
    process.add_argument(
        "--vof",
        type=_zyx,
        default=None,
        metavar="Z,Y,X",
        help="venous output location instead of automatic: slice, row, column (0-based)",
    )
    _add_region(process)
    process.add_argument(
        "--config",
        type=Path,
        default=None,
        help="take engine and report settings from this configuration",
    )
    process.add_argument(
        "--profile",
        choices=PROFILE_NAMES,
        default=None,
        help="compute every series with this protocol profile instead of the one the "
        "configuration's profiles: rules choose (default: the rules; without rules, stroke)",
    )
    process.set_defaults(run=_process)


def _add_phantom(commands: _Commands) -> None:
    """``phantom``: the digital phantom's geometry, timing, noise and residue function."""
    phantom = commands.add_parser("phantom", help="write a digital phantom study and its truth")
    phantom.add_argument("out_dir", type=Path)
    phantom.add_argument("--matrix", type=int, default=128, help="in-plane size (voxels)")
    phantom.add_argument("--slices", type=int, default=8)
    phantom.add_argument(
        "--pixel-spacing",
        type=float,
        default=None,
        help="in-plane pixel size in mm (default: a 220 mm field of view)",
    )
    phantom.add_argument("--slice-thickness", type=float, default=5.0, help="mm")
    phantom.add_argument("--duration", type=float, default=60.0, help="seconds")
    phantom.add_argument("--interval", type=float, default=1.5, help="seconds between images")
    phantom.add_argument("--noise", type=float, default=5.0, help="noise sigma in HU")
    phantom.add_argument(
        "--residue", choices=("exponential", "linear", "box"), default="exponential"
    )
    phantom.add_argument("--sampling", choices=("uniform", "nonuniform"), default="uniform")
    phantom.add_argument("--motion", type=float, default=0.0, help="motion in mm (late frames)")
    phantom.add_argument("--seed", type=int, default=0)
    phantom.set_defaults(run=_phantom)


def _add_demo(commands: _Commands) -> None:
    """``demo``: phantom → node → PACS on loopback, in one folder."""
    demo = commands.add_parser("demo", help="a first run: phantom → node → PACS, on loopback")
    demo.add_argument(
        "--out",
        "--dir",
        dest="out",
        type=Path,
        default=None,
        metavar="FOLDER",
        help="folder for the demo's node, PACS and phantom (~80 MB; a previous demo's folder is "
        "replaced); default: a new temporary folder, printed",
    )
    demo.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for results")
    demo.set_defaults(run=_demo)


def _add_status(commands: _Commands) -> None:
    """``status``: what the node holds, or its audit trails, narrowed by series, age or
    failure."""
    status = commands.add_parser(
        "status",
        help="series, jobs and exports with their state; exit 1 when something needs attention",
    )
    _with_config(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--audit",
        action="store_true",
        help="the audit trail: associations received and sent, with their studies "
        "(with --json: JSON lines, one association per line)",
    )
    status.add_argument(
        "--console",
        action="store_true",
        help="the web console's audit trail (sign-ins, failed ones, sign-outs, refused "
        "requests, reprocess/resend/retry, by whom; --failed: only the refused; with --json: "
        "JSON lines)",
    )
    status.add_argument("--series", metavar="UID", help="only this series, its jobs and exports")
    status.add_argument(
        "--since",
        type=_duration,
        metavar="AGE",
        help="only what happened in the last AGE (e.g. 90s, 30m, 2h, 1d)",
    )
    status.add_argument(
        "--failed", action="store_true", help="only what needs attention (failed, in error)"
    )
    status.set_defaults(run=_status)


def _add_resend(commands: _Commands) -> None:
    """``resend``: one job's outputs or a series' latest result, to one or every destination."""
    resend = commands.add_parser(
        "resend", help="send a result again (the latest version of a series, or one job's)"
    )
    _with_config(resend)
    chosen = resend.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--job", type=int, metavar="N", help="the job whose outputs to send")
    chosen.add_argument("--series", metavar="UID", help="the series whose latest result to send")
    resend.add_argument(
        "--destination", metavar="NAME", help="only this destination (default: every one)"
    )
    resend.set_defaults(run=_resend)


def _add_reprocess(commands: _Commands) -> None:
    """``reprocess``: a series computed again, optionally with a person's AIF/VOF."""
    reprocess = commands.add_parser(
        "reprocess",
        help="compute a series again (a new version), e.g. with a person's AIF/VOF",
    )
    _with_config(reprocess)
    reprocess.add_argument("--series", metavar="UID", required=True)
    for flag, what in (("--aif", "arterial input"), ("--vof", "venous output")):
        reprocess.add_argument(
            flag,
            type=_zyx,
            default=None,
            metavar="Z,Y,X",
            help=f"{what} location: slice, row, column (0-based voxel indices)",
        )
    _add_region(reprocess)
    reprocess.set_defaults(run=_reprocess)


def _add_purge(commands: _Commands) -> None:
    """``purge``: what retention allows deleted now, or only listed with ``--dry-run``."""
    purge = commands.add_parser(
        "purge", help="delete what retention allows now (storage.retention), print what it freed"
    )
    _with_config(purge)
    purge.add_argument(
        "--dry-run", action="store_true", help="print what would be freed; delete nothing"
    )
    purge.set_defaults(run=_purge)


def _add_user(commands: _Commands) -> None:
    """``user add|remove|list``: the web console's users file."""
    user = commands.add_parser(
        "user", help="the web console's users (http.auth.mode: users; http.auth.users_file)"
    )
    user_commands = user.add_subparsers(dest="user_command", required=True)
    for name, what in (
        (
            "add",
            "add a user, or give one a new password (asked for; read from stdin when "
            "it is not a terminal)",
        ),
        ("remove", "remove a user (signed out at their next request)"),
        ("list", "list the users' names"),
    ):
        sub = user_commands.add_parser(name, help=what)
        _with_config(sub)
        if name != "list":
            sub.add_argument("name", metavar="NAME")
        sub.set_defaults(run=_user)


def _add_config(commands: _Commands) -> None:
    """``config check|example``: a configuration validated, or the reference one printed."""
    config = commands.add_parser("config", help="configuration tools")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser(
        "check",
        help="validate a configuration file and what it names (ports, database, destinations); "
        "exit 2 on a problem",
    )
    check.add_argument("path", type=Path)
    check.add_argument(
        "--connect", action="store_true", help="also connect to the database (PostgreSQL)"
    )
    check.add_argument(
        "--echo",
        action="store_true",
        help="also send a C-ECHO to each destination; exit 1 if one does not answer",
    )
    check.set_defaults(run=_config_check)
    example = config_commands.add_parser(
        "example", help="print the reference configuration (every key, its default, a comment)"
    )
    example.add_argument(
        "--root",
        type=Path,
        default=None,
        metavar="FOLDER",
        help="absolute folder for storage.root and the SQLite database (e.g. /var/lib/ctp-node)",
    )
    example.set_defaults(run=_config_example)


def _zyx(text: str) -> tuple[int, int, int]:
    try:
        z, y, x = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected Z,Y,X voxel indices, got {text!r}") from None
    return z, y, x


def _add_region(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--region",
        type=_region,
        default=None,
        metavar="Z,Y,X,R",
        help="report each map's statistics in this region too: a sphere of radius R mm around "
        "slice, row, column Z,Y,X (0-based voxel indices of the source images)",
    )


def _region(text: str) -> UserRegion:
    try:
        return parse_region(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _load(path: Path | None):  # type: ignore[no-untyped-def]
    return load_config(path if path is not None else default_config_path())


def _serve(args: argparse.Namespace) -> int:
    _one_blas_thread()  # inherited by the worker processes serve starts
    from ctp_node.service import Node
    from ctp_node.startup import refuse_unusable_listener

    config = _load(args.config)
    _configure_logging(args, config)
    refuse_unusable_listener(config)  # a port in use, a bind address of another machine
    node = Node(config)
    try:
        node.start()
    except BaseException:
        node.stop()
        raise
    _wait_for_signal(node.stop_event)
    node.stop()
    return 0


def _worker(args: argparse.Namespace) -> int:
    _one_blas_thread()
    from ctp_node.service import run_workers
    from ctp_node.wiring import perfusion_parameters

    config = _load(args.config)
    _configure_logging(args, config)
    perfusion_parameters(config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        run_workers(config, stop)
    except KeyboardInterrupt:
        stop.set()
    return 0


def _wait_for_signal(stop: threading.Event) -> None:
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        stop.set()


def _one_blas_thread() -> None:
    """Before numpy loads: one BLAS thread unless the administrator says otherwise. The
    engine's matrix products are small; on a loaded machine OpenBLAS's own threads made them
    4-10x slower (bench/engine.py), and parallelism comes from worker processes and the
    engine's own threads. How OpenBLAS splits a product among its threads changes the last
    bit of some results, so ``process`` and the workers use the same setting: the same
    series gives the same maps either way."""
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")


def _process(args: argparse.Namespace) -> int:
    """Each series of the inputs in turn, one line as it starts and one for its outcome: maps,
    skipped (not a perfusion acquisition, as ``serve`` would ignore it), or failed (a perfusion
    acquisition without maps: a failure notice is written). Exit 0 when every perfusion series
    has its maps, 1 when one failed or none was found, 2 when the inputs hold no DICOM file."""
    _one_blas_thread()
    from ctp_node.pipeline import RESULTS_JSON, PipelineSettings, group_files_by_series

    settings = PipelineSettings()
    if args.config is not None:
        from ctp_node.wiring import job_context

        settings = job_context(load_config(args.config)).settings
    try:
        groups, skipped = group_files_by_series(args.inputs)
    except FileNotFoundError as exc:
        print(f"ctp-node process: {exc}", file=sys.stderr)
        return 2
    for line in skipped:
        print(f"skipped {line}")
    if not groups:
        print("ctp-node process: no DICOM files found in the inputs", file=sys.stderr)
        return 2
    results = []
    for number, (series_uid, files) in enumerate(groups.items(), start=1):
        images = f"{files.count} image{'s' if files.count != 1 else ''}"
        print(f"series {number} of {len(groups)}: {series_uid} ({images}) ...")
        out = args.out if len(groups) == 1 else args.out / series_uid
        results.append(_process_one(series_uid, files, out, settings, args))
    if len(groups) > 1:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / RESULTS_JSON).write_text(json.dumps(results, indent=2) + "\n")
    computed = sum("outputs" in r for r in results)
    failed = sum("error" in r for r in results)
    print(
        f"{len(groups)} series: {computed} with maps, {failed} failed, "
        f"{len(groups) - computed - failed} skipped (not perfusion)"
    )
    if computed + failed == 0:
        print("ctp-node process: no perfusion acquisition among the inputs", file=sys.stderr)
    return 0 if failed == 0 and computed > 0 else 1


def _process_one(series_uid, files, out: Path, settings, args: argparse.Namespace) -> dict:  # type: ignore[no-untyped-def]
    """One series of ``process``: its outcome printed, its entry of the results returned."""
    from ctp_node.pipeline import AcquisitionUnusableError, process_series, write_failure_notice
    from ctp_node.result_table import print_result

    examination = files.examine(settings.min_time_points)
    if examination.verdict == "other":
        print(f"  skipped: not a perfusion acquisition: {examination.reason}")
        return {"series_instance_uid": series_uid, "skipped": examination.reason}
    if examination.verdict == "unreadable":
        print(f"  failed: cannot be examined: {examination.reason}")
        return {"series_instance_uid": series_uid, "error": examination.reason}
    try:
        processed = process_series(
            files.ct,
            out,
            settings,
            aif_zyx=args.aif,
            vof_zyx=args.vof,
            profile=args.profile,
            region=args.region,
        )
    except AcquisitionUnusableError as exc:
        notice = write_failure_notice(files.ct, out, str(exc), settings.report)
        print(f"  failed: no maps: {exc}")
        print(f"  failure notice: {len(notice)} DICOM objects in {out}")
        return {"series_instance_uid": series_uid, "error": str(exc)}
    print(f"  maps: {len(processed.outputs)} DICOM objects in {out}")
    print_result(processed.summary, out)
    return processed.summary


def _phantom(args: argparse.Namespace) -> int:

    from ctp_node.demo import write_phantom_study
    from ctp_node.phantom import PhantomSpec, make_phantom
    from ctp_node.phantom.dicom import StudyIdentity

    spec = PhantomSpec(
        matrix=args.matrix,
        slices=args.slices,
        pixel_spacing_mm=args.pixel_spacing or FIELD_OF_VIEW_MM / args.matrix,
        slice_thickness_mm=args.slice_thickness,
        duration_s=args.duration,
        interval_s=args.interval,
        noise_hu=args.noise,
        residue=args.residue,
        sampling=args.sampling,
        motion_mm=args.motion,
        seed=args.seed,
    )
    phantom = make_phantom(spec)
    paths = write_phantom_study(phantom, args.out_dir, StudyIdentity.new())
    print(
        f"{len(paths)} CT images in {args.out_dir / 'dicom'}; truth in "
        f"{args.out_dir / 'truth.json'} and truth.npz"
    )
    return 0


def _duration(text: str) -> float:
    """``90s``, ``30m``, ``2h``, ``1d`` (or a plain number of seconds) → seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an age such as 90s, 30m, 2h or 1d, got {text!r}"
        ) from None


def _status(args: argparse.Namespace) -> int:
    from ctp_node.status import StatusFilter, print_status

    chosen = StatusFilter(series=args.series, since_s=args.since, failed=args.failed)
    if args.audit or args.console:
        from ctp_node.audit_trail import print_audit, print_console_audit

        show = print_console_audit if args.console else print_audit
        return show(_load(args.config), as_json=args.json, only=chosen)
    return print_status(_load(args.config), as_json=args.json, only=chosen)


def _resend(args: argparse.Namespace) -> int:
    from ctp_node.operations import resend

    def run(db, config) -> str:  # type: ignore[no-untyped-def]
        done = resend(
            db, config, job_id=args.job, series_uid=args.series, destination=args.destination
        )
        return (
            f"job {done.job_id} (version {done.version}): {done.queued} export(s) queued to "
            f"{', '.join(done.destinations)}; `ctp-node status --series` follows them"
        )

    return _operator_command("resend", args, run)


def _reprocess(args: argparse.Namespace) -> int:
    from ctp_node.operations import reprocess

    def run(db, config) -> str:  # type: ignore[no-untyped-def]
        job_id = reprocess(
            db,
            config,
            series_uid=args.series,
            aif_zyx=args.aif,
            vof_zyx=args.vof,
            region=args.region,
        )
        return (
            f"series {args.series} queued as job {job_id}; the node's workers compute it, and "
            "its result supersedes the earlier one if anything differs"
        )

    return _operator_command("reprocess", args, run)


def _operator_command(name: str, args: argparse.Namespace, run) -> int:  # type: ignore[no-untyped-def]
    """Run an operator request against the node's database: its summary on stdout and exit 0,
    or why it was refused on stderr and exit 2."""
    from ctp_node.operations import OperatorError
    from ctp_node.store import open_database

    config = _load(args.config)
    db = open_database(config.database.url, database_password(config.database), must_exist=True)
    try:
        print(run(db, config))
    except OperatorError as exc:
        print(f"ctp-node {name}: {exc}", file=sys.stderr)
        return 2
    finally:
        db.dispose()
    return 0


def _user(args: argparse.Namespace) -> int:
    """``user add|remove|list``: exit 2 with a sentence when refused."""
    from ctp_node.http.users import UsersFileError, add_user, read_users, remove_user

    path = _load(args.config).http.auth.users_file
    if path is None:
        print(
            "ctp-node user: http.auth.users_file is not set in the configuration; set it (and "
            "http.auth.mode: users) first",
            file=sys.stderr,
        )
        return 2
    try:
        if args.user_command == "list":
            print("\n".join(sorted(read_users(path))))
        elif args.user_command == "remove":
            remove_user(path, args.name)
            print(f"removed {args.name} from {path}")
        else:
            existed = add_user(path, args.name, _read_password())
            print(f"{'new password for' if existed else 'added'} {args.name} in {path}")
    except UsersFileError as exc:
        print(f"ctp-node user {args.user_command}: {exc}", file=sys.stderr)
        return 2
    return 0


def _read_password() -> str:
    """A new password: asked twice on a terminal, else the first line of standard input."""
    from ctp_node.http.users import UsersFileError

    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    import getpass

    password = getpass.getpass("password: ")
    if getpass.getpass("again: ") != password:
        raise UsersFileError("the two passwords differ; nothing changed")
    return password


def _purge(args: argparse.Namespace) -> int:
    from ctp_node.retention.purge import purge

    return purge(_load(args.config), dry_run=args.dry_run)


def _config_check(args: argparse.Namespace) -> int:
    """Problems (exit 2), or "valid" with any warnings: what is allowed but probably not
    meant (exit 0); with ``--echo``, exit 1 when a destination does not answer. Never prints
    a password."""
    from ctp_node.startup import EXIT_ATTENTION, EXIT_CONFIGURATION, echo_destinations, preflight

    problems = check_config(args.path)
    if not problems:
        config = load_config(args.path)
        found = preflight(config, connect=args.connect)
        problems, warnings = found.problems, found.warnings
    if problems:
        print(f"{args.path}: {len(problems)} problem(s)")
        for problem in problems:
            print(f"  {problem}")
        return EXIT_CONFIGURATION
    print(f"{args.path}: valid" + (f", with {len(warnings)} warning(s)" if warnings else ""))
    for warning in warnings:
        print(f"  warning: {warning}")
    if not args.echo:
        return 0
    answered = True
    for key_path, result in echo_destinations(config):
        print(f"  {key_path}: {result.message}")
        answered = answered and result.answered
    return 0 if answered else EXIT_ATTENTION


def _config_example(args: argparse.Namespace) -> int:
    from ctp_node.config import reference_config_text

    try:
        text = reference_config_text(root=args.root)
    except ValueError as exc:
        print(f"ctp-node config example: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ctp_node.demo import run_demo

    return run_demo(args.out, timeout_s=args.timeout)
