"""The hand-overs of serve's loops: a wake ends a poll's wait at once."""

from __future__ import annotations

import multiprocessing
import threading
import time

from ctp_node.service import Wakeups, _loop, pause


def test_pause_ends_when_woken_and_clears_the_wake() -> None:
    stop, wake = threading.Event(), threading.Event()
    threading.Timer(0.2, wake.set).start()
    started = time.monotonic()
    pause(stop, wake, 60.0)
    assert time.monotonic() - started < 30.0
    assert not wake.is_set()  # the next pause waits again


def test_pause_without_a_wake_waits_for_the_stop() -> None:
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    pause(stop, None, 60.0)
    assert stop.is_set() and time.monotonic() - started < 30.0


def test_a_loop_runs_its_step_again_when_woken_not_after_its_interval() -> None:
    stop, wake = threading.Event(), threading.Event()
    rounds: list[float] = []
    thread = _loop("test", stop, 600.0, lambda: rounds.append(time.monotonic()), wake=wake)
    try:
        deadline = time.monotonic() + 30
        while not rounds and time.monotonic() < deadline:
            time.sleep(0.01)
        wake.set()
        while len(rounds) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(rounds) == 2  # woken: a 600 s interval would not have ended yet
    finally:
        stop.set()
        wake.set()
        thread.join(timeout=30)
    assert not thread.is_alive()


def _wait_in_child(wakeups: Wakeups, answered: multiprocessing.Queue) -> None:
    answered.put(wakeups.jobs_queued.wait(60.0))


def test_wakeups_reach_a_worker_process_of_the_fork_server() -> None:
    context = multiprocessing.get_context("forkserver")
    wakeups, answered = Wakeups(context), context.Queue()
    child = context.Process(target=_wait_in_child, args=(wakeups, answered))
    child.start()
    try:
        time.sleep(0.2)
        wakeups.jobs_queued.set()
        assert answered.get(timeout=30) is True
    finally:
        child.join(timeout=30)
    assert child.exitcode == 0
