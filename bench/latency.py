"""Scan to PACS: how long after the scanner starts sending are the results in PACS?

DCMTK storescu sends a phantom study to ``ctp-node serve`` (a real process, default quiet time
before a series counts as complete); a DCMTK storescp is the PACS. The reference in the same
run is the same study sent straight to storescp (the network and disk floor). Prints a table.

Run: ``python bench/latency.py [--matrix 512 --slices 16 --interval 2]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from peers import ENV, free_port, timed_storescu, wait_for_echo

from ctp_node.demo import write_phantom_study
from ctp_node.perfusion.phantom import PhantomSpec, make_phantom
from ctp_node.phantom_dicom import StudyIdentity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--matrix", type=int, default=512)
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument(
        "--stable-after",
        type=float,
        default=10.0,
        help="ingest.series_stable_after_s (the default configuration's 10 s)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        spec = PhantomSpec(
            matrix=args.matrix,
            slices=args.slices,
            interval_s=args.interval,
            duration_s=args.duration,
            pixel_spacing_mm=220.0 / args.matrix,
        )
        files = write_phantom_study(make_phantom(spec), root / "study", StudyIdentity.new())

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
                "ingest": {"series_stable_after_s": args.stable_after},
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
            while time.perf_counter() - started < 900:
                found = list((root / "node" / "results").rglob("results.json"))
                if found:
                    results = json.loads(found[0].read_text())
                    expected = len(results["outputs"])
                    if len(list((root / "pacs").iterdir())) >= expected:
                        break
                time.sleep(0.2)
            total_s = time.perf_counter() - started
        finally:
            for process in (node, pacs):
                if process is not None:
                    process.terminate()
                    process.wait(timeout=30)
    if results is None:
        raise SystemExit("no results within 900 s")
    timing = results["timing_s"]
    shape = results["acquisition"]
    print(
        f"\n{len(files)} images: {shape['time_points']} time points x {shape['slices']} slices "
        f"of {args.matrix}x{args.matrix}, {len(results['outputs'])} outputs\n"
    )
    print("| step | seconds |\n|---|---|")
    print(f"| reference: storescu → storescp, same study | {reference_s:.1f} |")
    print(f"| storescu → ctp-node (durable, recorded) | {send_s:.1f} |")
    print(f"| quiet time before the series counts as complete | {args.stable_after:.1f} |")
    print(f"| load the series | {timing['load']:.1f} |")
    print(f"| compute maps and volumes | {timing['compute']:.1f} |")
    print(f"| load + compute + build and write outputs | {timing['total']:.1f} |")
    print(f"| **first image sent → every output in PACS** | **{total_s:.1f}** |")


if __name__ == "__main__":
    main()
