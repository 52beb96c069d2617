"""The scanner's side of the soak benchmark: DCMTK ``storescu`` and ``echoscu`` against the
node, with their statuses and latency, and a prober that runs both every second."""

from __future__ import annotations

import collections
import re
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from peers import ENV
from pydicom.uid import generate_uid

HOST = "127.0.0.1"
#: DCMTK timeouts of the scanner's tools (connection, ACSE, DIMSE), seconds.
DCMTK_TIMEOUT_S = 10
#: What a scanner expects: a probe slower than this counts as late.
PROBE_TARGET_S = 2.0


def dcmtk(
    tool: str,
    port: int,
    files: Iterable[str] = (),
    options: Iterable[str] = (),
    timeout_s: float = 120,
) -> tuple[int, str, float]:
    """Run a DCMTK tool (verbose, as the scanner SCANNER) against the node; (exit code or -1
    on timeout, output, seconds)."""
    timeouts = [flag + " " + str(DCMTK_TIMEOUT_S) for flag in ("-to", "-ta", "-td")]
    command = [f"/usr/bin/{tool}", "-v", *" ".join(timeouts).split(), *options]
    command += ["-aet", "SCANNER", "-aec", "CTPNODE", HOST, str(port), *files]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=timeout_s)
        return done.returncode, done.stdout + done.stderr, time.perf_counter() - started
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        return -1, output, time.perf_counter() - started


_RESPONSE = re.compile(r"Received Store Response \((.*)\)")


def store_responses(output: str) -> dict[str, str]:
    """File → the status text storescu -v printed for it ("Success", "Refused: Out of
    Resources", "Unknown Status: 0x110"…); files without a response are absent."""
    statuses: dict[str, str] = {}
    current = None
    for line in output.splitlines():
        if "Sending file: " in line:
            current = line.split("Sending file: ", 1)[1].strip()
        elif (match := _RESPONSE.search(line)) and current is not None:
            statuses[current] = match.group(1)
            current = None
    return statuses


def send_study(
    files: list[Path], port: int, *, halt: bool = True, timeout_s: float = 300
) -> dict[str, str]:
    """Send with storescu in one association; the status of each file that got one. storescu
    stops at the first failed store unless ``halt`` is False (its ``--no-halt``)."""
    options = () if halt else ("--no-halt",)
    _, output, _ = dcmtk("storescu", port, map(str, files), options, timeout_s=timeout_s)
    return store_responses(output)


def probe_failure(code: int, output: str) -> str:
    """Why a DCMTK probe failed, in a few words."""
    text = output.lower()
    if code == -1:
        return "hung (killed after 30 s)"
    if "local limit exceeded" in text:
        return "A-ASSOCIATE-RJ: local limit exceeded"
    if "association rejected" in text:
        return "A-ASSOCIATE-RJ"
    if "abort" in text:
        return "aborted"
    if "connection refused" in text:
        return "connection refused"
    if "timeout" in text or "timed out" in text:
        return "timeout"
    return f"failed (exit {code})"


@dataclass
class Probe:
    tool: str
    at_s: float
    seconds: float
    failure: str = ""  # empty: success


class Prober:
    """The scanner: C-ECHO and C-STORE of one small CT image, each every ``interval_s``,
    in two threads; every probe is recorded with its latency, failed or not."""

    def __init__(self, port: int, template: Path, folder: Path, interval_s: float = 1.0) -> None:
        self.port, self.template, self.folder, self.interval_s = port, template, folder, interval_s
        self.folder.mkdir(parents=True, exist_ok=True)
        self.probes: list[Probe] = []
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._loop, args=(tool,), daemon=True)
            for tool in ("echoscu", "storescu")
        ]
        self.series = generate_uid()
        self.count = 0

    def __enter__(self) -> Prober:
        self.started = time.perf_counter()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _image(self) -> Path:
        self.count += 1
        ds = pydicom.dcmread(self.template)
        ds.SeriesInstanceUID = self.series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = self.folder / f"probe-{self.count}.dcm"
        ds.save_as(path, enforce_file_format=True)
        return path

    def _loop(self, tool: str) -> None:
        while not self.stop.is_set():
            began = time.perf_counter()
            if tool == "echoscu":
                code, output, seconds = dcmtk(tool, self.port, timeout_s=30)
                ok = code == 0
            else:
                image = self._image()
                code, output, seconds = dcmtk(tool, self.port, [str(image)], timeout_s=30)
                ok = code == 0 and "Success" in store_responses(output).values()
                image.unlink()
            failure = "" if ok else probe_failure(code, output)
            self.probes.append(Probe(tool, began - self.started, seconds, failure))
            self.stop.wait(max(0.0, self.interval_s - (time.perf_counter() - began)))


def probe_rows(label: str, probes: list[Probe], reference: dict[str, float] | None) -> list:
    rows = []
    for tool, service in (("echoscu", "C-ECHO"), ("storescu", "C-STORE")):
        mine = [p for p in probes if p.tool == tool]
        if not mine:
            continue
        seconds = np.array([p.seconds for p in mine])
        p50, p99 = np.percentile(seconds, [50, 99])
        failures = collections.Counter(p.failure for p in mine if p.failure)
        on_time = sum(1 for p in mine if not p.failure and p.seconds <= PROBE_TARGET_S)
        ratio = ""
        if reference is not None:
            ratio = f"{p50 / reference[tool + '50']:.1f}× / {p99 / reference[tool + '99']:.1f}×"
        rows.append(
            [
                label,
                service,
                len(mine),
                f"{on_time} ({100 * on_time / len(mine):.0f} %)",
                "; ".join(f"{n} {why}" for why, n in failures.most_common()) or "0",
                f"{p50:.2f}",
                f"{p99:.2f}",
                f"{seconds.max():.2f}",
                ratio,
            ]
        )
    return rows


def reference_latency(probes: list[Probe]) -> dict[str, float]:
    figures = {}
    for tool in ("echoscu", "storescu"):
        seconds = [p.seconds for p in probes if p.tool == tool] or [float("nan")]
        figures[tool + "50"], figures[tool + "99"] = np.percentile(seconds, [50, 99])
    return figures
