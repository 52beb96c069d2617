"""Study shapes the practice parameter describes, through ``ctp-node serve`` end to end."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from ctp_node.phantom import PhantomSpec, make_phantom
from ctp_node.phantom.dicom import StudyIdentity, write_ct_series
from tests.conftest import orthanc_destination, stored_count, storescu, wait_until
from tests.dicom_checks import MAP_NAMES, check_maps_against_truth, parametric_maps_in

pytestmark = pytest.mark.slow


def _summary(node, job: dict) -> dict:  # type: ignore[no-untyped-def]
    return json.loads((node.root / "storage" / job["result_dir"] / "results.json").read_text())


def _coverage(node, job: dict) -> dict:  # type: ignore[no-untyped-def]
    (finding,) = [f for f in _summary(node, job)["quality"] if f["name"] == "Coverage"]
    return finding


def test_two_slabs_with_two_boluses_are_each_processed_and_reported(
    orthanc, serve_node, tmp_path
) -> None:
    """Limited z-coverage: two dynamic series (slabs) in one study, one bolus each."""
    spec = PhantomSpec(matrix=96, slices=4, pixel_spacing_mm=220.0 / 96)
    lower = make_phantom(spec).acquisition
    upper = make_phantom(dataclasses.replace(spec, seed=1)).acquisition
    upper = dataclasses.replace(
        upper, slice_positions_mm=upper.slice_positions_mm + np.array([0.0, 0.0, 40.0])
    )
    identity = StudyIdentity.new()
    second = dataclasses.replace(identity, series_instance_uid=generate_uid())
    files = write_ct_series(lower, tmp_path / "slab1", identity=identity, series_number=4)
    files += write_ct_series(upper, tmp_path / "slab2", identity=second, series_number=5)
    node = serve_node([orthanc_destination(orthanc)])
    assert stored_count(storescu(files, node.port, node.ae_title)) == len(files)

    def both_done():
        jobs = node.status()["jobs"]
        return len(jobs) == 2 and all(j["state"] == "done" for j in jobs) and jobs

    jobs = wait_until(both_done, 240, "both slabs to be processed")
    assert {j["series_instance_uid"] for j in jobs} == {
        identity.series_instance_uid,
        second.series_instance_uid,
    }
    # The slab processed last knows of the other; both report their own coverage.
    findings = [_coverage(node, job) for job in jobs]
    assert all(f["result"] == "pass" for f in findings)
    assert "2 slabs" in findings[-1]["detail"]
    studies = {s["study_instance_uid"] for s in node.status()["series"]}
    assert studies == {identity.study_instance_uid}


def test_shuttle_acquisition_with_alternating_table_positions(
    orthanc, serve_node, tmp_path
) -> None:
    """Toggling-table/shuttle: odd slices are acquired 1 s after even ones, every 2 s."""
    phantom = make_phantom(PhantomSpec(interval_s=2.0, slice_offset_s=1.0))
    offsets = phantom.acquisition.slice_times_s - phantom.acquisition.slice_times_s[:, :1]
    assert np.allclose(offsets[:, 1::2], 1.0)  # the phantom really is shuttle-like
    files = write_ct_series(phantom.acquisition, tmp_path / "shuttle", identity=StudyIdentity.new())
    node = serve_node([orthanc_destination(orthanc)])
    assert stored_count(storescu(files, node.port, node.ae_title)) == len(files)
    maps = wait_until(
        lambda: (m := parametric_maps_in(orthanc)) and len(m) == len(MAP_NAMES) and m,
        180,
        "five Parametric Maps in Orthanc",
    )
    study_uid = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    check_maps_against_truth(maps, phantom, study_uid)  # medians and Tmax against truth
    (job,) = node.status()["jobs"]
    (sampling,) = [f for f in _summary(node, job)["quality"] if f["name"] == "Temporal sampling"]
    assert sampling["result"] == "pass"  # each position is sampled every 2 s
