"""Soak: does ``ctp-node serve`` stay on the air, and lose nothing, when things go wrong?

Everything runs against a real ``ctp-node serve`` (this source tree's code; each part writes
its configuration to a YAML file) with DCMTK: ``storescu``/``echoscu`` are the scanner
(:mod:`scanner`), ``storescp +uf`` (every arrival kept under its own name) is the PACS
(:mod:`peers`). Prints markdown tables, no pass/fail: these machines are small and shared, so
read the figures against the reference measured in the same run.

- **kill**: ``serve`` is killed (SIGKILL) during ingest, processing or sending, in turn, a new
  study each trial, then started again. Counts what storescu had acknowledged and whether it is
  recorded and readable after the restart (acknowledged but lost), duplicate spool files, the
  result versions delivered and how many times each output arrived. After a kill during ingest
  the scanner sends the whole study again, as it would after a failed send. The killed serve's
  fork server and worker are watched (30 s in the first trial, 2 s after), then killed, as
  systemd or Docker would.
- **outage**: the PACS is stopped, a study sent and processed; the PACS comes back after the
  outage (at least one send has failed by then). Outputs pending during it, and the time from
  the PACS being back to all delivered (the node's default send back-off, 30 s doubling up to
  600 s, decides it; ``--quick`` uses a 5 s back-off).
- **fuzz** (:mod:`soak_fuzz`, inputs from :mod:`fuzz`): about 100 hostile connections at once
  (raw PDUs, broken data sets, huge lengths, deep sequences, idle and half-open connections)
  while a prober runs DCMTK ``echoscu`` and ``storescu`` (one small CT image) every second.
  Reference: the same prober on the same node with no hostile traffic, first. Probe latency and
  failures, the node's RSS, threads and file descriptors before, during and after, how long it
  takes to answer C-ECHO again, tracebacks and log lines.
- **disk**: the node's storage and database on a small tmpfs (when run as root; otherwise
  ``storage.min_free_bytes`` set just under the free space of the real disk), filled halfway
  through a study. Statuses storescu got, acknowledged instances lost; then space is freed, the
  study sent again, outputs delivered.

Run from the repository root: ``PYTHONPATH=. python bench/soak.py [--part kill|outage|fuzz|disk]
[--seed 0] [--quick]`` (``--part`` may be repeated; default all). A full run takes about 30
minutes on a 2-core machine; ``--quick`` (3 kill trials, a 20 s outage, 500 fuzz inputs) about 5.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from peers import Node, markdown_table, wait_for
from pydicom.uid import generate_uid
from scanner import send_study
from soak_fuzz import fuzz

from ctp_node.demo import write_phantom_study
from ctp_node.phantom import PhantomSpec, make_phantom
from ctp_node.phantom.dicom import StudyIdentity


def emit(text: str) -> None:
    print(text, flush=True)


def note(text: str) -> None:
    print(f"  … {text}", file=sys.stderr, flush=True)


# --- studies ---------------------------------------------------------------------------------


@dataclass
class Study:
    files: list[Path]
    uids: dict[str, str]  # file → SOP Instance UID
    study_uid: str
    series_uid: str
    bytes: int


def phantom_study(folder: Path, matrix: int, slices: int) -> list[Path]:
    spec = PhantomSpec(matrix=matrix, slices=slices, pixel_spacing_mm=220.0 / matrix)
    return write_phantom_study(make_phantom(spec), folder, StudyIdentity.new())


def copy_study(template: list[Path], folder: Path, label: str) -> Study:
    """The template study with new Study, Series and SOP Instance UIDs (derived from
    ``label``, so a seed gives the same UIDs every run)."""
    folder.mkdir(parents=True)
    study_uid = generate_uid(entropy_srcs=[label, "study"])
    series_uid = generate_uid(entropy_srcs=[label, "series"])
    files, uids = [], {}
    for path in template:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[label, path.name])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out = folder / path.name
        ds.save_as(out, enforce_file_format=True)
        files.append(out)
        uids[str(out)] = str(ds.SOPInstanceUID)
    return Study(files, uids, study_uid, series_uid, sum(f.stat().st_size for f in files))


# --- what the node and the PACS hold ---------------------------------------------------------


def readable(path: Path) -> bool:
    """The file is a DICOM image whose pixel data is all there."""
    try:
        ds = pydicom.dcmread(path)
        return len(ds.PixelData) >= ds.Rows * ds.Columns * ds.BitsAllocated // 8
    except Exception:
        return False


def acknowledged_kept(node: Node, uids: Iterable[str]) -> tuple[int, int]:
    """(recorded, recorded and readable) among the SOP Instance UIDs ``uids``."""
    uids = list(uids)
    rows = []
    for start in range(0, len(uids), 500):
        chunk = uids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows += node.query(
            f"SELECT path FROM instances WHERE sop_instance_uid IN ({marks})", *chunk
        )
    return len(rows), sum(readable(node.storage_root / path) for (path,) in rows)


def spool_copies(node: Node, study_uid: str) -> tuple[int, int]:
    """(files, distinct SOP Instance UIDs) below the study's spool folder."""
    files = [p for p in (node.storage_root / "spool" / study_uid).rglob("*") if p.is_file()]
    uids = {
        str(
            pydicom.dcmread(
                p, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]
            ).SOPInstanceUID
        )
        for p in files
    }
    return len(files), len(uids)


#: PACS file → (Study, SOP Instance UID): storescp +uf never rewrites a file.
_PACS_INDEX: dict[Path, tuple[str, str]] = {}


def pacs_arrivals(node: Node, study_uid: str) -> collections.Counter:
    """How many times each output SOP Instance UID of the study arrived in PACS."""
    arrivals: collections.Counter = collections.Counter()
    for path in node.pacs_dir.iterdir():
        if path not in _PACS_INDEX:
            try:
                ds = pydicom.dcmread(
                    path,
                    stop_before_pixels=True,
                    specific_tags=["StudyInstanceUID", "SOPInstanceUID"],
                )
                _PACS_INDEX[path] = (str(ds.StudyInstanceUID), str(ds.SOPInstanceUID))
            except Exception:
                continue  # being written
        if _PACS_INDEX[path][0] == study_uid:
            arrivals[_PACS_INDEX[path][1]] += 1
    return arrivals


def latest_delivered(node: Node, study: Study) -> bool:
    """The series' latest job is done, every export of it sent and in PACS."""
    jobs = node.query(
        "SELECT id, state FROM jobs WHERE series_instance_uid = ? ORDER BY id DESC LIMIT 1",
        study.series_uid,
    )
    if not jobs or jobs[0][1] != "done":
        return False
    exports = node.query("SELECT sop_instance_uid, state FROM exports WHERE job_id = ?", jobs[0][0])
    if not exports or any(state != "sent" for _, state in exports):
        return False
    return {uid for uid, _ in exports} <= set(pacs_arrivals(node, study.study_uid))


def delivered_versions(node: Node, study: Study, arrivals: collections.Counter) -> list[int]:
    rows = node.query(
        "SELECT DISTINCT jobs.version, exports.sop_instance_uid FROM exports JOIN jobs ON "
        "jobs.id = exports.job_id WHERE jobs.series_instance_uid = ?",
        study.series_uid,
    )
    return sorted({version for version, uid in rows if uid in arrivals})


def wait_delivered(
    node: Node, study: Study, timeout_s: float
) -> tuple[float | None, collections.Counter]:
    """Seconds until every output of the series' latest job is in PACS (None: not within
    ``timeout_s``), and the arrivals 1 s later."""
    try:
        seconds = wait_for(lambda: latest_delivered(node, study), timeout_s, "outputs in PACS")
    except SystemExit:
        seconds = None
    time.sleep(1.0)
    return seconds, pacs_arrivals(node, study.study_uid)


# --- (a) kill -9 -----------------------------------------------------------------------------

PHASES = ("ingest", "processing", "sending")


def kill_trials(
    root: Path, template: list[Path], trials: int, rng: random.Random, orphan_watch_s: float
) -> list[str]:
    node = Node(
        root / "node",
        ingest={"series_stable_after_s": 120.0},  # completion by the announced size only
        worker={"count": 1},
    )
    rows = []
    try:
        for trial in range(trials):
            phase = PHASES[trial % len(PHASES)]
            study = copy_study(template, root / f"study-{trial}", f"kill-{rng.random()}")
            wait_s = orphan_watch_s if trial == 0 else 2.0
            rows.append(kill_trial(node, study, phase, rng, trial + 1, wait_s))
            note(f"kill trial {trial + 1}/{trials} ({phase}): {rows[-1]}")
    finally:
        node.stop()
    lost = sum(int(row[5]) for row in rows)
    duplicates = sum(int(row[7]) for row in rows)
    extra = sum(int(str(row[10]).split()[0]) for row in rows)
    header = [
        "trial",
        "killed during",
        "state at the kill",
        "acknowledged",
        "recorded + readable after restart",
        "acknowledged but lost",
        "processes of serve left 2 s after the kill"
        + (f" (trial 1: {orphan_watch_s:.0f} s)" if orphan_watch_s != 2.0 else ""),
        "duplicate spool files",
        "versions delivered",
        "outputs in PACS (distinct)",
        "extra copies in PACS (max per output)",
        "restart → C-ECHO, s",
    ]
    summary = ["all", f"{trials} trials", "", "", "", lost, "", duplicates, "", "", extra, ""]
    return [
        markdown_table(
            f"(a) serve killed with SIGKILL, {trials} trials, {len(template)} images per study; "
            "config: worker.count 1, ingest.series_stable_after_s 120 (announced size decides)",
            header,
            [*rows, summary],
        )
    ]


def kill_trial(
    node: Node, study: Study, phase: str, rng: random.Random, trial: int, orphan_wait_s: float
) -> list:
    total = len(study.files)
    series = study.series_uid

    def instances() -> int:
        return node.query("SELECT count(*) FROM instances WHERE series_instance_uid = ?", series)[
            0
        ][0]

    def state() -> str:
        jobs = node.query("SELECT state FROM jobs WHERE series_instance_uid = ?", series)
        exports = node.query(
            "SELECT exports.state FROM exports JOIN jobs ON jobs.id = exports.job_id "
            "WHERE jobs.series_instance_uid = ?",
            series,
        )
        arrived = sum(pacs_arrivals(node, study.study_uid).values())
        text = f"{instances()}/{total} images in; " + (f"job {jobs[-1][0]}" if jobs else "no job")
        if exports:
            sent = sum(s == "sent" for (s,) in exports)
            text += f"; {sent}/{len(exports)} outputs marked sent, {arrived} in PACS"
        return text

    statuses: dict[str, str] = {}
    if phase == "ingest":
        target = rng.randint(total // 10, total * 9 // 10)
        sender = threading.Thread(
            target=lambda: statuses.update(send_study(study.files, node.port))
        )
        sender.start()
        wait_for(lambda: instances() >= target, 120, f"{target} instances")
    else:
        statuses = send_study(study.files, node.port)
        if phase == "processing":
            wait_for(
                lambda: node.query(
                    "SELECT 1 FROM jobs WHERE series_instance_uid = ? AND state = 'running'",
                    series,
                ),
                120,
                "a running job",
            )
            time.sleep(rng.uniform(0.0, 4.0))
        else:
            wait_for(lambda: pacs_arrivals(node, study.study_uid), 240, "a first output in PACS")
            time.sleep(rng.uniform(0.0, 0.3))
    at_kill = state()
    left = node.kill(settle_s=orphan_wait_s)
    if phase == "ingest":
        sender.join(timeout=120)
    acked = [study.uids[f] for f, status in statuses.items() if status == "Success"]
    restart_s = node.start()
    recorded, intact = acknowledged_kept(node, acked)
    if phase == "ingest":  # the scanner's send failed: it sends the study again
        send_study(study.files, node.port)
    delivered_s, arrivals = wait_delivered(node, study, 300)
    files, distinct = spool_copies(node, study.study_uid)
    extra = sum(arrivals.values()) - len(arrivals)
    versions = delivered_versions(node, study, arrivals)
    return [
        trial,
        phase,
        at_kill,
        f"{len(acked)}/{total}",
        f"{recorded} + {intact}",
        len(acked) - intact,
        left,
        files - distinct,
        ", ".join(map(str, versions)) or "none",
        len(arrivals) if delivered_s is not None else f"**{len(arrivals)}, not all in 300 s**",
        f"{extra} ({max(arrivals.values(), default=0)})",
        f"{restart_s:.1f}",
    ]


# --- (b) PACS outage -------------------------------------------------------------------------

SEND_DEFAULTS = {"max_attempts": 150, "retry_backoff_s": 30.0, "retry_backoff_max_s": 600.0}


def outage(root: Path, template: list[Path], outage_s: float, send: dict) -> list[str]:
    """The PACS is down from before the study is sent until ``outage_s`` later, and at least
    until a first send of its outputs failed."""
    node = Node(root / "node", ingest={"series_stable_after_s": 120.0}, send=send)
    study = copy_study(template, root / "study", "outage")

    def exports() -> list[tuple]:
        return node.query(
            "SELECT exports.state, exports.attempts FROM exports JOIN jobs ON "
            "jobs.id = exports.job_id WHERE jobs.series_instance_uid = ?",
            study.series_uid,
        )

    try:
        node.pacs.stop()
        down_at = time.perf_counter()
        statuses = send_study(study.files, node.port)
        acked = sum(s == "Success" for s in statuses.values())
        wait_for(exports, 300, "the outputs")
        ready_s = time.perf_counter() - down_at
        wait_for(lambda: any(a for _, a in exports()), 120, "a first failed send")
        samples = [exports()]
        while time.perf_counter() - down_at < outage_s:
            time.sleep(1.0)
            samples.append(exports())
        node.pacs.start()
        back_at = time.perf_counter()
        wait_s = send["retry_backoff_max_s"] + 180
        delivered_s, arrivals = wait_delivered(node, study, wait_s)
        down_s = back_at - down_at
        final = exports()
    finally:
        node.stop()
    pending = [sum(state == "pending" for state, _ in sample) for sample in samples]
    during = samples[-1]
    backoff = (
        f"send.retry_backoff_s {send['retry_backoff_s']:g} s doubling, at most "
        f"{send['retry_backoff_max_s']:g} s"
    )
    rows = [
        ("PACS down (storescp stopped), s", f"{down_s:.0f}", "at least until a send failed"),
        ("study acknowledged while PACS down", f"{acked}/{len(study.files)}", ""),
        ("PACS down → study sent, computed, outputs queued, s", f"{ready_s:.1f}", ""),
        ("outputs pending during the outage (min–max)", f"{min(pending)}–{max(pending)}",
         f"of {len(during)}"),
        ("attempts per output when PACS came back", max((a for _, a in during), default=0),
         backoff),
        ("outputs failed (gave up) during the outage", sum(s == "failed" for s, _ in during),
         f"send.max_attempts {send['max_attempts']}"),
        ("PACS back → every output delivered, s",
         f"not within {wait_s:.0f} s" if delivered_s is None else f"{delivered_s:.1f}",
         "the next retry after the PACS is back decides"),
        ("outputs delivered", f"{len(arrivals)}/{len(final)}",
         f"{sum(arrivals.values()) - len(arrivals)} extra copies"),
    ]  # fmt: skip
    return [
        markdown_table(f"(b) PACS outage of {outage_s:.0f} s", ["measure", "value", "note"], rows)
    ]


# --- (c) fuzz --------------------------------------------------------------------------------


# --- (d) disk full ---------------------------------------------------------------------------


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def mount_tmpfs(folder: Path, size_bytes: int) -> bool:
    folder.mkdir(parents=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(folder)],
        capture_output=True,
    )
    return done.returncode == 0


def unmount(folder: Path) -> None:
    subprocess.run(["umount", "--lazy", str(folder)], capture_output=True)


def disk_full(root: Path, template: list[Path], quick: bool) -> list[str]:
    rows = []
    tmpfs_size = 256 << 20
    mount = root / "tmpfs"
    on_tmpfs = mount_tmpfs(mount, tmpfs_size)
    variants = [("min_free_bytes", 64 << 20)]
    if on_tmpfs and not quick:
        variants.append(("the file system's end (min_free_bytes 0)", 0))
    try:
        for label, min_free in variants:
            rows.append(
                disk_variant(
                    root / label.split()[0], mount if on_tmpfs else None, template, label, min_free
                )
            )
            note(f"disk: {rows[-1]}")
    finally:
        if on_tmpfs:
            unmount(mount)
    method = (
        f"storage.root and the database on a {tmpfs_size >> 20} MiB tmpfs; a ballast file "
        "leaves room for half the study's bytes above the limit (the database's growth takes "
        "part of it); storescu --no-halt"
        if on_tmpfs
        else "storage.min_free_bytes set at half the study's size under the real disk's free "
        "space (not root: no tmpfs); other processes on the disk move the point where it fills; "
        "storescu --no-halt"
    )
    return [
        markdown_table(
            f"(d) disk full halfway through a study: {method}",
            [
                "limit",
                "images sent",
                "storescu statuses",
                "acknowledged",
                "acknowledged but lost (recorded + readable)",
                "after freeing space: sent again",
                "outputs delivered",
            ],
            rows,
        )
    ]


def disk_variant(
    root: Path, mount: Path | None, template: list[Path], label: str, min_free: int
) -> list:
    study = copy_study(template, root / "study", f"disk-{label}")
    if mount is not None:
        storage = mount / root.name
        node = Node(
            root,
            storage_root=storage,
            storage={"min_free_bytes": min_free},
            ingest={"series_stable_after_s": 120.0},
        )
        ballast = mount / f"ballast-{root.name}"
        room = free_bytes(mount) - min_free - study.bytes // 2
        with ballast.open("wb") as handle:
            handle.truncate(0)
            block = b"\0" * (1 << 20)
            for _ in range(max(0, room) >> 20):
                handle.write(block)
            handle.write(b"\0" * (max(0, room) & ((1 << 20) - 1)))
    else:
        probe_root = root / "node"
        probe_root.mkdir(parents=True)
        min_free = max(0, free_bytes(probe_root) - study.bytes // 2)
        node = Node(
            root, storage={"min_free_bytes": min_free}, ingest={"series_stable_after_s": 120.0}
        )
        ballast = None
    try:
        statuses = send_study(study.files, node.port, halt=False)
        counts = collections.Counter(statuses.values())
        acked = [study.uids[f] for f, s in statuses.items() if s == "Success"]
        recorded, intact = acknowledged_kept(node, acked)
        if ballast is not None:
            ballast.unlink()
        else:  # the limit is the configuration's: lower it by starting again
            node.restart(storage={"min_free_bytes": 0})
        again = send_study(study.files, node.port)
        resent = collections.Counter(again.values())
        delivered_s, arrivals = wait_delivered(node, study, 300)
        _, after_intact = acknowledged_kept(node, acked)
    finally:
        node.stop()
    return [
        f"{label}" + (f" {min_free >> 20} MiB" if min_free else ""),
        len(study.files),
        "; ".join(f"{n} {s}" for s, n in counts.most_common()),
        len(acked),
        f"{len(acked) - intact} ({recorded} + {intact}; after freeing: {after_intact} readable)",
        "; ".join(f"{n} {s}" for s, n in resent.most_common()),
        f"{len(arrivals)} ({sum(arrivals.values()) - len(arrivals)} extra copies)"
        + ("" if delivered_s is not None else ", **not all within 300 s**"),
    ]


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--part",
        choices=["kill", "outage", "fuzz", "disk", "all"],
        action="append",
        help="repeat for several; default all",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--trials", type=int, help="kill trials (20; quick 3)")
    parser.add_argument("--outage", type=float, help="PACS outage, s (180; quick 20)")
    parser.add_argument("--inputs", type=int, help="fuzz inputs (10000; quick 500)")
    parser.add_argument("--connections", type=int, default=100, help="fuzz clients at once")
    parser.add_argument("--matrix", type=int, default=64, help="phantom study: matrix")
    parser.add_argument("--slices", type=int, default=4, help="phantom study: slices")
    args = parser.parse_args()
    parts = [p for p in args.part or [] if p != "all"] or ["kill", "outage", "fuzz", "disk"]
    trials = args.trials or (3 if args.quick else 20)
    outage_s = args.outage or (20.0 if args.quick else 180.0)
    inputs = args.inputs or (500 if args.quick else 10_000)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-ups
    rng = random.Random(args.seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ctp-soak-") as folder:
        root = Path(folder)
        template = phantom_study(root / "template", args.matrix, args.slices)
        for part in parts:
            began = time.perf_counter()
            note(f"part {part}")
            if part == "kill":
                # the first trial waits this long for the killed serve's fork server and
                # workers to end by themselves (later ones 2 s); then they are killed
                watch_s = 2.0 if args.quick else 30.0
                tables = kill_trials(root / "kill", template, trials, rng, watch_s)
            elif part == "outage":
                send = {**SEND_DEFAULTS, **({"retry_backoff_s": 5.0} if args.quick else {})}
                tables = outage(root / "outage", template, outage_s, send)
            elif part == "fuzz":
                tables = fuzz(
                    root / "fuzz",
                    template,
                    args.seed,
                    inputs,
                    args.connections,
                    reference_s=10.0 if args.quick else 30.0,
                    settle_s=20.0 if args.quick else 90.0,
                )
            else:
                tables = disk_full(root / "disk", template, args.quick)
            emit("\n".join(tables))
            note(f"part {part}: {time.perf_counter() - began:.0f} s")
    emit(
        f"\n{len(template)} images per study ({args.matrix}² × {args.slices} slices), seed "
        f"{args.seed}, {time.perf_counter() - started:.0f} s in all"
    )


if __name__ == "__main__":
    main()
