"""A failed job in the web console of a real ``serve``: the error, the failure notice's page,
and Retry, which queues the series again with who asked."""

from __future__ import annotations

import pytest

from tests.conftest import stored_count, storescu, wait_until
from tests.http.test_console_pages import http_post
from tests.study_objects import write_series_without_bolus

pytestmark = pytest.mark.slow


def test_a_failed_job_shows_its_error_and_notice_and_can_be_retried(
    small_study, serve_node, tmp_path
) -> None:
    phantom, _ = small_study
    paths = write_series_without_bolus(phantom.acquisition, tmp_path / "flat", seed=7)
    node = serve_node([], http=True)
    assert stored_count(storescu(paths, node.port, node.ae_title)) == len(paths)

    def failed_with_notice() -> dict | None:
        jobs = node.status()["jobs"]
        job = jobs[0] if jobs else None
        return job if job and job["state"] == "failed" and job["result_dir"] else None

    job = wait_until(failed_with_notice, 180, "the job to fail with its notice written")
    code, body = node.http_get(f"/jobs/{job['id']}")
    page = body.decode()
    assert code == 200
    assert f"Job {job['id']}: failed" in page
    error = page[page.index('id="error">') :]
    assert "contrast" in error.lower()
    assert "<h2>Failure notice</h2>" in page  # its Secondary Capture page, drawn
    code, picture = node.http_get(f"/jobs/{job['id']}/pages/0.png")
    assert code == 200 and picture.startswith(b"\x89PNG")
    assert 'id="retry-form"' in page
    assert 'id="correction"' not in page  # no result to choose a new AIF on
    studies = node.http_get("/")[1].decode()
    assert f'<a href="/jobs/{job["id"]}">job {job["id"]}</a>: failed' in studies

    code, location = http_post(node.http_port, f"/jobs/{job['id']}/retry", {})
    assert code == 303
    retried = int(location.rsplit("/", 1)[1])
    assert retried > job["id"]
    jobs = {j["id"]: j for j in node.status()["jobs"]}
    assert jobs[retried]["requested_by"] == "console 127.0.0.1"
    assert f"job {retried}" in node.http_get(f"/jobs/{job['id']}")[1].decode()
    # the same acquisition fails the same way again
    wait_until(
        lambda: next(j for j in node.status()["jobs"] if j["id"] == retried)["state"] == "failed",
        180,
        "the retried job to fail again",
    )
