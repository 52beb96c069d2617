"""The outside party's check, end to end, on a phantom that is not ours.

For each study: bench/xphantom.py writes a CT perfusion study (or ``--study`` gives a folder),
DCMTK storescu sends it to ``ctp-node serve`` (a real process, one for all studies), a DCMTK
storescp is the PACS. When the outputs are in PACS, the stroke volumes are read from the SR by
tracking identifier and compared with the study's truth (core within ±15 %, Tmax>6s within
±10 %), and dicom3tools' dciodvfy checks every object received. Prints markdown tables.

Run: ``python bench/acceptance.py [--seeds 0 1 2 --noise 6 --side alternate --sampling uniform]``.
``--noise-seeds 1 2 3`` sends each head once per noise realisation (the same head, lesion and
inputs, other noise): the spread of their errors is what the noise alone does to one study.
``--family "plateau stroke" --seeds 0 1 --noise 5`` sends issue 33's phantom families
(``bench/accuracy.py``'s ``FAMILIES``, stroke layout: the third-party design of 50 frames at
1 s, four 5 mm slices, white noise) instead of the independent phantom.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pydicom
import yaml
from peers import ENV, free_port, timed_storescu, wait_for_echo
from xphantom import XSpec, truth_regions, write_study

SR_IDENTIFIERS = {
    "core": "Ischemic core (rCBF<30%)",
    "tmax6": "Hypoperfusion (Tmax>6s)",
    "tmax10": "Hypoperfusion (Tmax>10s)",
    "mismatch": "Mismatch",
}
TARGETS = {"core": 0.15, "tmax6": 0.10}  # relative error the outside party accepts
TRACKING_IDENTIFIER = "112039"  # DCM code of the TID 1501 Tracking Identifier
PARAMETRIC_MAP = "1.2.840.10008.5.1.4.1.1.30"
SR_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.34": "SR (Comprehensive 3D)",
    "1.2.840.10008.5.1.4.1.1.88.33": "SR (Comprehensive)",
    "1.2.840.10008.5.1.4.1.1.88.22": "SR (Enhanced)",
}


@dataclass
class Outcome:
    """What came back for one study."""

    name: str
    truth: dict
    sr_ml: dict[str, float] = field(default_factory=dict)
    objects: list[tuple[str, int, int, list[str]]] = field(default_factory=list)
    results: dict | None = None
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # (z, y, x), z ascending
    folder: Path | None = None
    seconds: float = float("nan")
    failure: str | None = None


def sr_volumes(ds: pydicom.Dataset) -> dict[str, float]:
    """Volumes in ml of the SR's measurement groups, by tracking identifier (any depth)."""
    found: dict[str, float] = {}

    def concept(item) -> str:
        seq = item.get("ConceptNameCodeSequence")
        return str(seq[0].CodeValue) if seq else ""

    def walk(items) -> None:
        for item in items:
            children = item.get("ContentSequence", [])
            identifier = next(
                (
                    str(c.TextValue)
                    for c in children
                    if c.ValueType == "TEXT" and concept(c) == TRACKING_IDENTIFIER
                ),
                None,
            )
            if identifier is not None:
                for c in children:
                    if c.ValueType != "NUM" or "MeasuredValueSequence" not in c:
                        continue
                    value = c.MeasuredValueSequence[0]
                    if str(value.MeasurementUnitsCodeSequence[0].CodeValue).lower() in (
                        "ml",
                        "ml3",
                    ):
                        found[identifier] = float(value.NumericValue)
            walk(children)

    walk(ds.get("ContentSequence", []))
    return {key: found[text] for key, text in SR_IDENTIFIERS.items() if text in found}


def object_kind(ds: pydicom.Dataset) -> str:
    """A short name for a received object: its SOP class and, for maps, the map."""
    sop = str(ds.SOPClassUID)
    if sop == PARAMETRIC_MAP:
        try:
            mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
            return f"Parametric Map {mapping.LUTLabel}"
        except (AttributeError, IndexError):
            return "Parametric Map"
    if sop in SR_CLASSES:
        return SR_CLASSES[sop]
    if sop.startswith("1.2.840.10008.5.1.4.1.1.7"):
        return f"Secondary Capture ({ds.get('SeriesDescription', '')})"
    return f"{ds.get('Modality', '?')} {sop}"


def map_volume(ds: pydicom.Dataset) -> np.ndarray:
    """A Parametric Map's frames as (z, y, x), ordered by slice position, real-world values."""
    frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    slope = float(mapping.get("RealWorldValueSlope", 1.0))
    intercept = float(mapping.get("RealWorldValueIntercept", 0.0))
    z = [
        float(item.PlanePositionSequence[0].ImagePositionPatient[2])
        for item in ds.PerFrameFunctionalGroupsSequence
    ]
    return frames[np.argsort(z)].astype(np.float64) * slope + intercept


def dciodvfy(path: Path) -> tuple[int, int, list[str]]:
    """Errors and warnings dciodvfy reports for one object, and the error lines."""
    check = subprocess.run(
        ["/usr/bin/dciodvfy", str(path)], capture_output=True, text=True, timeout=120
    )
    lines = (check.stdout + check.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    return len(errors), sum(line.startswith("Warning") for line in lines), errors


def received_for(pacs: Path, study_uid: str) -> list[Path]:
    """Files in the PACS folder that belong to study_uid."""
    files = []
    for path in sorted(pacs.iterdir()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
        except Exception:  # a file storescp is still writing
            continue
        if str(ds.get("StudyInstanceUID", "")) == study_uid:
            files.append(path)
    return files


def results_for(root: Path, study: dict) -> dict | None:
    """The node's results.json that names the study's series (or study) UID, if written."""
    for path in sorted((root / "results").rglob("results.json")):
        text = path.read_text()
        if study["series_instance_uid"] in text or study["study_instance_uid"] in text:
            return json.loads(text)
    return None


def wait_for_outputs(
    root: Path, pacs: Path, study: dict, timeout_s: float, log: Path
) -> tuple[dict | None, list[Path], str | None]:
    """Wait until PACS holds every output the node lists for the study, or a failure shows."""
    deadline = time.monotonic() + timeout_s
    results, files, last_count, steady_since = None, [], -1, time.monotonic()
    while time.monotonic() < deadline:
        results = results or results_for(root, study)
        files = received_for(pacs, study["study_instance_uid"])
        if len(files) != last_count:
            last_count, steady_since = len(files), time.monotonic()
        expected = len(results.get("outputs", [])) if results else None
        if expected and len(files) >= expected and time.monotonic() - steady_since > 1.0:
            return results, files, None
        if results is None and files and time.monotonic() - steady_since > 30.0:
            return None, files, "outputs arrived but no results.json names the study"
        time.sleep(0.5)
    tail = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if any(word in line for word in ("ERROR", "WARNING", "Traceback", "rror"))
    ]
    return results, files, f"timeout after {timeout_s:.0f} s; node log: " + " | ".join(tail[-8:])


def family_study(name: str, seed: int, noise_hu: float, folder: Path) -> dict:
    """Write one of ``bench/accuracy.py``'s phantom families (stroke layout) as a CT series in
    ``folder``, with its truth (``truth.json`` beside the images, as ``--study`` reads it)."""
    from accuracy import FAMILIES

    from ctp_node.demo import write_phantom_study
    from ctp_node.phantom.dicom import StudyIdentity
    from ctp_node.phantom.families import make_family_phantom

    spec = replace(FAMILIES[name], noise_hu=noise_hu, seed=seed)
    if spec.layout != "stroke":
        raise SystemExit(f"--family {name!r}: only the stroke layout has stroke volumes")
    identity = StudyIdentity.new()
    phantom = make_family_phantom(spec)
    write_phantom_study(phantom, folder, identity)
    for path in (folder / "dicom").iterdir():
        path.rename(folder / path.name)
    truth = json.loads((folder / "truth.json").read_text())
    truth["study_instance_uid"] = identity.study_instance_uid
    truth["series_instance_uid"] = identity.series_instance_uid
    truth["voxel_ml"] = float(phantom.acquisition.voxel_volume_ml)
    return truth


def run_studies(studies: list[tuple[str, Path, dict]], work: Path, args) -> list[Outcome]:
    pacs, root, log = work / "pacs", work / "node", work / "node.log"
    pacs.mkdir()
    pacs_port, node_port = free_port(), free_port()
    config = {
        "node": {"ae_title": "CTPNODE", "port": node_port, "bind": "127.0.0.1"},
        "storage": {"root": str(root), "min_free_bytes": 0},
        "database": {"url": f"sqlite:///{work / 'node.db'}"},
        "ingest": {"series_stable_after_s": args.stable_after},
        "destinations": [
            {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs_port}
        ],
    }
    (work / "node.yaml").write_text(yaml.safe_dump(config))
    outcomes = []
    with log.open("w") as log_file:
        storescp = subprocess.Popen(
            ["/usr/bin/storescp", "-aet", "PACS", "-od", str(pacs), str(pacs_port)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        node = subprocess.Popen(
            [sys.executable, "-m", "ctp_node", "serve", "--config", str(work / "node.yaml")],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**ENV, "OPENBLAS_NUM_THREADS": "1"},
        )
        try:
            wait_for_echo(pacs_port, "PACS")
            wait_for_echo(node_port, "CTPNODE")
            for name, folder, truth in studies:
                outcome = Outcome(name, truth, folder=folder)
                files = sorted(folder.glob("*.dcm"))
                errors, warnings, lines = dciodvfy(files[0])
                outcome.objects.append(("input CT (first file)", errors, warnings, lines))
                started = time.perf_counter()
                timed_storescu(files, node_port, "CTPNODE")
                results, received, failure = wait_for_outputs(root, pacs, truth, args.timeout, log)
                outcome.seconds = time.perf_counter() - started
                outcome.results, outcome.failure = results, failure
                for path in received:
                    ds = pydicom.dcmread(path)
                    kind = object_kind(ds)
                    errors, warnings, lines = dciodvfy(path)
                    outcome.objects.append((kind, errors, warnings, lines))
                    if kind.startswith("SR"):
                        outcome.sr_ml = sr_volumes(ds)
                    if kind.startswith("Parametric Map "):
                        outcome.maps[kind.split()[-1]] = map_volume(ds)
                if not outcome.sr_ml and outcome.failure is None:
                    outcome.failure = "no SR with the stroke volumes among the outputs"
                outcomes.append(outcome)
                print(
                    f"{name}: {len(received)} objects in {outcome.seconds:.1f} s"
                    + (f" — {failure}" if failure else ""),
                    file=sys.stderr,
                )
        finally:
            for process in (node, storescp):
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
    return outcomes


def relative(measured: float | None, truth: float) -> float | None:
    return None if measured is None or truth == 0 else (measured - truth) / truth


def print_report(outcomes: list[Outcome]) -> None:
    print(
        "\n| study | core truth | core SR | err | Tmax>6s truth | Tmax>6s SR | err "
        "| Tmax>10s truth | Tmax>10s SR | err | pass | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    passed = 0
    for o in outcomes:
        cells, verdict = [], True
        for key in ("core", "tmax6", "tmax10"):
            truth, measured = o.truth[f"{key}_ml"], o.sr_ml.get(key)
            error = relative(measured, truth)
            cells += [
                f"{truth:.1f}",
                "—" if measured is None else f"{measured:.1f}",
                "—" if error is None else f"{100 * error:+.0f} %",
            ]
            if key in TARGETS:
                verdict &= error is not None and abs(error) <= TARGETS[key]
        passed += verdict
        print(
            f"| {o.name} | "
            + " | ".join(cells)
            + f" | {'PASS' if verdict else 'FAIL'} | {o.seconds:.0f} |"
        )
    print(f"\n{passed} of {len(outcomes)} studies within core ±15 % and Tmax>6s ±10 %.")
    for key in TARGETS:
        errors = [relative(o.sr_ml.get(key), o.truth[f"{key}_ml"]) for o in outcomes]
        errors = [100 * e for e in errors if e is not None]
        if len(errors) > 1:
            print(
                f"{key}: mean error {np.mean(errors):+.1f} %, mean |error| "
                f"{np.mean(np.abs(errors)):.1f} %, "
                f"range {min(errors):+.0f} to {max(errors):+.0f} %."
            )

    print("\n| object kind | objects | dciodvfy errors | warnings |\n|---|---|---|---|")
    kinds: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    messages: dict[str, set[str]] = defaultdict(set)
    for o in outcomes:
        for kind, errors, warnings, lines in o.objects:
            kinds[kind][0] += 1
            kinds[kind][1] += errors
            kinds[kind][2] += warnings
            messages[kind].update(lines)
    for kind in sorted(kinds):
        count, errors, warnings = kinds[kind]
        print(f"| {kind} | {count} | {errors} | {warnings} |")
    for kind in sorted(messages):
        for line in sorted(messages[kind])[:5]:
            print(f"- {kind}: {line}")

    print_inputs(outcomes)
    print_regions(outcomes)
    for o in outcomes:
        if o.failure:
            print(f"\n**{o.name} failed**: {o.failure}")


def independent(outcomes: list[Outcome]) -> list[Outcome]:
    """The independent phantom's studies (``xphantom.py``'s truth locates the arteries, veins
    and lesion regions; other phantoms' truth does not)."""
    return [o for o in outcomes if "m1_voxel_zyx" in o.truth]


def print_inputs(outcomes: list[Outcome]) -> None:
    """The independent phantom's studies: the node's normal reference and inputs against the
    truth."""
    if not independent(outcomes):
        return
    print(
        "\n| study | node normal CBF | truth normal CBF: mean / median | truth core: mean / "
        "median ref. | node AIF zyx (voxels, peak HU, PV scale) | truth M1 / ACA | node VOF zyx "
        "| truth SSS |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for o in independent(outcomes):
        r, t = o.results or {}, o.truth
        aif, vof = r.get("aif", {}), r.get("vof", {})
        scale = r.get("parameters", {}).get("aif_partial_volume_scale", float("nan"))
        print(
            f"| {o.name} | {r.get('normal_cbf_ml_100g_min', '—')} "
            f"| {t['unaffected_hemisphere_mean_cbf_ml_100g_min']:.1f} / "
            f"{t.get('normal_tissue_median_cbf_ml_100g_min', float('nan')):.1f} "
            f"| {t['core_ml']:.1f} / {t.get('core_ml_if_median_reference', float('nan')):.1f} "
            f"| {aif.get('centre_zyx')} ({aif.get('voxels')}, {aif.get('peak_hu', 0):.0f}, "
            f"{scale:.2f}) | {t['m1_voxel_zyx']} / {t['aca_voxel_zyx']} "
            f"| {vof.get('centre_zyx')} | {t['sss_voxel_zyx']} |"
        )
    print(
        "\nTruth normal CBF: mean = unaffected hemisphere's tissue (the core's definition), "
        "median = normal tissue with delay < 4 s; truth core with either as the reference."
    )


def truth_maps(outcome: Outcome) -> dict[str, np.ndarray] | None:
    path = outcome.folder / "truth.npz" if outcome.folder else None
    return dict(np.load(path)) if path and path.exists() else None


def print_regions(outcomes: list[Outcome]) -> None:
    """Per truth region: true CBF and delay against the node's CBF and Tmax maps (medians)."""
    studies = independent(outcomes)
    if not studies:
        return
    print(
        "\n| study | region | ml | CBF truth | CBF node | rCBF<30% (node map) | delay truth "
        "| Tmax node | Tmax>6s (node map) |\n|---|---|---|---|---|---|---|---|---|"
    )
    for o in studies:
        maps = truth_maps(o)
        normal = (o.results or {}).get("normal_cbf_ml_100g_min")
        if maps is None or "CBF" not in o.maps or "Tmax" not in o.maps or not normal:
            continue
        for name, where in truth_regions(maps).items():
            cbf, tmax = o.maps["CBF"][where], o.maps["Tmax"][where]
            print(
                f"| {o.name} | {name} | {where.sum() * o.truth['voxel_ml']:.0f} "
                f"| {maps['cbf'][where].mean():.1f} | {np.median(cbf):.1f} "
                f"| {100 * np.mean(cbf < 0.3 * normal):.0f} % "
                f"| {maps['delay'][where].mean():.1f} | {np.median(tmax):.1f} "
                f"| {100 * np.mean(tmax > 6.0):.0f} % |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--noise", type=float, default=6.0, help="HU σ per voxel per frame")
    parser.add_argument(
        "--side",
        choices=("left", "right", "alternate"),
        default="alternate",
        help="stroke hemisphere; alternate = left for even seeds, right for odd",
    )
    parser.add_argument(
        "--noise-correlation",
        type=float,
        default=XSpec.noise_correlation_px,
        help="σ in pixels of the in-plane blur that correlates the noise; 0 = white",
    )
    parser.add_argument("--sampling", choices=("uniform", "variable"), default="uniform")
    parser.add_argument("--motion", type=float, default=0.0, help="mm, in three frames")
    parser.add_argument("--matrix", type=int, choices=(256, 512), default=256)
    parser.add_argument(
        "--noise-seeds",
        type=int,
        nargs="+",
        default=[None],
        help="noise realisations of each head (xphantom --noise-seed); default: the head's own",
    )
    parser.add_argument(
        "--study",
        type=Path,
        nargs="*",
        default=[],
        help="folders with *.dcm and truth.json, instead of generated studies",
    )
    parser.add_argument(
        "--stable-after", type=float, default=3.0, help="ingest.series_stable_after_s of the node"
    )
    parser.add_argument(
        "--family",
        help="a phantom family of bench/accuracy.py (stroke layout), e.g. 'plateau stroke', "
        "instead of the independent phantom; --seeds and --noise apply",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="s per study for outputs")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as temporary:
        work = args.keep or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        studies = []
        for folder in args.study:
            truth = json.loads((folder / "truth.json").read_text())
            studies.append((folder.name, folder, truth))
        for seed in args.seeds if args.family else []:
            folder = work / f"family-{seed}"
            name = f"{args.family} s{seed} σ{args.noise:g}"
            studies.append((name, folder, family_study(args.family, seed, args.noise, folder)))
        if not args.study and not args.family:
            base = XSpec(
                noise_hu=args.noise,
                noise_correlation_px=args.noise_correlation,
                sampling=args.sampling,
                motion_mm=args.motion,
                matrix=args.matrix,
            )
            for seed in args.seeds:
                side = args.side if args.side != "alternate" else ("left", "right")[seed % 2]
                head = f"s{seed} {side[0].upper()} σ{args.noise:g} {args.sampling}"
                if args.noise_correlation != XSpec.noise_correlation_px:
                    head += f" corr {args.noise_correlation:g}px"
                if args.motion:
                    head += f" motion {args.motion:g}mm"
                for noise_seed in args.noise_seeds:
                    spec = replace(base, seed=seed, side=side, noise_seed=noise_seed)
                    name, folder = head, work / f"study-{seed}-{side}"
                    if noise_seed is not None:
                        name += f" noise {noise_seed}"
                        folder = folder.with_name(f"{folder.name}-noise{noise_seed}")
                    studies.append((name, folder, write_study(spec, folder)))
        outcomes = run_studies(studies, work, args)
        print_report(outcomes)  # its region table reads each study's truth.npz
    print(f"\nRuntime {time.perf_counter() - started:.0f} s for {len(outcomes)} studies.")


if __name__ == "__main__":
    main()
