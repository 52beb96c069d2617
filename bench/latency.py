"""Scan to PACS: how long after the scanner starts sending are the results in PACS?

DCMTK storescu sends a phantom study to ``ctp-node serve`` (a real process, default
configuration but for the ports and folders); a DCMTK storescp is the PACS. The reference in
the same run is the same study sent straight to storescp (the network and disk floor), and the
figure that matters is the ratio: first image sent → every output in PACS, over that copy.

Each size is run twice:

- **announced**: the images carry NumberOfTemporalPositions, as scanners' dynamic series do;
  the series counts as complete once every slice position has that many images and nothing
  has arrived for a short settle (:data:`ctp_node.assemble.completion.ANNOUNCED_SETTLE_S`);
- **unannounced**: the same images without it: the series waits for the quiet time
  (``ingest.series_stable_after_s``, 10 s by default).

Prints one markdown table. Run from the repository root:
``PYTHONPATH=. python bench/latency.py [--sizes 16x29 32x40] [--matrix 512] [--modes announced
unannounced]`` (a size is slices x time points, 2 s apart by default).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import pydicom
import yaml
from peers import ENV, free_port, markdown_table, timed_storescu, wait_for_echo

from ctp_node.assemble.completion import ANNOUNCED_SETTLE_S
from ctp_node.demo import write_phantom_study
from ctp_node.phantom import PhantomSpec, make_phantom
from ctp_node.phantom.dicom import StudyIdentity

QUIET_S = 10.0  # the default configuration's ingest.series_stable_after_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--matrix", type=int, default=512)
    parser.add_argument("--sizes", nargs="+", default=["16x29", "32x40"])
    parser.add_argument("--interval", type=float, default=2.0, help="s between time points")
    parser.add_argument("--modes", nargs="+", default=["announced", "unannounced"])
    args = parser.parse_args()

    rows = []
    for size in args.sizes:
        slices, time_points = (int(n) for n in size.split("x"))
        for mode in args.modes:
            with tempfile.TemporaryDirectory() as folder:
                rows.append(
                    _run(Path(folder), args.matrix, slices, time_points, args.interval, mode)
                )
    print(
        markdown_table(
            f"first image sent → every output in PACS, {args.matrix}² images; storescu → "
            f"storescp of the same study in the same run is the reference; quiet time "
            f"{QUIET_S:g} s, settle after an announced series {ANNOUNCED_SETTLE_S:g} s",
            [
                "study (slices × time points)",
                "completion",
                "reference copy, s",
                "storescu → node, s",
                "complete → job done (load / compute / all), s",
                "job queued → started, s",
                "job done → first output sent, s",
                "first image → all outputs in PACS, s",
                "× reference",
            ],
            rows,
        )
    )


def _run(
    root: Path, matrix: int, slices: int, time_points: int, interval_s: float, mode: str
) -> list[object]:
    spec = PhantomSpec(
        matrix=matrix,
        slices=slices,
        interval_s=interval_s,
        duration_s=interval_s * (time_points - 1),
        pixel_spacing_mm=220.0 / matrix,
    )
    files = write_phantom_study(make_phantom(spec), root / "study", StudyIdentity.new())
    if mode == "unannounced":
        for path in files:
            ds = pydicom.dcmread(path)
            del ds.NumberOfTemporalPositions
            ds.save_as(path)
    print(f"  … {slices} x {time_points} ({len(files)} images), {mode}", file=sys.stderr)

    pacs_port, node_port = free_port(), free_port()
    (root / "pacs").mkdir()
    pacs = subprocess.Popen(
        ["/usr/bin/storescp", "-aet", "PACS", "-od", str(root / "pacs"), str(pacs_port)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    node = None
    try:
        wait_for_echo(pacs_port, "PACS")
        reference_s = timed_storescu(files, pacs_port, "PACS")
        for received in (root / "pacs").iterdir():
            received.unlink()
        config = {
            "node": {"ae_title": "CTPNODE", "port": node_port, "bind": "127.0.0.1"},
            "storage": {"root": str(root / "node"), "min_free_bytes": 0},
            "database": {"url": f"sqlite:///{root / 'node.db'}"},
            "ingest": {"series_stable_after_s": QUIET_S},
            "destinations": [
                {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs_port}
            ],
        }
        (root / "node.yaml").write_text(yaml.safe_dump(config))
        node = subprocess.Popen(
            [sys.executable, "-m", "ctp_node", "serve", "--config", str(root / "node.yaml")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_echo(node_port, "CTPNODE")
        started = time.perf_counter()
        send_s = timed_storescu(files, node_port, "CTPNODE")
        results = None
        while time.perf_counter() - started < 1800:
            found = list((root / "node" / "results").rglob("results.json"))
            if found:
                results = json.loads(found[0].read_text())
                if len(list((root / "pacs").iterdir())) >= len(results["outputs"]):
                    break
            time.sleep(0.2)
        total_s = time.perf_counter() - started
    finally:
        for process in (node, pacs):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
    if results is None:
        raise SystemExit(f"{slices} x {time_points} {mode}: no results within 1800 s")
    timing = results["timing_s"]
    job = f"{timing['load']:.1f} / {timing['compute']:.1f} / {timing['total']:.1f}"
    claimed_s, handed_s = _hand_overs(root / "node.db")
    return [
        f"{slices} × {time_points}",
        mode,
        f"{reference_s:.1f}",
        f"{send_s:.1f}",
        job,
        f"{claimed_s:.2f}",
        f"{handed_s:.2f}",
        f"{total_s:.1f}",
        f"{total_s / reference_s:.1f}",
    ]


def _hand_overs(database: Path) -> tuple[float, float]:
    """Seconds from the job's queueing to a worker's start, and from its end to the first
    output sent: the waits between the node's loops, as the node recorded them."""
    with closing(sqlite3.connect(database)) as db:
        created, started, finished = db.execute(
            "SELECT created_at, started_at, finished_at FROM jobs ORDER BY id LIMIT 1"
        ).fetchone()
        (first_sent,) = db.execute("SELECT min(sent_at) FROM exports").fetchone()
    at = dt.datetime.fromisoformat
    return (
        (at(started) - at(created)).total_seconds(),
        (at(first_sent) - at(finished)).total_seconds(),
    )


if __name__ == "__main__":
    main()
