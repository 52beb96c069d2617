"""What reaches PACS is the result of the whole acquisition, and no study is stuck or silent:
versions, bad members, malformed images, a full disk (ctp-node serve, DCMTK storescu, Orthanc).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

from tests.conftest import (
    orthanc_destination,
    stored_count,
    storescu,
    wait_until,
)
from tests.dicom_checks import MAP_NAMES, spoil_rows

pytestmark = pytest.mark.slow

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
#: Outputs of one result: 5 Parametric Maps, 7 summary pages, 1 SR.
OUTPUTS_PER_RESULT = len(MAP_NAMES) + 7 + 1


def _orthanc_datasets(orthanc) -> list[pydicom.Dataset]:  # type: ignore[no-untyped-def]
    return [
        pydicom.dcmread(io.BytesIO(orthanc.get_bytes(f"/instances/{i}/file")))
        for i in orthanc.get("/instances")
    ]


def _sent(node) -> dict[int, int]:  # type: ignore[no-untyped-def]
    """Job id → exports sent, for jobs whose exports are all sent."""
    return {
        j["id"]: j["exports"].get("orthanc:sent", 0)
        for j in node.status()["jobs"]
        if j["exports"] and set(j["exports"]) == {"orthanc:sent"}
    }


def _texts(ds: pydicom.Dataset) -> list[str]:
    found = []
    for item in ds.get("ContentSequence", []):
        if "TextValue" in item:
            found.append(str(item.TextValue))
        found += _texts(item)
    return found


def test_a_series_that_grows_after_its_result_gets_a_second_version(
    small_study, orthanc, serve_node
) -> None:
    phantom, paths = small_study
    time_points = phantom.acquisition.hu.shape[0]
    first = [p for p in paths if int(p.name[1:4]) < 25]
    node = serve_node([orthanc_destination(orthanc)])
    assert stored_count(storescu(first, node.port, node.ae_title)) == len(first)
    wait_until(lambda: sum(_sent(node).values()) == OUTPUTS_PER_RESULT, 180, "version 1 in Orthanc")
    rest = [p for p in paths if p not in first]
    assert stored_count(storescu(rest, node.port, node.ae_title)) == len(rest)
    wait_until(
        lambda: sum(_sent(node).values()) == 2 * OUTPUTS_PER_RESULT, 180, "version 2 in Orthanc"
    )

    jobs = node.status()["jobs"]
    assert [(j["state"], j["version"]) for j in jobs] == [("done", 1), ("done", 2)]
    assert jobs[1]["supersedes_job"] == jobs[0]["id"]
    assert "more images arrived" in jobs[1]["version_reason"]
    datasets = _orthanc_datasets(orthanc)
    assert len(datasets) == 2 * OUTPUTS_PER_RESULT  # nothing shared a UID
    assert len({str(ds.SeriesInstanceUID) for ds in datasets}) == 2 * (len(MAP_NAMES) + 2)
    reports = {
        "v2" in str(ds.SeriesDescription): ds
        for ds in datasets
        if ds.SOPClassUID == COMPREHENSIVE_3D_SR
    }
    older, newer = reports[False], reports[True]
    reference = newer.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert reference.SeriesInstanceUID == older.SeriesInstanceUID
    assert reference.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == older.SOPInstanceUID
    statement = next(t for t in _texts(newer) if t.startswith("Version 2: supersedes"))
    assert f"from 25 of {time_points} time points" in statement
    assert all("v2 supersedes" in str(ds.SeriesDescription) for ds in datasets if ds is newer)
    summaries = [
        (node.root / "storage" / j["result_dir"] / "results.json").read_text() for j in jobs
    ]
    assert f'"time_points": {time_points}' in summaries[1]
    assert '"time_points": 25' in summaries[0]


def _new_series(paths: list[Path], folder: Path, series_uid: str) -> list[Path]:
    folder.mkdir()
    copies = []
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{series_uid}.{len(copies)}"
        ds.save_as(folder / path.name)
        copies.append(folder / path.name)
    return copies


def test_a_malformed_image_does_not_stop_the_studies_after_it(
    small_study, orthanc, serve_node, tmp_path
) -> None:
    _, paths = small_study
    node = serve_node([orthanc_destination(orthanc)])
    bad = _new_series(paths[:1], tmp_path / "bad", "1.2.826.0.1.3680043.8.498.77")
    spoil_rows(bad[0])
    # Acknowledged means readable: an image whose Rows cannot be decoded is refused on arrival
    # (0xC000, the element named), not stored to fail its series later.
    refused = storescu(bad, node.port, node.ae_title)
    assert stored_count(refused) == 0 and "CannotUnderstand" in refused.stderr
    assert stored_count(storescu(paths, node.port, node.ae_title)) == len(paths)
    wait_until(
        lambda: sum(_sent(node).values()) == OUTPUTS_PER_RESULT, 180, "the valid study's maps"
    )
    status = node.status()
    assert "1.2.826.0.1.3680043.8.498.77" not in {
        s["series_instance_uid"] for s in status["series"]
    }
    assert any("(0028,0010)" in r["reason"] for r in status["rejections"])
    assert "Traceback" not in node.log()


def test_a_member_without_geometry_is_left_out_with_a_warning(
    small_study, orthanc, serve_node, tmp_path
) -> None:
    _, paths = small_study
    stray = pydicom.dcmread(paths[3])
    stray.SOPInstanceUID = stray.file_meta.MediaStorageSOPInstanceUID = (
        "1.2.826.0.1.3680043.8.498.5"
    )
    del stray.ImagePositionPatient
    stray.save_as(tmp_path / "stray.dcm")
    node = serve_node([orthanc_destination(orthanc)])
    sent = storescu([*paths, tmp_path / "stray.dcm"], node.port, node.ae_title)
    assert stored_count(sent) == len(paths) + 1
    wait_until(lambda: sum(_sent(node).values()) == OUTPUTS_PER_RESULT, 180, "the maps in Orthanc")
    (report,) = [ds for ds in _orthanc_datasets(orthanc) if ds.SOPClassUID == COMPREHENSIVE_3D_SR]
    notes = [t for t in _texts(report) if "1.2.826.0.1.3680043.8.498.5" in t]
    assert notes and "left out" in notes[0]


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 24 MB tmpfs: room for the received study (~1.5 MB), not for its outputs (~30 MB, most
    of it the seven 1280 × 1024 RGB summary pages).
    Yields a function that makes it 256 MB, as an administrator freeing space would."""
    mount = tmp_path / "node0" / "storage"
    mount.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        if os.geteuid() != 0:
            pytest.skip(f"mounting a small file system needs root: {done.stderr!r}")
        pytest.fail(f"mount -t tmpfs failed as root: {done.stderr!r}")

    def grow() -> None:
        subprocess.run(["mount", "-o", "remount,size=256m", str(mount)], check=True)

    yield grow
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_during_processing_delays_the_results_but_loses_nothing(
    small_study, orthanc, serve_node, small_disk
) -> None:
    _, paths = small_study
    node = serve_node(
        [orthanc_destination(orthanc)],
        worker={"retry_backoff_s": 1.0, "retry_backoff_max_s": 2.0, "max_attempts": 1},
    )
    assert shutil.disk_usage(node.root / "storage").total <= 24 * 2**20
    assert stored_count(storescu(paths, node.port, node.ae_title)) == len(paths)

    def retried() -> bool:
        jobs = node.status()["jobs"]
        return bool(jobs) and "No space left on device" in jobs[0]["error"] and jobs[0]
        # (it stays queued: transient failures do not use up its one attempt)

    job = wait_until(retried, 180, "a try to fail for lack of space")
    assert job["state"] in ("queued", "running")
    small_disk()
    wait_until(lambda: sum(_sent(node).values()) == OUTPUTS_PER_RESULT, 180, "the maps in Orthanc")
    (job,) = node.status()["jobs"]
    assert job["state"] == "done" and job["attempts"] == 1
