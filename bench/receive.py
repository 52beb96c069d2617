"""Receiving speed: DCMTK storescu → the node's listener, beside storescu → DCMTK storescp and
beside the listener of a previous version of the node (default: ``main``).

Every receiver gets the same files over loopback in the same run, first over one association,
then over 4 parallel associations (4 storescu processes, a quarter of the files each). Each
run starts a fresh receiver (an empty spool and database). The node's listeners write each
object durably (fsync + rename) and record it in SQLite before answering; storescp only
writes. The previous version is a ``git worktree`` of ``--previous`` in a temporary folder,
removed at the end. "pynetdicom, answer only" is pynetdicom receiving each data set to a file
and answering at once: the ceiling of any listener built on it. Each node listener runs in a
process of its own (``PYTHONPATH`` its source tree).

Prints one table. Run: ``python bench/receive.py [--images N] [--matrix 512] [--previous REF]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import numpy as np
from peers import ENV, SOURCE_TREE, free_port, wait_for_echo

from ctp_node.perfusion import Acquisition
from ctp_node.phantom.dicom import StudyIdentity, write_ct_series

PARALLEL = 4

#: A node listener of the source tree on PYTHONPATH: ``python -c LISTENER root port``; it
#: stops when its standard input closes.
LISTENER = """
import sys
from pathlib import Path
from ctp_node.receive.scp import ListenerSettings, start_listener
from ctp_node.receive.spool import Spool
from ctp_node.store import Database
root, port = Path(sys.argv[1]), int(sys.argv[2])
db = Database(f"sqlite:///{root / 'node.db'}")
db.create_schema()
server = start_listener(ListenerSettings("CTPNODE", "127.0.0.1", port), Spool(root / "node"), db)
sys.stdin.read()
server.shutdown()
db.dispose()
"""

#: pynetdicom receiving data sets to files, answering Success at once (no checks, no fsync).
ANSWER_ONLY = """
import sys
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import Verification
_config.STORE_RECV_CHUNKED_DATASET = True
ae = AE("CTPNODE")
ae.maximum_pdu_size = 4_194_304  # as the node's listener announces (node.max_pdu_bytes)
ae.add_supported_context(Verification)
for context in AllStoragePresentationContexts:
    ae.add_supported_context(context.abstract_syntax)
handlers = [(evt.EVT_C_STORE, lambda event: 0x0000)]
server = ae.start_server(("127.0.0.1", int(sys.argv[2])), block=False, evt_handlers=handlers)
sys.stdin.read()
server.shutdown()
"""


@contextmanager
def serving(command: list[str], called: str, env: dict[str, str]) -> Iterator[str]:
    """Run a receiver until the block ends (its standard input closes, then it is ended)."""
    process = subprocess.Popen(
        command, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=None
    )
    try:
        wait_for_echo(port=int(command[-1]), called=called)
        yield called
    finally:
        process.stdin.close()  # type: ignore[union-attr]
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def storescp(root: Path, port: int) -> AbstractContextManager[str]:
    root.mkdir(parents=True)
    # --fork: a process per association, so that parallel associations run in parallel
    command = ["/usr/bin/storescp", "--fork", "-aet", "STORESCP", "-od", str(root), str(port)]
    return serving(command, "STORESCP", ENV)


def python_listener(
    script: str, source_tree: Path | None
) -> Callable[[Path, int], AbstractContextManager[str]]:
    """A receiver running ``script`` in a process with ``source_tree`` first on its path."""

    def run(root: Path, port: int) -> AbstractContextManager[str]:
        root.mkdir(parents=True)
        env = {**os.environ, "PYTHONPATH": str(source_tree) if source_tree else ""}
        return serving([sys.executable, "-c", script, str(root), str(port)], "CTPNODE", env)

    return run


def timed_storescus(groups: list[list[Path]], port: int, called: str) -> float:
    """Send each group with its own storescu (one association each), all at once; seconds
    until the last has finished (every file must be stored)."""
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            ["/usr/bin/storescu", "-v", "-aec", called, "127.0.0.1", str(port), *map(str, g)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=ENV,
        )
        for g in groups
    ]
    outputs = [p.communicate(timeout=1800)[0] for p in processes]
    elapsed = time.perf_counter() - started
    stored = sum(out.count("Received Store Response (Success)") for out in outputs)
    expected = sum(len(g) for g in groups)
    if stored != expected:
        raise RuntimeError(f"{called}: only {stored} of {expected} stored")
    return elapsed


@contextmanager
def previous_tree(ref: str, folder: Path) -> Iterator[Path]:
    """A detached ``git worktree`` of ``ref`` in ``folder``, removed afterwards."""
    git = ["git", "-C", str(SOURCE_TREE)]
    subprocess.run([*git, "worktree", "add", "--detach", str(folder), ref], check=True)
    try:
        yield folder
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(folder)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--matrix", type=int, default=512)
    parser.add_argument("--previous", default="main", help="git ref of the previous version")
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
        quarters = [files[n::PARALLEL] for n in range(PARALLEL)]

        with previous_tree(args.previous, root / "previous") as previous:
            receivers = {
                "DCMTK storescp (reference, no fsync)": storescp,
                "ctp-node listener (this tree)": python_listener(LISTENER, SOURCE_TREE),
                f"ctp-node listener ({args.previous})": python_listener(LISTENER, previous),
                "pynetdicom, answer only (no checks, no fsync)": python_listener(ANSWER_ONLY, None),
            }
            rates: dict[str, tuple[float, float]] = {}
            for n, (name, receiver) in enumerate(receivers.items()):
                measured = []
                for run, groups in (("one", [files]), ("four", quarters)):
                    port = free_port()
                    with receiver(root / f"receiver-{n}-{run}", port) as called:
                        seconds = timed_storescus(groups, port, called)
                    measured.append(len(files) / seconds)
                rates[name] = (measured[0], measured[1])

    one_ref, four_ref = next(iter(rates.values()))
    print(
        f"\n{len(files)} CT images of {args.matrix}x{args.matrix} ({megabytes:.0f} MB), "
        f"storescu over loopback, one association and {PARALLEL} in parallel "
        f"({os.cpu_count()} CPUs)\n"
    )
    print(
        f"| receiver | 1 association: images/s | × storescp | {PARALLEL} associations: "
        f"images/s | × storescp | {PARALLEL} ÷ 1 |\n|---|---|---|---|---|---|"
    )
    for name, (one, four) in rates.items():
        print(
            f"| {name} | {one:.0f} | {one / one_ref:.2f} | {four:.0f} | {four / four_ref:.2f} "
            f"| {four / one:.2f} |"
        )


if __name__ == "__main__":
    main()
