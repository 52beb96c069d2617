"""Speed and peak memory of the perfusion engine on large acquisitions.

Prints one table (wall time of :func:`compute_perfusion`, peak RSS of the process and peak
traced numpy allocations). Run: ``python bench/engine.py`` (a report, not a pass/fail test).
"""

from __future__ import annotations

import resource
import sys
import time
import tracemalloc

from ctp_node.perfusion import PhantomSpec, compute_perfusion, make_phantom

#: Wall time in s of the previous engine (0.2: per-slice TIPS on the full curves, thresholds
#: tried one after another), measured on the same 2-core machine, for comparison.
PREVIOUS_S = {"256²×16×40": 17.7, "512²×32×40": 129.5}

CASES = {
    "256²×16×40": PhantomSpec(
        matrix=256, slices=16, pixel_spacing_mm=0.86, interval_s=1.5, duration_s=58.5
    ),
    "512²×32×40": PhantomSpec(
        matrix=512, slices=32, pixel_spacing_mm=0.43, interval_s=1.5, duration_s=58.5
    ),
}


def main() -> None:
    print(
        f"{'acquisition':<14}{'frames':>7}{'before s':>10}{'time s':>9}{'traced peak GB':>16}"
        f"{'RSS GB':>9}{'input GB':>10}"
    )
    for name, spec in CASES.items():
        phantom = make_phantom(spec)
        acq = phantom.acquisition
        tracemalloc.start()
        start = time.perf_counter()
        compute_perfusion(acq)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        print(
            f"{name:<14}{acq.hu.shape[0]:>7}{PREVIOUS_S.get(name, float('nan')):>10.1f}"
            f"{elapsed:>9.1f}{peak / 1024**3:>16.2f}"
            f"{rss_gb:>9.2f}{acq.hu.nbytes / 1024**3:>10.2f}"
        )
        sys.stdout.flush()
        del phantom, acq
    print(
        "traced peak: numpy allocations during compute_perfusion (input excluded); "
        "RSS: process maximum so far, including the phantom.\nTimes depend on the machine's "
        "load and on BLAS threading (OPENBLAS_NUM_THREADS=1 is faster on 2 shared cores)."
    )


if __name__ == "__main__":
    main()
