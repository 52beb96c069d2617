"""What the node's log says while it works: its own lines, not the libraries' chatter."""

from __future__ import annotations

import re

import pytest

from tests.conftest import stored_count, storescu, wait_until


@pytest.mark.slow
def test_a_jobs_log_has_no_highdicom_info_lines(small_study, serve_node) -> None:
    """highdicom logs at INFO every module it copies into an output object (~52 lines for a
    study's 13 outputs); the node's log keeps its own line about the outputs, and only
    highdicom's warnings."""
    _, paths = small_study
    node = serve_node([])
    assert stored_count(storescu(paths, node.port, node.ae_title)) == len(paths)

    def finished() -> dict | None:
        jobs = node.status()["jobs"]
        return jobs[0] if jobs and jobs[0]["state"] in ("done", "failed") else None

    job = wait_until(finished, 240, "the job to end")
    log = node.log()
    assert job["state"] == "done", log[-3000:]
    assert re.search(r"INFO ctp_node\.pipeline: series .*: 13 outputs", log), log[-3000:]
    assert not re.findall(r"^.* (INFO|DEBUG) highdicom.*$", log, re.MULTILINE)
