"""Retention in a running node: storescu → ctp-node serve → Orthanc, then ``ctp-node purge``.

A study delivered to PACS gives its disk back; a study whose PACS is down keeps every file,
whatever the retention settings say, while serve applies them every second.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
import yaml
from pydicom.uid import generate_uid

from tests.conftest import (
    free_port,
    orthanc_destination,
    stored_count,
    storescu,
    wait_until,
)

pytestmark = pytest.mark.slow

#: Retention that makes everything delivered due within a second (0.00001 d = 0.86 s).
AT_ONCE = {"spool_days": 0.00001, "results_days": 0.00001}


def purge(config: Path, *options: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "ctp_node", "purge", "--config", str(config), *options],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def spool_files(node) -> list[Path]:
    return sorted((node.root / "storage" / "spool").rglob("*.dcm"))


def one_volume_series(paths: list[Path], folder: Path) -> list[Path]:
    """The first time point of the study as a series of its own: CT that is not perfusion."""
    folder.mkdir()
    series_uid = generate_uid()
    copies = []
    for path in (p for p in paths if p.name.startswith("t000_")):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / path.name)
        copies.append(folder / path.name)
    return copies


def test_delivered_study_is_purged_and_undelivered_one_is_kept(
    phantom_study, orthanc, serve_node, tmp_path
) -> None:
    _, paths = phantom_study
    delivered = serve_node([orthanc_destination(orthanc)])
    pacs_down = {"name": "down", "ae_title": "NOBODY", "host": "127.0.0.1", "port": free_port()}
    undelivered = serve_node([pacs_down], storage={"retention": {**AT_ONCE, "interval_s": 1.0}})
    not_perfusion = one_volume_series(paths, tmp_path / "one-volume")
    for node in (delivered, undelivered):
        assert stored_count(storescu(paths, node.port, node.ae_title)) == len(paths)
    assert stored_count(storescu(not_perfusion, undelivered.port, undelivered.ae_title)) == len(
        not_perfusion
    )

    def all_sent():
        jobs = delivered.status()["jobs"]
        exports = jobs[0]["exports"] if jobs and jobs[0]["state"] == "done" else {}
        return exports and set(exports) == {"orthanc:sent"} and exports

    exports = wait_until(all_sent, 240, "every output to reach Orthanc")
    outputs_in_pacs = len(orthanc.get("/instances"))
    assert outputs_in_pacs == exports["orthanc:sent"]

    def processed_and_ignored_purged():
        status = undelivered.status()
        jobs = status["jobs"]
        ignored = [s for s in status["series"] if s["state"] == "ignored"]
        return jobs and jobs[0]["state"] == "done" and ignored and ignored[0]["purged_at"]

    wait_until(processed_and_ignored_purged, 240, "serve's retention to purge the ignored series")
    # serve applies retention every second and the perfusion series is long due by the
    # clock, but its results never reached PACS: every received file stays.
    time.sleep(3)
    status = undelivered.status()
    (perfusion,) = [s for s in status["series"] if s["state"] == "perfusion"]
    assert perfusion["instances"] == len(paths) and perfusion["purged_at"] is None
    assert len(spool_files(undelivered)) == len(paths)
    waiting = status["jobs"][0]["exports"]
    assert waiting.keys() <= {"down:pending", "down:failed"}
    kept = purge(undelivered.config_path)
    assert "  spool            0 series" in kept.split("freed:")[1]
    assert re.search(
        rf"spool {re.escape(perfusion['series_instance_uid'])}: job 1 has \d+ export\(s\) "
        r"(pending|failed)",
        kept,
    )
    assert len(spool_files(undelivered)) == len(paths)

    # The delivered node, by hand, with settings that make its study due.
    config = yaml.safe_load(delivered.config_path.read_text())
    config["storage"]["retention"] = AT_ONCE
    at_once = delivered.root / "at-once.yaml"
    at_once.write_text(yaml.safe_dump(config))
    time.sleep(1)
    before = spool_files(delivered)
    assert len(before) == len(paths)

    dry = purge(at_once, "--dry-run")
    assert f"  spool            1 series       {len(paths)} files" in dry
    assert "  results          1 jobs" in dry and "dry run: nothing was deleted" in dry
    assert spool_files(delivered) == before

    freed = purge(at_once).split("freed:")[1]
    assert f"  spool            1 series       {len(paths)} files" in freed
    assert spool_files(delivered) == []
    assert not any((delivered.root / "storage" / "results").rglob("*.dcm"))
    status = delivered.status()
    (series,) = status["series"]
    assert series["instances"] == 0 and series["purged_at"] is not None
    assert status["disk"]["spool_bytes"] == status["disk"]["results_bytes"] == 0
    assert json.dumps(status["jobs"][0]["exports"]) == json.dumps(exports)  # history stays
    assert len(orthanc.get("/instances")) == outputs_in_pacs  # PACS keeps the results
