"""What reaches PACS, and when: versions, completion without a fixed wait, a killed worker.

Everything through ``ctp-node serve`` (a real process) with DCMTK: ``storescu`` is the scanner,
``storescp +uf`` (unique file names: nothing received is overwritten) is the PACS.

1. **Two parts**: a phantom study sent as its first 25 time points, then (once the first result
   is in PACS) the rest. Prints what PACS holds: objects, distinct UIDs, versions, the newer
   SR's volumes against the phantom's truth.
2. **Completion**: the same study sent whole, once as written (its headers announce
   NumberOfTemporalPositions) and once with that element removed (the quiet time decides),
   default quiet time: first image sent → every output in PACS, and the ratio.
3. **Killed worker**: the worker is killed (SIGKILL) while it computes; seconds until another
   takes the job up, against the job lease (``worker.lease_s``, 120 s by default).

Run: ``python bench/lifecycle.py [--matrix 128 --slices 8]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
from pathlib import Path

import pydicom
from peers import Node, timed_storescu, wait_for

from ctp_node.demo import write_phantom_study
from ctp_node.phantom import PhantomSpec, make_phantom
from ctp_node.phantom.dicom import StudyIdentity

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
VOLUME_NAMES = {
    "Ischemic core (rCBF<30%)": "core_ml",
    "Hypoperfusion (Tmax>6s)": "tmax6_ml",
}


def sr_volumes(ds: pydicom.Dataset) -> dict[str, float]:
    found: dict[str, float] = {}

    def walk(items) -> None:  # type: ignore[no-untyped-def]
        for item in items:
            content = item.get("ContentSequence", [])
            names = [c.TextValue for c in content if c.ValueType == "TEXT" and c.get("TextValue")]
            numbers = [
                c for c in content
                if c.ValueType == "NUM" and c.ConceptNameCodeSequence[0].CodeMeaning == "Volume"
            ]  # fmt: skip
            for name in names:
                if name in VOLUME_NAMES and numbers:
                    found[VOLUME_NAMES[name]] = float(
                        numbers[0].MeasuredValueSequence[0].NumericValue
                    )
            walk(content)

    walk(ds.ContentSequence)
    return found


def two_parts(root: Path, files: list[Path], truth: dict, outputs: int) -> list[tuple]:
    node = Node(root)
    try:
        first = [f for f in files if int(f.name[1:4]) < 25]
        timed_storescu(first, node.port, "CTPNODE")
        wait_for(lambda: len(list(node.pacs_dir.iterdir())) >= outputs, 600, "version 1")
        started = time.perf_counter()
        timed_storescu([f for f in files if f not in first], node.port, "CTPNODE")
        wait_for(lambda: len(list(node.pacs_dir.iterdir())) >= 2 * outputs, 600, "version 2")
        second_s = time.perf_counter() - started
        time.sleep(2)  # anything sent twice would arrive now
        objects = node.pacs_objects()
        jobs = node.status()["jobs"]
    finally:
        node.stop()
    uids = [str(ds.SOPInstanceUID) for ds in objects]
    reports = {
        "v2" in str(ds.SeriesDescription): ds for ds in objects if ds.SOPClassUID == SR_CLASS
    }
    volumes = sr_volumes(reports[True])
    predecessor = reports[True].PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    return [
        ("objects in PACS (storescp +uf)", len(objects), f"2 x {outputs}"),
        ("distinct SOP Instance UIDs", len(set(uids)), "as many as objects"),
        ("versions (jobs)", ", ".join(f"{j['version']}" for j in jobs), "1, 2"),
        ("v2 SR names v1's SR", predecessor.SeriesInstanceUID == reports[False].SeriesInstanceUID,
         "True"),
        ("second part sent → version 2 in PACS, s", f"{second_s:.1f}", ""),
        *(
            (f"v2 SR {key} (truth {truth[key]:.2f})", f"{volumes[key]:.2f}",
             f"{100 * (volumes[key] / truth[key] - 1):+.1f} %")
            for key in ("core_ml", "tmax6_ml")
        ),
    ]  # fmt: skip


def completion(root: Path, files: list[Path], outputs: int, quiet_s: float) -> list[tuple]:
    silent = root / "silent"
    silent.mkdir(parents=True)
    unannounced = []
    for path in files:
        ds = pydicom.dcmread(path)
        del ds.NumberOfTemporalPositions
        ds.save_as(silent / path.name)
        unannounced.append(silent / path.name)
    rows = []
    for label, study in (("announced (NumberOfTemporalPositions)", files),
                         ("not announced: quiet time", unannounced)):  # fmt: skip
        node = Node(root / label.split()[0], ingest={"series_stable_after_s": quiet_s})
        try:
            started = time.perf_counter()
            timed_storescu(study, node.port, "CTPNODE")
            wait_for(lambda: len(list(node.pacs_dir.iterdir())) >= outputs, 600, label)  # noqa: B023
            rows.append((label, time.perf_counter() - started))
        finally:
            node.stop()
    ratio = rows[1][1] / rows[0][1]
    return [
        (f"first image → every output in PACS, {label}, s", f"{seconds:.1f}", "")
        for label, seconds in rows
    ] + [("ratio quiet / announced", f"{ratio:.2f}", f"quiet time {quiet_s:g} s")]


def killed_worker(root: Path, files: list[Path], lease_s: float) -> list[tuple]:
    node = Node(root, worker={"lease_s": lease_s})
    try:
        timed_storescu(files, node.port, "CTPNODE")
        wait_for(lambda: any(j["state"] == "running" for j in node.status()["jobs"]), 300, "a job")
        (job,) = node.status()["jobs"]
        pid = int(job["worker_id"].rsplit(":", 1)[1])
        os.kill(pid, signal.SIGKILL)
        taken_s = wait_for(
            lambda: node.status()["jobs"][0]["attempts"] == 2, 600, "the job to be taken again"
        )
        done_s = wait_for(lambda: node.status()["jobs"][0]["state"] == "done", 600, "the job")
    finally:
        node.stop()
    return [
        ("worker killed → job taken up by another, s", f"{taken_s:.1f}", f"lease {lease_s:g} s"),
        ("… → job done, s", f"{taken_s + done_s:.1f}", ""),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--matrix", type=int, default=128)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--quiet", type=float, default=10.0, help="ingest.series_stable_after_s")
    parser.add_argument("--lease", type=float, default=120.0, help="worker.lease_s")
    args = parser.parse_args()
    outputs = 13  # 5 Parametric Maps, 7 summary pages, 1 SR
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        spec = PhantomSpec(
            matrix=args.matrix, slices=args.slices, pixel_spacing_mm=220.0 / args.matrix
        )
        phantom = make_phantom(spec)
        files = write_phantom_study(phantom, root / "study", StudyIdentity.new())
        truth = json.loads((root / "study" / "truth.json").read_text())
        rows = [
            *two_parts(root / "two-parts", files, truth, outputs),
            *completion(root / "completion", files, outputs, args.quiet),
            *killed_worker(root / "killed", files, args.lease),
        ]
    print(f"\n{len(files)} images, {args.slices} slices of {args.matrix}²\n")
    print("| measure | value | note |\n|---|---|---|")
    for name, value, note in rows:
        print(f"| {name} | {value} | {note} |")


if __name__ == "__main__":
    main()
