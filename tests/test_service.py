"""The running node survives what happens in a hospital: restarts and crashed workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import (
    free_port,
    node_config,
    orthanc_destination,
    stop_process,
    stored_count,
    storescu,
    wait_until,
)

pytestmark = pytest.mark.slow


def test_series_survives_a_restart_mid_transfer(phantom_study, orthanc, serve_node) -> None:
    _, paths = phantom_study
    node = serve_node([orthanc_destination(orthanc)], ingest={"series_stable_after_s": 4.0})
    half = len(paths) // 2
    assert stored_count(storescu(paths[:half], node.port, node.ae_title)) == half
    node.restart()
    assert stored_count(storescu(paths[half:], node.port, node.ae_title)) == len(paths) - half

    def done():
        jobs = node.status()["jobs"]
        return jobs and jobs[-1]["state"] == "done" and jobs

    jobs = wait_until(done, 180, "the job to finish after the restart")
    # If the restart outlasted the quiet time, the first half was queued, then superseded by
    # the late instances before any worker ran it: only the whole series is processed.
    assert [j["state"] for j in jobs[:-1]] == ["superseded"] * (len(jobs) - 1)
    assert all(j["attempts"] == 0 for j in jobs[:-1])
    summary = json.loads(
        (node.root / "storage" / jobs[-1]["result_dir"] / "results.json").read_text()
    )
    assert summary["acquisition"]["time_points"] * summary["acquisition"]["slices"] == len(paths)


def test_killed_worker_job_is_taken_over_at_once_not_after_its_lease(
    phantom_study, orthanc, serve_node
) -> None:
    _, paths = phantom_study
    node = serve_node([orthanc_destination(orthanc)], worker={"lease_s": 120.0})
    assert stored_count(storescu(paths, node.port, node.ae_title)) == len(paths)

    def running():
        jobs = node.status()["jobs"]
        return jobs and jobs[0]["state"] == "running" and jobs[0]

    job = wait_until(running, 60, "a worker to claim the job", interval_s=0.05)
    worker_pid = int(job["worker_id"].rsplit(":", 1)[1])
    os.kill(worker_pid, signal.SIGKILL)  # as the kernel's OOM killer would
    killed_at = time.monotonic()

    def taken_again():
        jobs = node.status()["jobs"]
        return (
            jobs
            and jobs[0]["attempts"] == 2
            and int(jobs[0]["worker_id"].rsplit(":", 1)[1]) != worker_pid
            and jobs[0]
        )

    wait_until(taken_again, 10, "another worker to take the job up (the lease is 120 s)")
    print(f"taken up again {time.monotonic() - killed_at:.1f} s after the kill")

    def done():
        jobs = node.status()["jobs"]
        return jobs and jobs[0]["state"] == "done" and jobs[0]

    job = wait_until(done, 180, "another worker to finish the job")
    assert job["attempts"] == 2
    assert "exited" in node.log() and "given back" in node.log()


def test_scale_out_on_postgresql_with_a_separate_worker(
    phantom_study, orthanc, serve_node, postgres_url
) -> None:
    """serve (listener, scheduler, sender, no worker) + ctp-node worker, on PostgreSQL."""
    from sqlalchemy import create_engine

    from ctp_node.store.models import Base

    engine = create_engine(postgres_url)
    Base.metadata.drop_all(engine)  # a fresh database for this node
    engine.dispose()
    _, paths = phantom_study
    node = serve_node(
        [orthanc_destination(orthanc)],
        database={"url": postgres_url},
        worker={"count": 0, "poll_interval_s": 0.5},
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "ctp_node", "worker", "--config", str(node.config_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert stored_count(storescu(paths, node.port, node.ae_title)) == len(paths)

        def done():
            jobs = node.status()["jobs"]
            return jobs and jobs[0]["state"] == "done" and jobs[0]

        job = wait_until(done, 180, "the separate worker to finish the job")
        assert int(job["worker_id"].rsplit(":", 1)[1]) == worker.pid
        wait_until(
            lambda: (
                node.status()["jobs"][0]["exports"]
                == {"orthanc:sent": sum(node.status()["jobs"][0]["exports"].values())}
            ),
            60,
            "every output to be sent",
        )
    finally:
        stop_process(worker)


def test_job_that_kills_its_workers_ends_with_a_failure_notice(
    phantom_study, orthanc, serve_node
) -> None:
    """A job that crashes every worker it runs on must not fail silently: PACS is told."""
    _, paths = phantom_study
    node = serve_node([orthanc_destination(orthanc)], worker={"lease_s": 3.0, "max_attempts": 1})
    assert stored_count(storescu(paths, node.port, node.ae_title)) == len(paths)

    def running():
        jobs = node.status()["jobs"]
        return jobs and jobs[0]["state"] == "running" and jobs[0]

    job = wait_until(running, 60, "a worker to claim the job", interval_s=0.05)
    os.kill(int(job["worker_id"].rsplit(":", 1)[1]), signal.SIGKILL)

    def notice_sent():
        jobs = node.status()["jobs"]
        return (
            jobs
            and jobs[0]["state"] == "failed"
            and jobs[0]["exports"] == {"orthanc:sent": 2}
            and jobs[0]
        )

    job = wait_until(notice_sent, 120, "the failure notice to reach PACS")
    assert "gave up after 1 attempts" in job["error"]
    classes = {
        orthanc.get(f"/instances/{i}/simplified-tags")["SOPClassUID"]
        for i in orthanc.get("/instances")
    }
    assert classes == {"1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.88.34"}


def test_serve_refuses_to_start_when_its_workers_could_not_start(tmp_path) -> None:
    """A TMPDIR so long that the fork server's socket path cannot exist: without the check,
    serve received studies that no worker ever computed (it retried in its log each second)."""
    long_tmp = tmp_path / ("t" * 60) / ("m" * 60)
    long_tmp.mkdir(parents=True)
    config = node_config(tmp_path, free_port(), [])
    config_path = tmp_path / "ctp-node.yaml"
    config_path.write_text(yaml.safe_dump(config))
    served = subprocess.run(
        [sys.executable, "-m", "ctp_node", "serve", "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TMPDIR": str(long_tmp)},
    )
    assert served.returncode == 2, served.stdout + served.stderr
    assert "worker.count: the workers' fork server cannot start" in served.stderr
    assert "set TMPDIR to a shorter folder" in served.stderr
    assert "Traceback" not in served.stderr
