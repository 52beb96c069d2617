"""Summary pages drawn in forked processes: the same pixels as drawn here, and never lost when a
drawing process dies, hangs or cannot help."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable

import numpy as np
import pydicom
import pytest

from ctp_node.perfusion.acquisition import Acquisition
from ctp_node.perfusion.result import PerfusionResult
from ctp_node.report import build_secondary_captures, render_pool
from ctp_node.report.render_pool import PageRenders
from ctp_node.report.settings import ReportSettings

PARENT = os.getpid()


def page(value: int, *, in_child: Callable[[], None] | None = None) -> Callable[[], np.ndarray]:
    """A page of ``value`` that also says which process drew it (pixel [0, 0, 0]: 1 here, 2 in
    a child); ``in_child`` runs first when a child draws it."""

    def draw() -> np.ndarray:
        child = os.getpid() != PARENT
        if child and in_child is not None:
            in_child()
        pixels = np.full((4, 5, 3), value, np.uint8)
        pixels[0, 0, 0] = 2 if child else 1
        return pixels

    return draw


def no_drawing_children() -> bool:
    """No process of ours is left (a killed one may take a moment to be reaped)."""
    deadline = time.monotonic() + 10
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    left = multiprocessing.active_children()
    print("children left:", [(c.name, c.pid, c.exitcode) for c in left])
    return not left


def test_pages_drawn_by_other_processes_are_the_pages_drawn_here(
    result: PerfusionResult, acquisition: Acquisition, source_headers: list[pydicom.Dataset]
) -> None:
    here = build_secondary_captures(result, acquisition, source_headers, ReportSettings())
    forked = build_secondary_captures(
        result, acquisition, source_headers, ReportSettings(), processes=2
    )
    assert [p.SOPInstanceUID for p in forked] == [p.SOPInstanceUID for p in here]
    for mine, theirs in zip(here, forked, strict=True):
        assert np.array_equal(mine.pixel_array, theirs.pixel_array)
    assert no_drawing_children()


def test_the_caller_draws_what_no_child_has_begun() -> None:
    slow = page(0, in_child=lambda: time.sleep(0.5))
    with PageRenders([slow, *(page(v) for v in range(1, 7))], processes=1) as renders:
        pages = renders.results()
    assert [int(p[1, 1, 0]) for p in pages] == [0, 1, 2, 3, 4, 5, 6]
    drawn_by = [int(p[0, 0, 0]) for p in pages]
    assert drawn_by[0] == 2, "the first page is the child's"
    assert drawn_by[-1] == 1, "the child was busy: the last page is drawn here"
    assert no_drawing_children()


def test_a_page_whose_process_died_is_drawn_here(caplog: pytest.LogCaptureFixture) -> None:
    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer would

    caplog.set_level(logging.WARNING, logger=render_pool.__name__)
    with PageRenders([page(7, in_child=die), page(8, in_child=die)], processes=2) as renders:
        pages = renders.results()
    assert [int(p[1, 1, 0]) for p in pages] == [7, 8]
    assert [int(p[0, 0, 0]) for p in pages] == [1, 1]
    assert "its process died" in caplog.text
    assert no_drawing_children()


def test_a_hung_process_is_given_up_and_stopped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(render_pool, "RENDER_TIMEOUT_S", 1.0)
    caplog.set_level(logging.WARNING, logger=render_pool.__name__)
    started = time.monotonic()
    hang = page(9, in_child=lambda: time.sleep(3600))
    with PageRenders([hang, hang], processes=2) as renders:
        pages = renders.results()
    assert time.monotonic() - started < 30
    assert [int(p[0, 0, 0]) for p in pages] == [1, 1]
    assert "not drawn within 1 s" in caplog.text
    assert no_drawing_children()


def test_an_error_in_a_page_is_raised_as_drawn_here() -> None:
    def broken() -> np.ndarray:
        raise ValueError("no such map")

    with PageRenders([broken, page(1)], processes=1) as renders:
        with pytest.raises(ValueError, match="no such map"):
            renders.results()
    assert no_drawing_children()


def test_children_stop_when_the_caller_fails_first() -> None:
    hang = page(3, in_child=lambda: time.sleep(3600))
    with pytest.raises(RuntimeError):
        with PageRenders([hang, hang], processes=2):
            raise RuntimeError("the maps could not be built")
    assert no_drawing_children()


def test_one_usable_cpu_draws_everything_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render_pool, "usable_cpus", lambda: 1)
    with PageRenders([page(1), page(2)]) as renders:
        assert no_drawing_children()
        pages = renders.results()
    assert [int(p[0, 0, 0]) for p in pages] == [1, 1]
