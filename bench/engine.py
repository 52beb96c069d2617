"""Speed and peak memory of the perfusion engine on large acquisitions.

Prints one table: wall time of :func:`compute_perfusion` (untraced: tracemalloc slows every
numpy allocation), then peak traced numpy allocations of a second, traced run, and the peak
RSS of the process. With ``--reference DIR`` (e.g. a ``git worktree`` of an earlier commit),
that tree's engine is timed on the same cases in the same session, one after the other, for
a side-by-side comparison on this (noisy) machine.

Run: ``OPENBLAS_NUM_THREADS=1 python bench/engine.py [--reference DIR] [--repeat N]``
(a report, not a pass/fail test).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc

from ctp_node.perfusion import compute_perfusion

try:
    from ctp_node.phantom import PhantomSpec, make_phantom
except ImportError:  # a --reference tree from before the phantom had a package of its own
    from ctp_node.perfusion.phantom import PhantomSpec, make_phantom  # type: ignore[no-redef]

CASES = {
    "256²×16×40": dict(
        matrix=256, slices=16, pixel_spacing_mm=0.86, interval_s=1.5, duration_s=58.5
    ),
    "512²×32×40": dict(
        matrix=512, slices=32, pixel_spacing_mm=0.43, interval_s=1.5, duration_s=58.5
    ),
}


def _times(case: str, repeat: int, traced: bool) -> dict[str, float | list[float]]:
    """Wall times (s) of ``repeat`` runs of the engine on ``case``; with ``traced``, also
    the peak traced allocation (GB) of one more run and the process's peak RSS (GB)."""
    phantom = make_phantom(PhantomSpec(**CASES[case]))
    acq = phantom.acquisition
    compute_perfusion(acq)  # warm-up: imports, thread pools
    out: dict[str, float | list[float]] = {
        "input_gb": acq.hu.nbytes / 1024**3,
        "frames": acq.hu.shape[0],
    }
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        compute_perfusion(acq)
        times.append(time.perf_counter() - start)
    out["times"] = times
    if traced:
        tracemalloc.start()
        compute_perfusion(acq)
        out["traced_gb"] = tracemalloc.get_traced_memory()[1] / 1024**3
        tracemalloc.stop()
        out["rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return out


def _reference(tree: str, case: str, repeat: int) -> list[float]:
    """Times of the engine of the source tree ``tree`` on ``case``, in a child process."""
    env = {**os.environ, "PYTHONPATH": os.path.abspath(tree)}
    child = subprocess.run(
        [sys.executable, __file__, "--case", case, "--repeat", str(repeat)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(child.stdout.strip().splitlines()[-1])["times"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", help="source tree of an engine to time alongside")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per case")
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # child mode: times only, as JSON
        print(json.dumps(_times(args.case, args.repeat, traced=False)))
        return
    ref = "reference s" if args.reference else ""
    print(
        f"{'acquisition':<14}{'frames':>7}{'time s':>14}{ref:>16}{'traced peak GB':>16}"
        f"{'RSS GB':>9}{'input GB':>10}"
    )
    for case in CASES:
        m = _times(case, args.repeat, traced=True)
        ours = "/".join(f"{t:.1f}" for t in m["times"])
        theirs = ""
        if args.reference:
            theirs = "/".join(f"{t:.1f}" for t in _reference(args.reference, case, args.repeat))
        print(
            f"{case:<14}{m['frames']:>7.0f}{ours:>14}{theirs:>16}{m['traced_gb']:>16.2f}"
            f"{m['rss_gb']:>9.2f}{m['input_gb']:>10.2f}"
        )
        sys.stdout.flush()
    print(
        "time: each untraced run after a warm-up run; traced peak: numpy allocations during "
        "one more, traced run (input excluded); RSS: process maximum, including the phantom.\n"
        "Times depend on the machine's load and on BLAS threading (OPENBLAS_NUM_THREADS=1 is "
        "faster on 2 shared cores)."
    )


if __name__ == "__main__":
    main()
