"""Receiving speed: DCMTK storescu → the node's listener, beside storescu → DCMTK storescp.

Both receivers get the same files over loopback in the same run; the node's receiver writes
each object durably (fsync + rename) and records it in SQLite before answering, storescp only
writes. Prints one table. Run: ``python bench/receive.py [--images N] [--matrix 512]``.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from peers import ENV, free_port, timed_storescu, wait_for_echo

from ctp_node.perfusion import Acquisition
from ctp_node.phantom_dicom import StudyIdentity, write_ct_series
from ctp_node.receive.scp import ListenerSettings, start_listener
from ctp_node.receive.spool import Spool
from ctp_node.store import Database


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--matrix", type=int, default=512)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        slices = 8
        frames = max(1, args.images // slices)
        rng = np.random.default_rng(0)
        hu = rng.normal(40, 20, (frames, slices, args.matrix, args.matrix)).astype(np.float32)
        acquisition = Acquisition(
            hu=hu,
            times_s=np.arange(frames) * 1.0,
            pixel_spacing_mm=(0.45, 0.45),
            slice_spacing_mm=5.0,
        )
        files = write_ct_series(acquisition, root / "in", identity=StudyIdentity.new())
        megabytes = sum(f.stat().st_size for f in files) / 1e6

        rows = []
        port = free_port()
        (root / "storescp").mkdir()
        storescp = subprocess.Popen(
            ["/usr/bin/storescp", "-aet", "STORESCP", "-od", str(root / "storescp"), str(port)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_echo(port, "STORESCP")
            rows.append(("DCMTK storescp (reference)", timed_storescu(files, port, "STORESCP")))
        finally:
            storescp.terminate()
            storescp.wait(timeout=10)

        db = Database(f"sqlite:///{root / 'node.db'}")
        db.create_schema()
        port = free_port()
        server = start_listener(
            ListenerSettings("CTPNODE", "127.0.0.1", port), Spool(root / "node"), db
        )
        try:
            wait_for_echo(port, "CTPNODE")
            rows.append(
                ("ctp-node listener (fsync + SQLite)", timed_storescu(files, port, "CTPNODE"))
            )
        finally:
            server.shutdown()
            db.dispose()

    print(
        f"\n{len(files)} CT images of {args.matrix}x{args.matrix} ({megabytes:.0f} MB), "
        "storescu over loopback, one association\n"
    )
    print("| receiver | seconds | images/s | MB/s |\n|---|---|---|---|")
    for name, seconds in rows:
        print(
            f"| {name} | {seconds:.1f} | {len(files) / seconds:.0f} | {megabytes / seconds:.0f} |"
        )


if __name__ == "__main__":
    main()
