"""``ctp-node demo``: a whole node on loopback, fed a phantom study, results printed.

1. a stand-in PACS (a storage SCP writing into a folder) starts on a free loopback port;
2. a node starts on another, with a configuration written into the demo folder;
3. a digital phantom study is written as CT DICOM and sent to the node by C-STORE;
4. the node notices the complete series, computes the maps and sends them to the PACS;
5. the results (with the phantom's truth beside them) and the files' places are printed.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import yaml

from ctp_node.config import load_config
from ctp_node.phantom import Phantom, PhantomSpec, make_phantom
from ctp_node.phantom.dicom import StudyIdentity, write_ct_series
from ctp_node.receive.folder_scp import start_folder_scp
from ctp_node.result_table import print_result
from ctp_node.send.scu import Peer, send_files
from ctp_node.service import Node
from ctp_node.status import collect_status
from ctp_node.wiring import open_database

NODE_AE = "CTPNODE"
PACS_AE = "DEMOPACS"
SCANNER_AE = "DEMOCT"
#: The configuration the demo writes into its folder: what marks a folder as a demo's.
DEMO_CONFIG = "ctp-node.yaml"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def demo_config(folder: Path, node_port: int, pacs_port: int, http_port: int) -> dict:
    """A configuration for a node on loopback that sends to the demo PACS, with its HTTP
    face (health, metrics, web console) on ``http_port``."""
    return {
        "node": {"ae_title": NODE_AE, "port": node_port, "bind": "127.0.0.1"},
        "storage": {"root": "node", "min_free_bytes": 100_000_000},
        "database": {"url": "sqlite:///node/ctp-node.db"},
        "ingest": {"series_stable_after_s": 3.0, "scan_interval_s": 0.5},
        "worker": {"count": 1, "poll_interval_s": 0.5},
        "destinations": [
            {"name": "pacs", "ae_title": PACS_AE, "host": "127.0.0.1", "port": pacs_port}
        ],
        "send": {"retry_backoff_s": 2.0, "retry_backoff_max_s": 10.0},
        "http": {"enabled": True, "bind": "127.0.0.1", "port": http_port},
    }


#: The phantom's truth maps (ml/100g/min, ml/100g, s, s) and masks saved in truth.npz.
TRUTH_ARRAYS = (
    "cbf",
    "cbv",
    "mtt",
    "delay",
    "tissue_mask",
    "core_mask",
    "tmax6_mask",
    "tmax10_mask",
)


def write_phantom_study(phantom: Phantom, out_dir: Path, identity: StudyIdentity) -> list[Path]:
    """Write a phantom's CT images to ``out_dir/dicom``, its scalar truth to truth.json and its
    truth maps and masks ``(z, y, x)`` to truth.npz."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = write_ct_series(phantom.acquisition, out_dir / "dicom", identity=identity)
    truth = phantom.truth
    scalars = truth.to_dict()
    scalars["facts"] = asdict(phantom.acquisition.facts)
    (out_dir / "truth.json").write_text(json.dumps(scalars, indent=2) + "\n")
    np.savez_compressed(
        out_dir / "truth.npz",
        **{name: getattr(truth, name) for name in TRUTH_ARRAYS},
    )
    return paths


def demo_folder(out: Path | None) -> Path:
    """Where the demo writes (~80 MB): ``out``, or a new temporary folder when None.

    ``out`` may be new, empty, or a previous demo's folder (which is replaced); any other
    folder is refused, so that a mistyped path never loses anyone's files.

    Raises
    ------
    ValueError : ``out`` holds files that are not a previous demo's (message says so).
    """
    if out is None:
        return Path(tempfile.mkdtemp(prefix="ctp-node-demo-")).resolve()
    folder = Path(out).resolve()
    if folder.exists() and any(folder.iterdir()):
        if not (folder / DEMO_CONFIG).is_file():
            raise ValueError(
                f"{folder} holds files that are not a previous demo's: give a new or empty "
                "folder with --out"
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_demo(out: Path | None = None, timeout_s: float = 600.0) -> int:
    """Run the demo in ``out`` (see :func:`demo_folder`); 0 when the results reached the demo
    PACS, 1 when not, 2 when ``out`` cannot be used."""
    try:
        folder = demo_folder(out)
    except ValueError as exc:
        print(f"ctp-node demo: {exc}", file=sys.stderr)
        return 2
    print(f"demo folder: {folder} (remove it when done)")
    node_port, pacs_port, http_port = free_port(), free_port(), free_port()
    config_path = folder / DEMO_CONFIG
    config_path.write_text(yaml.safe_dump(demo_config(folder, node_port, pacs_port, http_port)))
    config = load_config(config_path)

    print(
        f"1. demo PACS ({PACS_AE}) listening on 127.0.0.1:{pacs_port}, files in {folder / 'pacs'}"
    )
    pacs = start_folder_scp(folder / "pacs", PACS_AE, pacs_port)
    node = Node(config)
    try:
        node.start()
        print(f"2. node ({NODE_AE}) listening on 127.0.0.1:{node_port}; config {config_path}")
        http = f"http://127.0.0.1:{http_port}"
        print(f"   console: {http}/  health: {http}/health/ready  metrics: {http}/metrics")
        phantom = make_phantom(PhantomSpec())
        paths = write_phantom_study(phantom, folder / "phantom", StudyIdentity.new())
        print(f"3. phantom study written: {len(paths)} CT images in {folder / 'phantom'}")
        started = time.monotonic()
        outcomes = send_files(Peer(NODE_AE, "127.0.0.1", node_port, SCANNER_AE), paths)
        stored = sum(o.stored for o in outcomes)
        print(
            f"   sent to the node by C-STORE: {stored} of {len(paths)} stored "
            f"in {time.monotonic() - started:.1f} s"
        )
        if stored != len(paths):
            print("   the node refused images: see the log above")
            return 1
        print("4. waiting for the node to compute and send the results ...")
        job = _wait_for_results(config, started + timeout_s)
        if job is None or job["state"] != "done":
            print(f"   no results within {timeout_s:.0f} s: {job}")
            return 1
        print(
            f"   results in PACS {time.monotonic() - started:.1f} s after the first image was sent"
        )
        result_dir = Path(config.storage.root) / job["result_dir"]
        summary = json.loads((result_dir / "results.json").read_text())
        truth = json.loads((folder / "phantom" / "truth.json").read_text())
        print("5. results")
        print_result(summary, result_dir, truth)
        received = sorted((folder / "pacs").rglob("*.dcm"))
        print(f"\n   the demo PACS received {len(received)} objects: {folder / 'pacs'}")
        print(f"   summary image: {result_dir / 'summary.png'}")
        print(f"   node status: ctp-node status --config {config_path}")
        print(
            f"   web console (the results, a new AIF): ctp-node serve --config {config_path}, "
            f"then open {http}/jobs/{job['id']}"
        )
        return 0
    finally:
        node.stop()
        pacs.shutdown()


def _wait_for_results(config, deadline: float) -> dict | None:  # type: ignore[no-untyped-def]
    """Poll the node's database until a job is finished and its exports are settled."""
    db = open_database(config)
    try:
        while time.monotonic() < deadline:
            jobs = collect_status(db)["jobs"]
            for job in jobs:
                if job["state"] == "failed":
                    return job
                pending = any(k.endswith(":pending") for k in job["exports"])
                if job["state"] == "done" and job["exports"] and not pending:
                    return job
            time.sleep(0.5)
        return None
    finally:
        db.dispose()
