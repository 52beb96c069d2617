"""Peers on loopback for the benchmarks: free ports, C-ECHO waits, timed storescu, a DCMTK
storescp PACS and a real ``ctp-node serve`` process sending to it."""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pydicom
import yaml

#: The source tree this bench belongs to: its ``ctp_node`` is the node under test.
SOURCE_TREE = Path(__file__).resolve().parents[1]
#: Environment of ``ctp-node`` subprocesses: this tree's package first on the path.
NODE_ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(
        [str(SOURCE_TREE), *filter(None, [os.environ.get("PYTHONPATH")])]
    ),
}
#: Debian's DCMTK leaves Nagle's algorithm on; without this a DCMTK peer manages ~20 images/s.
ENV = {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_echo(port: int, called: str, timeout_s: float = 60.0) -> None:
    """Wait until ``called`` answers C-ECHO on ``port``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = subprocess.run(
            ["/usr/bin/echoscu", "-aec", called, "127.0.0.1", str(port)],
            capture_output=True,
            env=ENV,
        )
        if done.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{called} does not answer on port {port}")


def timed_storescu(files: list[Path], port: int, called: str) -> float:
    """Send files with DCMTK storescu in one association; seconds taken (all must be stored)."""
    started = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/storescu", "-v", "-aec", called, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=1800,
    )
    elapsed = time.perf_counter() - started
    stored = (result.stdout + result.stderr).count("Received Store Response (Success)")
    if stored != len(files):
        raise RuntimeError(f"{called}: only {stored} of {len(files)} stored")
    return elapsed


def markdown_table(title: str, header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    """A bold title and a markdown table."""
    header = list(header)
    lines = [f"\n**{title}**\n", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str) -> float:
    """Seconds until ``predicate()`` holds (polled every 0.1 s)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if predicate():
            return time.perf_counter() - started
        time.sleep(0.1)
    raise SystemExit(f"timed out after {timeout_s:.0f} s waiting for {what}")


#: Processes started here and not yet stopped: ended at exit, also after Ctrl-C.
_LIVE: set[subprocess.Popen] = set()


@atexit.register
def _end_live_processes() -> None:
    for process in list(_LIVE):
        _end_group(process)


def _end_group(process: subprocess.Popen, grace_s: float = 60.0) -> None:
    """SIGTERM ``process``, then SIGKILL whatever is left of its process group (it was started
    as a session leader, so the group is its own: ``serve``'s fork server and workers)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)
    _LIVE.discard(process)


def group_members(pgid: int) -> list[int]:
    """PIDs of the live processes (not zombies) in process group ``pgid``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


class Pacs:
    """DCMTK ``storescp +uf`` (unique file names: nothing received is overwritten) in
    ``folder``; it can be stopped and started again on the same port (an outage)."""

    def __init__(self, folder: Path, ae_title: str = "PACS") -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ae_title = ae_title
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["/usr/bin/storescp", "+uf", "-aet", self.ae_title, "-od", str(self.folder),
             str(self.port)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        _LIVE.add(self.process)
        wait_for_echo(self.port, self.ae_title)

    def stop(self) -> None:
        if self.process is not None:
            _end_group(self.process, grace_s=10)
            self.process = None

    def objects(self) -> list[pydicom.Dataset]:
        """Headers of everything received, one per arrival."""
        return [
            pydicom.dcmread(p, stop_before_pixels=True)
            for p in sorted(self.folder.iterdir())
            if p.is_file()
        ]


class Node:
    """``ctp-node serve`` on loopback sending to a ``storescp +uf`` PACS below ``root``.

    The configuration is written to ``root/node.yaml`` (``sections`` update its defaults); the
    node's log (stderr) goes to ``root/serve.log``. ``serve`` runs as a session leader, so that
    its fork server and workers can be found (:func:`group_members`) and ended with it."""

    def __init__(self, root: Path, *, storage_root: Path | None = None, **sections: dict) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.pacs = Pacs(root / "pacs")
        self.pacs_dir, self.pacs_port = self.pacs.folder, self.pacs.port
        self.port = free_port()
        self.storage_root = storage_root or root / "node"
        config = {
            "node": {"ae_title": "CTPNODE", "port": self.port, "bind": "127.0.0.1"},
            "storage": {"root": str(self.storage_root), "min_free_bytes": 0},
            "database": {"url": f"sqlite:///{self.storage_root / 'node.db'}"},
            "destinations": [
                {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": self.pacs_port}
            ],
        }
        for name, values in sections.items():
            config.setdefault(name, {}).update(values)
        self.config = config
        self.config_path = root / "node.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.db_path = self.storage_root / "node.db"
        self.log_path = root / "serve.log"
        self.process: subprocess.Popen | None = None
        self.start()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout_s: float = 120.0) -> float:
        """Start ``serve``; seconds until it answers C-ECHO."""
        started = time.perf_counter()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ctp_node", "serve", "--config", str(self.config_path)],
                stdout=log,
                stderr=log,
                env=NODE_ENV,
                start_new_session=True,
            )
        _LIVE.add(self.process)
        wait_for_echo(self.port, "CTPNODE", timeout_s)
        return time.perf_counter() - started

    def kill(self, settle_s: float = 2.0) -> int:
        """SIGKILL ``serve`` alone, as a crash or the OOM killer would; wait up to ``settle_s``
        for the rest of its process group (fork server, workers) to end by itself, then SIGKILL
        what is left, as systemd or Docker would. Returns how many processes were left."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        deadline = time.monotonic() + settle_s
        while (left := group_members(self.process.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        _end_group(self.process)
        self.process = None
        return len(left)

    def query(self, sql: str, *parameters: object) -> list[tuple]:
        """Read the node's SQLite database (WAL: a reader does not block the node)."""
        with sqlite3.connect(self.db_path, timeout=30) as db:
            return db.execute(sql, parameters).fetchall()

    def wait_for_log(self, text: str, timeout_s: float = 120.0) -> float:
        """Seconds until ``text`` appears in the node's log (e.g. "ready": a worker started)."""
        return wait_for(lambda: text in self.log_path.read_text(errors="replace"), timeout_s, text)

    def restart(self, **sections: dict) -> float:
        """Stop ``serve``, update its configuration's ``sections``, start it again."""
        if self.process is not None:
            _end_group(self.process)
            self.process = None
        for name, values in sections.items():
            self.config.setdefault(name, {}).update(values)
        self.config_path.write_text(yaml.safe_dump(self.config))
        return self.start()

    def status(self) -> dict:
        done = subprocess.run(
            [sys.executable, "-m", "ctp_node", "status", "--json", "--config",
             str(self.config_path)],
            capture_output=True,
            text=True,
            env=NODE_ENV,
            timeout=120,
        )  # fmt: skip
        return json.loads(done.stdout)

    def pacs_objects(self) -> list[pydicom.Dataset]:
        return self.pacs.objects()

    def stop(self) -> None:
        if self.process is not None:
            _end_group(self.process)
            self.process = None
        self.pacs.stop()
