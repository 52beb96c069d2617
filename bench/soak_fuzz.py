"""Part (c) of the soak benchmark: about 100 hostile connections at once (:mod:`fuzz`) while
the scanner's prober (:class:`scanner.Prober`) runs C-ECHO and C-STORE every second; the node's
RSS, threads and file descriptors from /proc, and its log."""

from __future__ import annotations

import collections
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fuzz import KINDS, Case, FuzzSettings, cases, play
from peers import Node, markdown_table
from scanner import (
    DCMTK_TIMEOUT_S,
    HOST,
    PROBE_TARGET_S,
    Prober,
    dcmtk,
    probe_failure,
    probe_rows,
    reference_latency,
)

#: How long a hostile client waits to connect and for each answer, seconds.
ANSWER_TIMEOUT_S = 3.0
#: How long idle and stalled hostile connections are held open, seconds (shortest, longest).
HOLD_S = (1.0, 10.0)
#: Inputs of each kind played one at a time before the storm.
SOLO_CASES = 3
#: The fuzz part stops sending new inputs after this many seconds, whatever their count.
FUZZ_DEADLINE_S = 900.0


def process_figures(pid: int) -> dict[str, int]:
    """RSS (kB), threads and open file descriptors of a process, from /proc."""
    figures = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "Threads"):
                figures[name] = int(value.split()[0])
        figures["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, ValueError):
        pass
    return figures


class Sampler:
    """Every second: the node's figures and how many hostile connections are open."""

    def __init__(self, pid: int, active: Callable[[], int]) -> None:
        self.pid, self.active = pid, active
        self.samples: list[tuple[dict[str, int], int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(1.0):
            self.samples.append((process_figures(self.pid), self.active()))

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


@dataclass
class FuzzRun:
    outcomes: dict[str, collections.Counter] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    active: int = 0
    sent: int = 0
    seconds: float = 0.0


def play_each_kind(port: int, seed: int, per_kind: int) -> dict[str, collections.Counter]:
    """``per_kind`` cases of every kind played one at a time (holds of 1-2 s): what the node
    answers to each when nothing else is going on. The broken data sets go first: they need an
    association, and the other kinds may leave the node without a free one for a while."""
    chosen: dict[str, list[Case]] = {kind: [] for kind in KINDS}
    for case in cases(seed, 100_000, FuzzSettings(hold_s=(1.0, 2.0))):
        if len(chosen[case.kind]) < per_kind:
            chosen[case.kind].append(case)
        if all(len(found) == per_kind for found in chosen.values()):
            break
    outcomes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for kind in sorted(KINDS, key=lambda kind: not kind.startswith("dataset_")):
        for case in chosen[kind]:
            outcomes[kind][play(case, HOST, port, answer_timeout_s=10.0)] += 1
    return outcomes


def echo_refused_for(port: int, limit_s: float) -> str:
    """Seconds until C-ECHO succeeds (polled every second), as text."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        code, output, _ = dcmtk("echoscu", port, timeout_s=30)
        if code == 0:
            return f"{time.perf_counter() - started:.0f} s"
        failure = probe_failure(code, output)
        time.sleep(1.0)
    return f"more than {limit_s:.0f} s (last: {failure})"


def run_fuzz(
    run: FuzzRun,
    port: int,
    seed: int,
    count: int,
    connections: int,
    settings: FuzzSettings,
    deadline_s: float,
) -> None:
    """Play ``count`` cases with ``connections`` client threads at once; tally in ``run``."""
    lock = threading.Lock()
    pending = cases(seed, count, settings)
    started = time.perf_counter()

    def client() -> None:
        while time.perf_counter() - started < deadline_s:
            with lock:
                case = next(pending, None)
                if case is None:
                    return
                run.active += 1
            outcome = play(case, HOST, port, answer_timeout_s=ANSWER_TIMEOUT_S)
            with lock:
                run.active -= 1
                run.sent += 1
                run.outcomes[case.kind][outcome] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1.0, deadline_s + 120 - (time.perf_counter() - started)))
    run.seconds = time.perf_counter() - started


def kind_row(kind: str, outcomes: collections.Counter) -> list:
    unreached = sum(n for o, n in outcomes.items() if o.startswith("connect failed"))
    reached = collections.Counter(
        {o: n for o, n in outcomes.items() if not o.startswith("connect failed")}
    )
    common = "; ".join(f"{n} {o}" for o, n in reached.most_common(3))
    return [kind, sum(outcomes.values()), unreached, common]


_SHAPE = re.compile(r"^\S+ \S+ (\w+) ([\w.]+): (.{0,70})")


def log_figures(log: str) -> tuple[int, int, int, list[tuple[str, int]]]:
    """(lines, "Traceback" lines, ERROR lines, the five commonest message shapes)."""
    lines = log.splitlines()
    shapes: collections.Counter = collections.Counter()
    for line in lines:
        if match := _SHAPE.match(line):
            text = re.sub(r"[0-9][0-9.]*", "#", match.group(3))
            text = re.sub(r"'[^']*'", "'…'", text)
            shapes[f"{match.group(1)} {match.group(2)}: {text}"] += 1
    errors = sum(1 for line in lines if " ERROR " in line)
    return len(lines), log.count("Traceback"), errors, shapes.most_common(5)


@dataclass
class Recovery:
    echo: str  # when C-ECHO answered again, or why it did not
    threads: str  # when the thread count came back, or that it did not
    watched_s: float


def watch_recovery(node: Node, threads_before: int, watch_s: float) -> Recovery:
    """After the fuzz: seconds until C-ECHO succeeds again and until the node's threads are
    back to ``threads_before`` (+2), watched for at most ``watch_s``."""
    started = time.perf_counter()
    echo_s = threads_s = None
    failure = ""
    while time.perf_counter() - started < watch_s and (echo_s is None or threads_s is None):
        if threads_s is None and process_figures(node.pid).get("Threads", 0) <= threads_before + 2:
            threads_s = time.perf_counter() - started
        if echo_s is None:
            code, output, _ = dcmtk("echoscu", node.port, timeout_s=30)
            if code == 0:
                echo_s = time.perf_counter() - started
            failure = probe_failure(code, output) if code else ""
        time.sleep(1.0)
    watched_s = time.perf_counter() - started
    return Recovery(
        echo=f"after {echo_s:.0f} s" if echo_s is not None
        else f"**not within {watched_s:.0f} s** (last: {failure})",
        threads=f"after {threads_s:.0f} s" if threads_s is not None
        else f"**not within {watched_s:.0f} s**",
        watched_s=watched_s,
    )  # fmt: skip


def fuzz(
    root: Path,
    template: list[Path],
    seed: int,
    count: int,
    connections: int,
    reference_s: float,
    settle_s: float,
) -> list[str]:
    listener = {
        "max_associations": 10,
        "acse_timeout_s": 30.0,
        "dimse_timeout_s": 60.0,
        "network_timeout_s": 60.0,
    }  # the defaults, written out
    node = Node(root / "node", node=listener)
    image = template[len(template) // 2]
    try:
        node.wait_for_log(" ready")  # the worker has started: the node is idle
        with Prober(node.port, image, root / "probe") as quiet:
            time.sleep(reference_s)
        reference = reference_latency(quiet.probes)
        alone = play_each_kind(node.port, seed + 1, SOLO_CASES)
        refused = echo_refused_for(node.port, 90.0)
        before = process_figures(node.pid)
        log_start = node.log_path.stat().st_size
        run = FuzzRun()
        with (
            Sampler(node.pid, lambda: run.active) as sampler,
            Prober(node.port, image, root / "probe") as loud,
        ):
            run_fuzz(
                run,
                node.port,
                seed,
                count,
                connections,
                FuzzSettings(hold_s=HOLD_S),
                deadline_s=FUZZ_DEADLINE_S,
            )
        at_end = process_figures(node.pid)
        recovery = watch_recovery(node, before["Threads"], settle_s)
        after = process_figures(node.pid)
        alive = node.process is not None and node.process.poll() is None
        with node.log_path.open("rb") as handle:
            handle.seek(log_start)
            log = handle.read().decode(errors="replace")
        rejections = node.query("SELECT count(*) FROM rejections")[0][0]
        stored = node.query("SELECT count(*) FROM instances")[0][0]
    finally:
        node.stop()
    active = [a for _, a in sampler.samples] or [0]
    peak = {
        key: max((f.get(key, 0) for f, _ in sampler.samples), default=0)
        for key in ("VmRSS", "Threads", "fds")
    }
    lines, tracebacks, errors, shapes = log_figures(log)
    out = [
        markdown_table(
            f"(c) before the storm: {SOLO_CASES} inputs of each kind, one at a time (seed "
            f"{seed + 1}; broken data sets first), and what the node answered; after the last, "
            f"C-ECHO was refused for {refused}",
            ["kind", "outcomes"],
            [[kind, "; ".join(f"{n} {o}" for o, n in alone[kind].most_common())] for kind in KINDS],
        ),
        markdown_table(
            "(c) probes every second: DCMTK echoscu and storescu (one "
            f"{image.stat().st_size // 1024} kB CT image), timeouts {DCMTK_TIMEOUT_S} s; "
            "reference first on the same node, then under fuzz",
            [
                "phase",
                "service",
                "probes",
                f"OK within {PROBE_TARGET_S:g} s",
                "failures",
                "p50 s",
                "p99 s",
                "max s",
                "p50 / p99 vs reference",
            ],
            [
                *probe_rows(
                    f"reference ({reference_s:.0f} s, no hostile traffic)", quiet.probes, None
                ),
                *probe_rows(f"under fuzz ({run.seconds:.0f} s)", loud.probes, reference),
            ],
        ),
        markdown_table(
            f"(c) the node under fuzz: {run.sent} inputs (seed {seed}) over {connections} "
            f"client connections at once; listener config {listener}",
            ["measure", "before", "peak during", "at the end", f"after {recovery.watched_s:.0f} s"],
            [
                [
                    "RSS, MB",
                    f"{before['VmRSS'] / 1024:.0f}",
                    f"{peak['VmRSS'] / 1024:.0f}",
                    f"{at_end.get('VmRSS', 0) / 1024:.0f}",
                    f"{after.get('VmRSS', 0) / 1024:.0f}",
                ],
                [
                    "threads",
                    before["Threads"],
                    peak["Threads"],
                    at_end.get("Threads", "–"),
                    after.get("Threads", "–"),
                ],
                [
                    "open file descriptors",
                    before["fds"],
                    peak["fds"],
                    at_end.get("fds", "–"),
                    after.get("fds", "–"),
                ],
                [
                    "hostile connections open (mean / max)",
                    "",
                    f"{np.mean(active):.0f} / {max(active)}",
                    "",
                    "",
                ],
                ["serve alive", "yes", "", "", "yes" if alive else "**no (crashed)**"],
                ["after the run: C-ECHO answered again", "", "", "", recovery.echo],
                [
                    f"after the run: threads back to ≤ {before['Threads'] + 2}",
                    "",
                    "",
                    "",
                    recovery.threads,
                ],
                [
                    "log lines / Traceback lines / ERROR lines",
                    "",
                    "",
                    f"{lines} / {tracebacks} / {errors}",
                    "",
                ],
                [
                    "refusals recorded (rejections), instances recorded",
                    "",
                    "",
                    f"{rejections}, {stored}",
                    "",
                ],
            ],
        ),
        markdown_table(
            "(c) inputs by kind and what the node did with those that reached it (the three "
            f"commonest outcomes; the client waits {ANSWER_TIMEOUT_S:g} s to connect and for "
            "each answer)",
            ["kind", "inputs", "connect timed out", "outcomes of the others"],
            [
                *(kind_row(kind, run.outcomes[kind]) for kind in KINDS),
                kind_row("all", sum(run.outcomes.values(), collections.Counter())),
            ],
        ),
        markdown_table(
            "(c) the node's five commonest log messages during the fuzz (digits → #)",
            ["count", "message"],
            [[n, shape.replace("|", "/")] for shape, n in shapes],
        ),
    ]
    return out
