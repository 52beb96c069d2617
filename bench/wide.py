"""Wide-detector studies through the whole job: wall time and peak memory of ``process``.

Writes the phantom as DICOM files (512² pixels of 0.43 mm, ``--frames`` time points over
57 s, 5 mm slices; a study too large to synthesise at once is written slab by slab, each
slab a phantom of its own with its own noise seed), then runs ``python -m ctp_node process``
on the files, as a worker runs a job (load, engine, quality, DICOM outputs), in a child
process whose peak RSS is read from ``wait4``. With ``--reference REF`` (default ``main``;
``--reference ''`` for none) the same study is processed by a ``git worktree`` of that ref
in the same run, alternately, and the two trees' Parametric Maps are compared pixel by pixel.

Run from the repository root: ``PYTHONPATH=. python bench/wide.py [--slices 64 320]
[--frames 20] [--matrix 512]`` (a report, not a pass/fail test). A 320-slice study is
6400 files, 3.4 GB on disk (removed at the end) and, on a 2-core machine, a few minutes
per run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pydicom
from peers import SOURCE_TREE, markdown_table

from ctp_node.phantom import PhantomSpec, make_phantom
from ctp_node.phantom.dicom import StudyIdentity, write_ct_series

FIELD_OF_VIEW_MM = 220.0
#: Slices synthesised at once: the phantom of one slab fits in about 1 GB at 512².
SLAB_SLICES = 32


@dataclass(frozen=True)
class Run:
    """One ``process`` run: wall time, peak RSS and the engine's own timings."""

    wall_s: float
    peak_rss_gb: float
    load_s: float
    compute_s: float
    maps: dict[str, np.ndarray]

    @property
    def summary(self) -> str:
        return f"{self.wall_s:.0f} s · {self.peak_rss_gb:.2f} GB"


def write_study(folder: Path, slices: int, frames: int, matrix: int) -> int:
    """Write a ``frames × slices`` study of ``matrix²`` images below ``folder``; its size in
    bytes."""
    identity = StudyIdentity.new()
    interval_s = 3.0 if frames <= 20 else 57.0 / (frames - 1)
    spacing_mm = FIELD_OF_VIEW_MM / matrix
    for seed, first in enumerate(range(0, slices, SLAB_SLICES)):
        count = min(SLAB_SLICES, slices - first)
        spec = PhantomSpec(
            matrix=matrix,
            slices=count,
            pixel_spacing_mm=spacing_mm,
            interval_s=interval_s,
            duration_s=interval_s * (frames - 1),
            seed=seed,
        )
        slab = make_phantom(spec).acquisition
        positions = np.zeros((count, 3))
        positions[:, 2] = (first + np.arange(count)) * spec.slice_thickness_mm
        write_ct_series(
            replace(slab, slice_positions_mm=positions),
            folder,
            identity=identity,
            first_slice=first,
            series_slices=slices,
        )
    return sum(path.stat().st_size for path in folder.iterdir())


def process(tree: Path, study: Path, out: Path) -> Run:
    """``python -m ctp_node process`` of ``tree`` on ``study``, in a child process."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "ctp_node", "process", str(study), "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    stderr = child.stderr.read().decode(errors="replace") if child.stderr else ""
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall_s = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"process in {tree} failed ({child.returncode}):\n{stderr[-3000:]}")
    summary = json.loads((out / "results.json").read_text())
    maps = {}
    for path in sorted(out.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        if "FloatPixelData" in ds:
            maps[str(ds.SeriesDescription)] = np.frombuffer(ds.FloatPixelData, "<f4").copy()
    shutil.rmtree(out)
    return Run(
        wall_s=wall_s,
        peak_rss_gb=usage.ru_maxrss / 1024**2,
        load_s=summary["timing_s"]["load"],
        compute_s=summary["timing_s"]["compute"],
        maps=maps,
    )


def map_difference(ours: Run, theirs: Run) -> str:
    """How far the two runs' Parametric Maps are apart: "identical" or the largest
    difference relative to each map's largest value."""
    if ours.maps.keys() != theirs.maps.keys():
        return f"different maps: {sorted(ours.maps)} vs {sorted(theirs.maps)}"
    worst = 0.0
    for name, image in ours.maps.items():
        other = theirs.maps[name]
        if image.shape != other.shape:
            return f"{name}: shapes differ"
        scale = max(float(np.abs(other).max()), 1e-12)
        worst = max(worst, float(np.abs(image - other).max()) / scale)
    return "identical" if worst == 0 else f"max difference {worst:.1e} of the map's range"


def reference_tree(ref: str, folder: Path) -> Path:
    """A detached ``git worktree`` of ``ref`` in ``folder``."""
    subprocess.run(
        ["git", "-C", str(SOURCE_TREE), "worktree", "add", "--detach", str(folder), ref],
        check=True,
        capture_output=True,
    )
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, nargs="+", default=[64, 320])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--matrix", type=int, default=512)
    parser.add_argument("--reference", default="main", help="git ref to run alongside ('' none)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per tree and size")
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the studies")
    args = parser.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    work = Path(tempfile.mkdtemp(prefix="ctp-wide-", dir=args.tmp))
    reference = None
    rows = []
    try:
        if args.reference:
            reference = reference_tree(args.reference, work / "reference")
        for slices in args.slices:
            study = work / f"study-{slices}"
            started = time.perf_counter()
            size = write_study(study, slices, args.frames, args.matrix)
            written_s = time.perf_counter() - started
            print(
                f"{args.matrix}² × {slices} × {args.frames}: {slices * args.frames} files, "
                f"{size / 1e9:.1f} GB written in {written_s:.0f} s",
                flush=True,
            )
            ours: list[Run] = []
            theirs: list[Run] = []
            for _ in range(args.repeat):
                if reference is not None:
                    theirs.append(process(reference, study, work / "out"))
                    print(f"  {args.reference}: {theirs[-1].summary}", flush=True)
                ours.append(process(SOURCE_TREE, study, work / "out"))
                print(f"  this tree: {ours[-1].summary}", flush=True)
            shutil.rmtree(study)
            rows.append(_row(args, slices, ours, theirs))
    finally:
        if reference is not None:
            subprocess.run(
                ["git", "-C", str(SOURCE_TREE), "worktree", "remove", "--force", str(reference)],
                check=False,
            )
        shutil.rmtree(work, ignore_errors=True)
    header = ["study", "images", "this tree: time (load + engine) · peak RSS"]
    if args.reference:
        header += [f"{args.reference}: time · peak RSS", "time ratio", "RSS ratio", "maps"]
    print(
        markdown_table(
            f"`process` of a wide-detector phantom (best of {args.repeat}; "
            f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']})",
            header,
            rows,
        )
    )


def _row(args: argparse.Namespace, slices: int, ours: list[Run], theirs: list[Run]) -> list:
    best = min(ours, key=lambda r: r.wall_s)
    peak = max(r.peak_rss_gb for r in ours)
    row = [
        f"{args.matrix}² × {slices} × {args.frames}",
        slices * args.frames,
        f"{best.wall_s:.0f} s ({best.load_s:.0f} + {best.compute_s:.0f}) · {peak:.2f} GB",
    ]
    if theirs:
        other = min(theirs, key=lambda r: r.wall_s)
        other_peak = max(r.peak_rss_gb for r in theirs)
        row += [
            f"{other.wall_s:.0f} s ({other.load_s:.0f} + {other.compute_s:.0f}) · "
            f"{other_peak:.2f} GB",
            f"{best.wall_s / other.wall_s:.2f}",
            f"{peak / other_peak:.2f}",
            map_difference(best, other),
        ]
    return row


if __name__ == "__main__":
    main()
