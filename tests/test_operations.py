"""The operator's commands against a running node: status filters and exit codes, resend,
reprocess (ctp-node serve, DCMTK storescu, a real Orthanc)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import (
    free_port,
    orthanc_destination,
    start_orthanc,
    stop_process,
    stored_count,
    storescu,
    wait_until,
)
from tests.dicom_checks import MAP_NAMES

pytestmark = pytest.mark.slow

OUTPUTS_PER_RESULT = len(MAP_NAMES) + 7 + 1


def ctp_node(node, *args: str) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "ctp_node", *args, "--config", str(node.config_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _sent(node) -> int:  # type: ignore[no-untyped-def]
    return sum(j["exports"].get("orthanc:sent", 0) for j in node.status()["jobs"])


def test_reprocess_with_a_chosen_aif_then_resend_the_latest_version(
    small_study, orthanc, serve_node
) -> None:
    _, paths = small_study
    node = serve_node([orthanc_destination(orthanc)])
    assert stored_count(storescu(paths, node.port, node.ae_title)) == len(paths)
    wait_until(lambda: _sent(node) == OUTPUTS_PER_RESULT, 180, "version 1 in Orthanc")
    (first,) = node.status()["jobs"]
    series_uid = first["series_instance_uid"]
    summary = json.loads((node.root / "storage" / first["result_dir"] / "results.json").read_text())
    z, y, x = summary["aif"]["centre_zyx"]

    outside = ctp_node(node, "reprocess", "--series", series_uid, "--aif", "99,0,0")
    assert outside.returncode == 2 and "lies outside the images: slice 0-3" in outside.stderr
    assert "Traceback" not in outside.stderr
    unknown = ctp_node(node, "reprocess", "--series", "1.2.3.4")
    assert unknown.returncode == 2 and "has no series 1.2.3.4" in unknown.stderr

    chosen = ctp_node(node, "reprocess", "--series", series_uid, "--aif", f"{z},{y},{x}")
    assert chosen.returncode == 0, chosen.stderr
    wait_until(lambda: _sent(node) == 2 * OUTPUTS_PER_RESULT, 180, "version 2 in Orthanc")
    second = node.status()["jobs"][1]
    assert second["version"] == 2 and second["supersedes_job"] == first["id"]
    assert f"arterial input at (slice, row, column) ({z},{y},{x})" in second["version_reason"]
    assert second["requested_by"] == "operator"

    refused = ctp_node(node, "resend", "--job", str(first["id"]))
    assert refused.returncode == 2 and f"resend job {second['id']} instead" in refused.stderr

    for instance in orthanc.get("/instances"):  # PACS lost everything
        orthanc_delete(orthanc, f"/instances/{instance}")
    again = ctp_node(node, "resend", "--series", series_uid)
    assert again.returncode == 0, again.stderr
    assert f"job {second['id']} (version 2): {OUTPUTS_PER_RESULT} export(s)" in again.stdout
    wait_until(
        lambda: len(orthanc.get("/instances")) == OUTPUTS_PER_RESULT, 60, "version 2 sent again"
    )
    descriptions = {
        orthanc.get(f"/instances/{i}/simplified-tags")["SeriesDescription"]
        for i in orthanc.get("/instances")
    }
    assert all(" v2 supersedes " in d for d in descriptions), descriptions

    mine = ctp_node(node, "status", "--series", series_uid, "--json")
    assert mine.returncode == 0
    assert {j["id"] for j in json.loads(mine.stdout)["jobs"]} == {first["id"], second["id"]}
    assert json.loads(ctp_node(node, "status", "--failed", "--json").stdout)["jobs"] == []
    recent = json.loads(ctp_node(node, "status", "--since", "1h", "--json").stdout)
    assert len(recent["jobs"]) == 2
    assert ctp_node(node, "status", "--since", "2x").returncode == 2


def orthanc_delete(orthanc, path: str) -> None:  # type: ignore[no-untyped-def]
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{orthanc.http_port}{path}", method="DELETE")
    with urllib.request.urlopen(request, timeout=10):
        pass


def test_outputs_that_gave_up_need_attention_until_a_restart_delivers_them(
    small_study, serve_node, tmp_path
) -> None:
    _, paths = small_study
    port = free_port()  # the PACS is down: nothing listens there yet
    destination = {"name": "orthanc", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": port}
    node = serve_node([destination], send={"max_attempts": 1})
    assert stored_count(storescu(paths, node.port, node.ae_title)) == len(paths)

    def gave_up():
        jobs = node.status()["jobs"]
        return jobs and jobs[0]["exports"] == {"orthanc:failed": OUTPUTS_PER_RESULT} and jobs[0]

    job = wait_until(gave_up, 180, "every export to give up")
    status = ctp_node(node, "status")
    assert status.returncode == 1
    assert f"`ctp-node resend --job {job['id']}` tries again" in status.stdout
    failed = json.loads(ctp_node(node, "status", "--failed", "--json").stdout)
    assert [j["id"] for j in failed["jobs"]] == [job["id"]] and failed["attention"]

    orthanc = start_orthanc(tmp_path / "orthanc", dicom_port=port)
    try:
        node.restart()  # exports that ran out of attempts are tried again at start-up
        wait_until(lambda: _sent(node) == OUTPUTS_PER_RESULT, 120, "delivery after the restart")
        assert ctp_node(node, "status").returncode == 0
        assert len(orthanc.get("/instances")) == OUTPUTS_PER_RESULT
    finally:
        stop_process(orthanc.process)
