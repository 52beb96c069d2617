"""Writing an Acquisition as a CT series: valid DICOM, exact HU, correct times."""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.valuerep import DT

from ctp_node.perfusion.acquisition import Acquisition, AcquisitionFacts
from ctp_node.phantom.dicom import StudyIdentity, write_ct_series

N_T, N_Z, N_Y, N_X = 4, 3, 16, 20


def _acquisition(**changes) -> Acquisition:
    rng = np.random.default_rng(3)
    fields = {
        "hu": rng.uniform(-1100.0, 3200.0, size=(N_T, N_Z, N_Y, N_X)).astype(np.float32),
        "times_s": np.array([0.0, 1.5, 3.0, 45.25]),
        "pixel_spacing_mm": (0.7, 0.6),
        "slice_spacing_mm": 5.0,
        "slice_positions_mm": np.array([[-5.6, -6.0, 30.0 + 5.0 * z] for z in range(N_Z)]),
        "facts": AcquisitionFacts(
            kvp=80.0,
            exposure_mas=150.0,
            ctdivol_mgy=210.0,
            contrast_agent="Iohexol 350",
            contrast_volume_ml=40.0,
            contrast_rate_ml_s=5.0,
            patient_age_years=8.6,
        ),
    }
    fields.update(changes)
    return Acquisition(**fields)


@pytest.fixture
def identity() -> StudyIdentity:
    return StudyIdentity.new(study_datetime=datetime(2024, 12, 31, 23, 59, 30))


def test_writes_one_file_per_image_named_by_time_and_slice(
    tmp_path: Path, identity: StudyIdentity
) -> None:
    paths = write_ct_series(_acquisition(), tmp_path, identity=identity)
    assert [p.name for p in paths] == [
        f"t{t:03d}_z{z:03d}.dcm" for t in range(N_T) for z in range(N_Z)
    ]
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    assert len({ds.SOPInstanceUID for ds in datasets}) == N_T * N_Z
    assert {ds.SeriesInstanceUID for ds in datasets} == {identity.series_instance_uid}
    assert [ds.InstanceNumber for ds in datasets] == list(range(1, N_T * N_Z + 1))
    assert [ds.TemporalPositionIndex for ds in datasets[::N_Z]] == [1, 2, 3, 4]


def test_passes_dciodvfy_without_errors(tmp_path: Path, identity: StudyIdentity) -> None:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    path = write_ct_series(_acquisition(), tmp_path, identity=identity)[-1]
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
    assert errors == []


def test_hu_read_back_within_rounding(tmp_path: Path, identity: StudyIdentity) -> None:
    acquisition = _acquisition()
    paths = write_ct_series(acquisition, tmp_path, identity=identity)
    for index, path in enumerate(paths):
        t, z = divmod(index, N_Z)
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        expected = np.clip(acquisition.hu[t, z], -1024.0, 3071.0)
        np.testing.assert_allclose(hu, expected, atol=0.5 + 1e-3)
        assert ds.pixel_array.dtype == np.uint16


def test_times_cross_midnight_into_the_next_year(tmp_path: Path, identity: StudyIdentity) -> None:
    paths = write_ct_series(_acquisition(), tmp_path, identity=identity)
    first = pydicom.dcmread(paths[0], stop_before_pixels=True)
    last = pydicom.dcmread(paths[-1], stop_before_pixels=True)
    assert (first.AcquisitionDate, first.AcquisitionTime) == ("20241231", "235930.000000")
    # 23:59:30 + 45.25 s
    assert (last.AcquisitionDate, last.AcquisitionTime) == ("20250101", "000015.250000")
    assert (last.ContentDate, last.ContentTime) == ("20250101", "000015.250000")
    assert DT(last.AcquisitionDateTime) == datetime(2025, 1, 1, 0, 0, 15, 250000)
    assert (last.StudyDate, last.SeriesDate) == ("20241231", "20241231")


def test_slice_times_are_used_when_present(tmp_path: Path, identity: StudyIdentity) -> None:
    times_s = np.array([0.0, 1.5, 3.0, 45.25])
    slice_times_s = times_s[:, None] + np.array([0.0, 0.1, 0.2])[None, :]
    paths = write_ct_series(
        _acquisition(slice_times_s=slice_times_s),
        tmp_path,
        identity=identity,
        start_datetime=datetime(2024, 6, 1, 10, 0, 0),
    )
    ds = pydicom.dcmread(paths[N_Z + 2], stop_before_pixels=True)  # t=1, z=2
    assert DT(ds.AcquisitionDateTime) == datetime(2024, 6, 1, 10, 0, 1, 700000)


def test_geometry_and_acquisition_facts(tmp_path: Path, identity: StudyIdentity) -> None:
    acquisition = _acquisition()
    paths = write_ct_series(acquisition, tmp_path, identity=identity, series_number=7)
    for z in range(N_Z):
        ds = pydicom.dcmread(paths[z], stop_before_pixels=True)
        np.testing.assert_allclose(
            [float(v) for v in ds.ImagePositionPatient], acquisition.slice_positions_mm[z]
        )
    ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
    assert ds.Modality == "CT"
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert [float(v) for v in ds.PixelSpacing] == [0.7, 0.6]
    assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert float(ds.SliceThickness) == float(ds.SpacingBetweenSlices) == 5.0
    assert (ds.Rows, ds.Columns) == (N_Y, N_X)
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (16, 12, 11)
    assert float(ds.KVP) == 80.0
    assert ds.Exposure == 150
    assert float(ds.CTDIvol) == 210.0
    assert ds.ContrastBolusAgent == "Iohexol 350"
    assert float(ds.ContrastBolusVolume) == 40.0
    assert float(ds.ContrastFlowRate) == 5.0
    assert ds.PatientAge == "008Y"
    assert ds.SeriesNumber == 7
    assert ds.StudyInstanceUID == identity.study_instance_uid
    assert ds.FrameOfReferenceUID == identity.frame_of_reference_uid
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian


def test_positions_synthesised_along_the_normal_when_absent(
    tmp_path: Path, identity: StudyIdentity
) -> None:
    paths = write_ct_series(
        _acquisition(slice_positions_mm=np.zeros((0, 3))), tmp_path, identity=identity
    )
    z_mm = [
        float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2])
        for p in paths[:N_Z]
    ]
    assert z_mm == [0.0, 5.0, 10.0]


def test_unknown_facts_are_left_out(tmp_path: Path, identity: StudyIdentity) -> None:
    paths = write_ct_series(_acquisition(facts=AcquisitionFacts()), tmp_path, identity=identity)
    ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
    for keyword in ("CTDIvol", "ContrastBolusAgent", "PatientAge", "Exposure"):
        assert keyword not in ds
    assert ds.KVP is None  # Type 2: present, empty


def test_new_identity_has_fresh_uids() -> None:
    a, b = StudyIdentity.new(), StudyIdentity.new()
    assert a.study_instance_uid != b.study_instance_uid
    assert a.series_instance_uid != b.series_instance_uid
    assert a.frame_of_reference_uid != b.frame_of_reference_uid
