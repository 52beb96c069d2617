"""Rendering the summary pages in forked processes while the caller builds the other outputs.

A summary page is 0.1–0.4 s of matplotlib drawing that holds the GIL, so threads would not
overlap them; the seven pages were half of the time from a computed result to its outputs on
disk. :class:`PageRenders` forks a process per CPU the node may use but one; they draw the
pages while the caller builds and writes the Parametric Maps and the SR. Then the caller draws
the pages no child has begun, from the last one backwards, and :meth:`PageRenders.results`
returns them all in order.

The children only draw: they run the page functions on the data they inherit (no database, no
network, no files) and send back the RGB arrays. Nothing is lost when that fails: if the
processes cannot be started, a child dies (e.g. killed for memory) or they do not answer within
:data:`RENDER_TIMEOUT_S`, the pages not returned are drawn in this process, with a warning in
the log. With one usable CPU everything is drawn here, as before.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

import numpy as np

log = logging.getLogger(__name__)

#: Seconds :meth:`PageRenders.results` waits for the children before drawing the missing pages
#: itself. A page takes under a second; minutes only on a machine so loaded that drawing here
#: is no slower. Long enough not to give up on a busy machine, short enough that a child that
#: hung (a lock held at the fork) delays a stroke result by two minutes, not forever.
RENDER_TIMEOUT_S = 120.0

#: The pages being drawn: the forked children find them here (a closure cannot be pickled, an
#: index can). One set at a time per process.
_RENDERS: Sequence[Callable[[], np.ndarray]] = ()


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _render(index: int) -> np.ndarray:
    return _RENDERS[index]()


class PageRenders:
    """Pages being drawn: started on construction, collected by :meth:`results`.

    ``processes``: how many children draw (default: one fewer than :func:`usable_cpus`, as this
    process draws too once it calls :meth:`results`); 0, or a platform without ``fork``, draws
    every page in :meth:`results`, in this process.
    Use as a context manager (or call :meth:`close`) so that the children are stopped when the
    caller fails before collecting the pages.
    """

    def __init__(
        self, renders: Sequence[Callable[[], np.ndarray]], processes: int | None = None
    ) -> None:
        global _RENDERS
        self._renders = list(renders)
        self._futures: list[Future] = []
        self._pool: ProcessPoolExecutor | None = None
        self._children: list[multiprocessing.process.BaseProcess] = []
        wanted = min(usable_cpus() - 1 if processes is None else processes, len(self._renders))
        if wanted < 1 or _RENDERS or "fork" not in multiprocessing.get_all_start_methods():
            return
        _RENDERS = self._renders
        before = set(multiprocessing.active_children())
        try:
            self._pool = ProcessPoolExecutor(wanted, mp_context=multiprocessing.get_context("fork"))
            self._futures = [self._pool.submit(_render, i) for i in range(len(self._renders))]
        except (OSError, BrokenProcessPool) as error:  # no fork (memory, process limit)
            log.warning("summary pages: could not start processes to draw them (%s)", error)
            self.close()
        self._children = [p for p in multiprocessing.active_children() if p not in before]

    def __enter__(self) -> PageRenders:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def results(self) -> list[np.ndarray]:
        """The pages in order. This process draws, from the last page backwards, the pages no
        child has begun (it is free now), then collects the children's; any page they did not
        return is drawn here too."""
        drawn: dict[int, np.ndarray] = {}
        for index in reversed(range(len(self._futures))):
            if not self._futures[index].cancel():
                break  # the children have reached this page
            drawn[index] = self._renders[index]()
        deadline = time.monotonic() + RENDER_TIMEOUT_S
        pages = [
            drawn[index] if index in drawn else self._result(index, deadline)
            for index in range(len(self._renders))
        ]
        self.close(at_once=False)
        return pages

    def _result(self, index: int, deadline: float) -> np.ndarray:
        if index < len(self._futures):
            try:
                return self._futures[index].result(timeout=max(0.0, deadline - time.monotonic()))
            except BrokenProcessPool as error:
                log.warning("summary page %d: its process died (%s); drawn here", index + 1, error)
            except FutureTimeout:
                log.warning(
                    "summary page %d: not drawn within %.0f s by its process; drawn here",
                    index + 1,
                    RENDER_TIMEOUT_S,
                )
            self._futures = []  # the pool is gone or stuck: draw the rest here
            self.close()
        return self._renders[index]()

    def close(self, *, at_once: bool = True) -> None:
        """Stop the children: ``at_once`` (a failure: a page still being drawn is of no use any
        more) terminates them; otherwise they have finished and are let exit."""
        global _RENDERS
        if self._pool is not None:
            self._pool.shutdown(wait=not at_once, cancel_futures=True)
            for child in self._children:
                if at_once and child.is_alive():
                    child.kill()  # not SIGTERM: a child keeps its parent's handler of it
            for child in self._children:
                child.join(timeout=5)
            self._pool = None
        self._children = []
        if _RENDERS is self._renders:
            _RENDERS = ()
