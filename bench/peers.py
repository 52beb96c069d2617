"""DCMTK peers on loopback for the benchmarks: free ports, C-ECHO waits, timed storescu."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

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
