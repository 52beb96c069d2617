"""How long building and writing a study's outputs takes, against a reference tree's code.

A 512² × 16-slice phantom study (31 time points) is written, loaded and computed once, outside
the timing. Then each output kind is built and written (into a temporary folder): the five
Parametric Maps, each Secondary Capture page (rendered, made a DICOM object, written), the
whole summary series drawn in this process, the SR, ``summary.png``, all of it
(``pipeline.write_outputs``, which also writes ``results.json``), and what ``serve``'s worker
writes before it queues the outputs for PACS (the same without ``summary.png``; the summary
pages are drawn in other processes, one per usable CPU, while the maps and the SR are built).

The reference is the same timing with another commit's code (default ``main``), extracted with
``git archive`` into a temporary folder and run in a child process with ``PYTHONPATH`` on it.
This tree's code also runs in a child process, and the two alternate round by round, so both
see the same load on a shared machine. Each child loads the computed study, builds everything
once untimed (imports, font cache), then times one round (wall and CPU time). The table gives
the median over the rounds, and the peak RSS of each child (it holds the 0.5 GB study).

Run from the repository root: ``PYTHONPATH=. python bench/outputs.py [--reference main]
[--rounds 3]`` (a report, not a pass/fail test).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from peers import markdown_table

#: The source tree this bench belongs to.
SOURCE_TREE = Path(__file__).resolve().parents[1]
#: The study: 512² × 16 slices, a frame every 2 s for 60 s (as bench/latency.py).
STUDY = dict(matrix=512, slices=16, interval_s=2.0, duration_s=60.0, pixel_spacing_mm=220 / 512)


def write_computed_study(folder: Path) -> Path:
    """Write the phantom study's images, load and compute them; the pickled
    ``ComputedSeries`` (what ``write_outputs`` takes) is in the returned file."""
    from ctp_node.demo import write_phantom_study
    from ctp_node.phantom import PhantomSpec, make_phantom
    from ctp_node.phantom.dicom import StudyIdentity
    from ctp_node.pipeline import PipelineSettings, compute_series

    files = write_phantom_study(
        make_phantom(PhantomSpec(**STUDY)), folder / "study", StudyIdentity.new()
    )
    computed = compute_series(files, PipelineSettings())
    path = folder / "computed.pickle"
    with path.open("wb") as file:
        pickle.dump(computed, file, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def time_outputs(computed_path: Path, out_dir: Path) -> dict[str, object]:
    """Seconds per output (one timed round after an untimed one) with the ``ctp_node`` on the
    path, and the process's peak RSS (GB)."""
    from ctp_node.pipeline import PipelineSettings, first_version, write_outputs
    from ctp_node.report import (
        build_parametric_maps,
        build_secondary_captures,
        build_structured_report,
    )
    from ctp_node.report import secondary_capture as sc
    from ctp_node.report.quality_page import quality_banner, render_quality_page
    from ctp_node.report.source_headers import with_readable_dates
    from ctp_node.report.summary_pages import render_map_page, render_mismatch_page
    from ctp_node.report.summary_png import write_summary_png

    logging.getLogger("highdicom").setLevel(logging.WARNING)  # the reference's INFO lines
    with computed_path.open("rb") as file:
        computed = _ReferenceUnpickler(file).load()
    settings = PipelineSettings()
    report = replace(settings.report, version=first_version(computed, settings))
    result, acquisition, quality = computed.result, computed.loaded.acquisition, computed.quality
    sources = [with_readable_dates(header)[0] for header in computed.loaded.source_images]
    source, notes = sources[0], list(computed.loaded.notes)
    style = {
        "footer": sc._footer(result, report),
        "research": report.content_qualification != "PRODUCT",
        "version": report.version.statement(),
    }

    def save(datasets: list, kind: str) -> None:  # type: ignore[type-arg]
        for index, dataset in enumerate(datasets):
            dataset.save_as(out_dir / f"{kind}-{index}.dcm", enforce_file_format=True)

    def page(name: str, render: Callable[[], object]) -> None:
        number = 1 + ["mismatch", *sc.MAP_PAGES, "quality"].index(name)
        dataset = sc.sc_page(
            render(),  # type: ignore[arg-type]
            source,
            report,
            kind=sc.KIND,
            number=number,
            series_number=report.series_number_start + sc.SERIES_NUMBER_OFFSET,
            series_description=report.series_description("CTP summary"),
            page_description=name,
            orientation=acquisition.orientation,
        )
        save([dataset], f"page-{name}")

    steps: dict[str, Callable[[], object]] = {
        "Parametric Maps (5)": lambda: save(
            build_parametric_maps(result, sources, report), "parametric_map"
        ),
        "SC page mismatch": lambda: page(
            "mismatch",
            lambda: render_mismatch_page(
                result, acquisition, source, quality_banner=quality_banner(quality), **style
            ),
        ),
        **{
            f"SC page {name}": (
                lambda name=name: page(
                    name, lambda: render_map_page(name, result, acquisition, source, **style)
                )
            )
            for name in sc.MAP_PAGES
        },
        "SC page quality": lambda: page(
            "quality",
            lambda: render_quality_page(
                result, acquisition, source, notes=notes, quality=quality, **style
            ),
        ),
        "SC series (7 pages)": lambda: save(
            build_secondary_captures(
                result, acquisition, sources, report, notes=notes, quality=quality
            ),
            "secondary_capture",
        ),
        "SR": lambda: save(
            [
                build_structured_report(
                    result,
                    sources,
                    report,
                    acquisition_facts=acquisition.facts,
                    notes=notes,
                    quality=quality,
                )
            ],
            "structured_report",
        ),
        "summary.png": lambda: write_summary_png(
            result, acquisition, {"volumes": _volumes(result)}, out_dir / "summary.png"
        ),
        "all outputs (write_outputs)": lambda: write_outputs(computed, out_dir / "all", report),
        # what serve's worker does before the outputs are queued for PACS (summary.png after)
        "outputs to send (worker)": lambda: write_outputs(
            computed, out_dir / "worker", report, summary_png=False
        ),
    }
    rss_before_gb = _rss_gb()
    times, cpu_times = {}, {}
    for timed in (False, True):
        for name, step in steps.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            step()
            if timed:
                times[name] = time.perf_counter() - started
                cpu_times[name] = time.process_time() - cpu_started
    return {
        "times": times,
        "cpu_times": cpu_times,
        "rss_gb": _rss_gb(),
        "rss_study_gb": rss_before_gb,
    }


#: Modules of this tree that a reference tree may have under their former names.
_FORMER_MODULES = {
    "ctp_node.qc.limits": "ctp_node.perfusion.quality_limits",  # before issue 32's qc/
    "ctp_node.qc.checks": "ctp_node.perfusion.quality",
}


class _ReferenceUnpickler(pickle.Unpickler):
    """Loads the study this tree computed into a reference tree that had some of its classes
    in other modules."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return super().find_class(module, name)
        except ModuleNotFoundError:
            if module not in _FORMER_MODULES:
                raise
            return super().find_class(_FORMER_MODULES[module], name)


def _volumes(result) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """What ``summary.png`` prints of ``results.json``'s volumes."""
    v = result.volumes
    return {
        "core_ml": v.core_ml,
        "tmax6_ml": v.tmax6_ml,
        "tmax10_ml": v.tmax10_ml,
        "mismatch_ml": v.mismatch_ml,
        "mismatch_ratio": v.mismatch_ratio,
        "hypoperfusion_intensity_ratio": v.hypoperfusion_intensity_ratio,
        "target_mismatch": v.target_mismatch,
    }


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _child(tree: Path, computed_path: Path, out_dir: Path) -> dict[str, object]:
    """:func:`time_outputs` in a child process with ``tree``'s ``ctp_node`` on the path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    child = subprocess.run(
        [sys.executable, __file__, "--child", str(computed_path), str(out_dir)],
        env={**os.environ, "PYTHONPATH": str(tree), "OPENBLAS_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
    )
    if child.returncode != 0:
        raise SystemExit(f"timing with {tree} failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def _extract(ref: str, folder: Path) -> Path:
    """The files of commit ``ref`` of this repository, in ``folder``."""
    folder.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(SOURCE_TREE), "archive", ref], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default="main", help="git ref to time alongside")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each tree")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # child mode: times only, as JSON
        print(json.dumps(time_outputs(Path(args.child[0]), Path(args.child[1]))))
        return

    with tempfile.TemporaryDirectory(prefix="ctp-outputs-") as folder:
        root = Path(folder)
        reference = _extract(args.reference, root / "reference")
        started = time.perf_counter()
        computed_path = write_computed_study(root)
        print(f"study written and computed in {time.perf_counter() - started:.0f} s (untimed)")
        runs: dict[str, list[dict[str, object]]] = {"this tree": [], args.reference: []}
        for round_ in range(args.rounds):
            for label, tree in (("this tree", SOURCE_TREE), (args.reference, reference)):
                runs[label].append(_child(tree, computed_path, root / f"out-{label}-{round_}"))
                sys.stdout.flush()

    def median(label: str, name: str, kind: str = "times") -> float:
        return statistics.median(run[kind][name] for run in runs[label])  # type: ignore[index]

    names = list(runs["this tree"][0]["times"])  # type: ignore[call-overload]
    rows = []
    for name in names:
        ours, theirs = median("this tree", name), median(args.reference, name)
        ours_cpu = median("this tree", name, "cpu_times")
        theirs_cpu = median(args.reference, name, "cpu_times")
        rows.append(
            (
                name,
                f"{ours:.2f}",
                f"{theirs:.2f}",
                f"{theirs / ours:.1f}×",
                f"{ours_cpu:.2f}",
                f"{theirs_cpu:.2f}",
            )
        )
    rss = {
        label: max(float(run["rss_gb"]) for run in runs[label])  # type: ignore[arg-type]
        for label in runs
    }
    study = float(runs["this tree"][0]["rss_study_gb"])  # type: ignore[arg-type]
    rows.append(
        (
            f"peak RSS, GB (with the study loaded: {study:.2f})",
            f"{rss['this tree']:.2f}",
            f"{rss[args.reference]:.2f}",
            "",
            "",
            "",
        )
    )
    print(
        markdown_table(
            f"Outputs of a 512² × 16-slice study: seconds, median of {args.rounds} rounds",
            [
                "output (built and written)",
                "this tree s",
                f"{args.reference} s",
                f"{args.reference} ÷ this tree",
                "this tree CPU s",
                f"{args.reference} CPU s",
            ],
            rows,
        )
    )
    print(
        "s: wall time; CPU s: the process's CPU time (steadier on a shared machine). The SC "
        "page rows include making and writing the page's DICOM object; the series row is the "
        "seven drawn one after the other in this process. CPU s counts this process only, not "
        "the processes that draw the pages in the write_outputs rows."
    )


if __name__ == "__main__":
    main()
