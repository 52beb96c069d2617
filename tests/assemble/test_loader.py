"""Reading CT files into an Acquisition: order, times, geometry, facts, and refusals."""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ctp_node.assemble.headers import UnreadableImageError
from ctp_node.assemble.layout import NotPerfusionError
from ctp_node.assemble.loader import load_series
from ctp_node.perfusion import Acquisition, AcquisitionFacts
from ctp_node.phantom.dicom import StudyIdentity, write_ct_series

T, Z, N = 12, 3, 24


def _acquisition(slice_offsets_s: np.ndarray | None = None) -> Acquisition:
    rng = np.random.default_rng(0)
    hu = np.round(rng.normal(35, 20, size=(T, Z, N, N))).astype(np.float32)
    times = np.arange(T) * 1.5
    slice_times = None
    if slice_offsets_s is not None:
        slice_times = times[:, None] + slice_offsets_s[None, :]
    return Acquisition(
        hu=hu,
        times_s=times if slice_times is None else slice_times.mean(axis=1),
        slice_times_s=slice_times,
        pixel_spacing_mm=(0.8, 0.7),
        slice_spacing_mm=5.0,
        slice_positions_mm=np.array([[-90.0, -100.0, 20.0 + 5 * z] for z in range(Z)]),
        facts=AcquisitionFacts(
            kvp=80,
            exposure_mas=150,
            ctdivol_mgy=210.0,
            contrast_agent="Iohexol 350",
            contrast_volume_ml=40,
            contrast_rate_ml_s=5,
            patient_age_years=67,
        ),
    )


def _write(tmp_path: Path, acquisition: Acquisition, **kwargs) -> list[Path]:
    return write_ct_series(acquisition, tmp_path, identity=StudyIdentity.new(), **kwargs)


def test_shuffled_files_load_in_time_and_slice_order(tmp_path: Path) -> None:
    acquisition = _acquisition()
    paths = _write(tmp_path, acquisition)
    random.Random(1).shuffle(paths)
    loaded = load_series(paths, min_time_points=10).acquisition
    np.testing.assert_array_equal(loaded.hu, acquisition.hu)
    np.testing.assert_allclose(loaded.times_s, acquisition.times_s, atol=1e-3)
    np.testing.assert_allclose(loaded.slice_positions_mm, acquisition.slice_positions_mm)
    assert loaded.pixel_spacing_mm == (0.8, 0.7)
    assert loaded.slice_spacing_mm == pytest.approx(5.0)


def test_acquisition_crossing_midnight(tmp_path: Path) -> None:
    acquisition = _acquisition()
    paths = _write(tmp_path, acquisition, start_datetime=datetime(2026, 11, 23, 23, 59, 50))
    loaded = load_series(paths, min_time_points=10).acquisition
    np.testing.assert_allclose(loaded.times_s, acquisition.times_s, atol=1e-3)
    np.testing.assert_array_equal(loaded.hu, acquisition.hu)


def test_slices_with_their_own_times(tmp_path: Path) -> None:
    offsets = np.array([0.0, 0.3, 0.6])
    acquisition = _acquisition(offsets)
    loaded = load_series(_write(tmp_path, acquisition), min_time_points=10).acquisition
    np.testing.assert_allclose(loaded.slice_times_s, acquisition.slice_times_s, atol=1e-3)
    np.testing.assert_allclose(loaded.times_s, acquisition.times_s, atol=1e-3)


def test_header_facts(tmp_path: Path) -> None:
    facts = load_series(_write(tmp_path, _acquisition()), min_time_points=10).acquisition.facts
    assert facts.kvp == 80 and facts.exposure_mas == 150
    assert facts.ctdivol_mgy == pytest.approx(210.0)
    assert facts.contrast_agent == "Iohexol 350"
    assert facts.contrast_volume_ml == 40 and facts.contrast_rate_ml_s == 5
    assert facts.patient_age_years == pytest.approx(67, abs=1)


def test_single_volume_is_not_perfusion(tmp_path: Path) -> None:
    paths = [p for p in _write(tmp_path, _acquisition()) if p.name.startswith("t000_")]
    with pytest.raises(NotPerfusionError, match="single volume"):
        load_series(paths, min_time_points=10)


def test_too_few_time_points(tmp_path: Path) -> None:
    paths = [p for p in _write(tmp_path, _acquisition()) if int(p.name[1:4]) < 5]
    with pytest.raises(NotPerfusionError, match="only 5 time point"):
        load_series(paths, min_time_points=10)


def test_duplicate_image_is_used_once(tmp_path: Path) -> None:
    acquisition = _acquisition()
    paths = _write(tmp_path, acquisition)
    copy = tmp_path / "copy.dcm"
    ds = pydicom.dcmread(paths[0])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(copy)
    loaded = load_series([*paths, copy], min_time_points=10)
    np.testing.assert_array_equal(loaded.acquisition.hu, acquisition.hu)
    assert any("duplicate" in note for note in loaded.layout.notes)


def test_not_ct_is_refused(tmp_path: Path) -> None:
    paths = _write(tmp_path, _acquisition())
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.Modality = "MR"
        ds.save_as(path)
    with pytest.raises(NotPerfusionError, match="modality is MR"):
        load_series(paths, min_time_points=10)


def test_a_file_that_is_not_dicom_is_left_out_and_named(tmp_path: Path) -> None:
    paths = _write(tmp_path, _acquisition())
    paths[3].write_bytes(b"not dicom at all")
    loaded = load_series(paths, min_time_points=10)
    assert loaded.acquisition.hu.shape[0] == T - 1
    assert any(paths[3].name in note and "could not be read" in note for note in loaded.notes)
    for path in paths:
        path.write_bytes(b"not dicom either")
    with pytest.raises(UnreadableImageError, match="no usable image"):
        load_series(paths, min_time_points=10)


def _no_position(ds: pydicom.Dataset) -> None:
    del ds.ImagePositionPatient


def _no_sop_instance_uid(ds: pydicom.Dataset) -> None:
    del ds.SOPInstanceUID


def _other_matrix(ds: pydicom.Dataset) -> None:
    pixels = ds.pixel_array[: N // 2, : N // 2].copy()
    ds.Rows = ds.Columns = N // 2
    ds.PixelData = pixels.tobytes()


@pytest.mark.parametrize(
    ("spoil", "said"),
    [
        (_no_position, "file extra.dcm: no Image Position (Patient) (0020,0032)"),
        (_no_sop_instance_uid, "no SOP Instance UID"),
        (_other_matrix, "another matrix size"),
    ],
)
def test_one_bad_extra_member_is_left_out_and_the_rest_loads(tmp_path: Path, spoil, said) -> None:  # type: ignore[no-untyped-def]
    """One extra image of the series cannot be placed: the acquisition loads without it, and
    the notes name it (a scanner's stray localiser must not cost the whole study)."""
    acquisition = _acquisition()
    paths = _write(tmp_path, acquisition)
    extra = pydicom.dcmread(paths[5])
    extra.SOPInstanceUID = extra.file_meta.MediaStorageSOPInstanceUID = "1.2.3.999"
    spoil(extra)
    extra.save_as(tmp_path / "extra.dcm")
    loaded = load_series([*paths, tmp_path / "extra.dcm"], min_time_points=10)
    np.testing.assert_array_equal(loaded.acquisition.hu, acquisition.hu)
    assert any(said in note for note in loaded.notes), loaded.notes


def _rewrite(paths: list[Path], change) -> None:  # type: ignore[no-untyped-def]
    for path in paths:
        ds = pydicom.dcmread(path)
        change(ds)
        ds.save_as(path)


def _only_content_time(ds: pydicom.Dataset) -> None:
    ds.ContentTime = ds.AcquisitionTime
    for keyword in ("AcquisitionTime", "AcquisitionDateTime", "AcquisitionDate"):
        if keyword in ds:
            delattr(ds, keyword)


def _only_acquisition_datetime(ds: pydicom.Dataset) -> None:
    for keyword in ("AcquisitionTime", "ContentTime"):
        if keyword in ds:
            delattr(ds, keyword)


def _signed_pixels_intercept_zero(ds: pydicom.Dataset) -> None:
    stored = ds.pixel_array.astype(np.int32) + int(ds.RescaleIntercept)
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = 0
    ds.PixelData = stored.astype("<i2").tobytes()


def _rescale_slope_half(ds: pydicom.Dataset) -> None:
    hu = ds.pixel_array.astype(np.float64) + float(ds.RescaleIntercept)
    ds.RescaleSlope = 0.5
    ds.RescaleIntercept = -1024
    ds.PixelData = np.round((hu + 1024) / 0.5).astype("<u2").tobytes()
    ds.BitsStored = 16
    ds.HighBit = 15


@pytest.mark.parametrize(
    "change",
    [
        _only_content_time,
        _only_acquisition_datetime,
        _signed_pixels_intercept_zero,
        _rescale_slope_half,
    ],
)
def test_header_conventions_of_other_scanners(tmp_path: Path, change) -> None:  # type: ignore[no-untyped-def]
    acquisition = _acquisition()
    paths = _write(tmp_path, acquisition)
    _rewrite(paths, change)
    loaded = load_series(paths, min_time_points=10).acquisition
    np.testing.assert_array_equal(loaded.hu, acquisition.hu)
    np.testing.assert_allclose(loaded.times_s, acquisition.times_s, atol=1e-3)


def test_feet_first_slices_are_ordered_along_the_normal(tmp_path: Path) -> None:
    acquisition = _acquisition()
    descending = acquisition.slice_positions_mm[::-1].copy()
    flipped = Acquisition(
        hu=acquisition.hu[:, ::-1].copy(),
        times_s=acquisition.times_s,
        pixel_spacing_mm=acquisition.pixel_spacing_mm,
        slice_spacing_mm=5.0,
        slice_positions_mm=descending,
        facts=acquisition.facts,
    )
    paths = _write(tmp_path, flipped)
    loaded = load_series(paths, min_time_points=10).acquisition
    # Slices come out in increasing position along the normal, whatever order they were written.
    np.testing.assert_allclose(loaded.slice_positions_mm, acquisition.slice_positions_mm)
    np.testing.assert_array_equal(loaded.hu, acquisition.hu)


def test_tilted_gantry_positions_group_into_slices(tmp_path: Path) -> None:
    tilt = np.deg2rad(15)
    orientation = (1.0, 0.0, 0.0, 0.0, float(np.cos(tilt)), float(np.sin(tilt)))
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.array([[-90.0, -100.0, 20.0] + 5 * z * normal for z in range(Z)])
    acquisition = _acquisition()
    tilted = Acquisition(
        hu=acquisition.hu,
        times_s=acquisition.times_s,
        pixel_spacing_mm=(0.8, 0.7),
        slice_spacing_mm=5.0,
        slice_positions_mm=positions,
        orientation=orientation,
    )
    paths = _write(tmp_path, tilted)
    random.Random(4).shuffle(paths)
    loaded = load_series(paths, min_time_points=10).acquisition
    np.testing.assert_array_equal(loaded.hu, acquisition.hu)
    assert loaded.slice_spacing_mm == pytest.approx(5.0)


def test_enhanced_ct_loads_like_the_classic_series(tmp_path: Path) -> None:
    from tests.assemble.enhanced_ct import enhanced_ct_per_time_point

    acquisition = _acquisition(np.array([0.0, 0.2, 0.4]))
    classic = _write(tmp_path / "classic", acquisition)
    enhanced = enhanced_ct_per_time_point(classic, tmp_path / "enhanced")
    assert len(enhanced) == T
    loaded = load_series(enhanced, min_time_points=10)
    np.testing.assert_array_equal(loaded.acquisition.hu, acquisition.hu)
    np.testing.assert_allclose(
        loaded.acquisition.slice_times_s, acquisition.slice_times_s, atol=1e-3
    )
    np.testing.assert_allclose(
        loaded.acquisition.slice_positions_mm, acquisition.slice_positions_mm
    )


def _implicit_little_endian(ds: pydicom.Dataset) -> None:
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian


def _rle_lossless(ds: pydicom.Dataset) -> None:
    ds.compress(pydicom.uid.RLELossless)


def _large_unsigned_values(ds: pydicom.Dataset) -> None:
    # HU + 40 000 stored unsigned with intercept −41 024: beyond an int16 before rescaling
    stored = ds.pixel_array.astype(np.int32) + 40_000
    ds.RescaleIntercept = -41_024
    ds.PixelData = stored.astype("<u2").tobytes()
    ds.BitsStored = 16
    ds.HighBit = 15


@pytest.mark.parametrize(
    ("change", "dtype"),
    [
        (None, np.int16),
        (_implicit_little_endian, np.int16),
        (_rle_lossless, np.int16),
        (_signed_pixels_intercept_zero, np.int16),
        (_rescale_slope_half, np.float32),
        (_large_unsigned_values, np.float32),
    ],
)
def test_hu_are_what_pydicom_decodes_rescaled(tmp_path: Path, change, dtype) -> None:  # type: ignore[no-untyped-def]
    """Each file's pixel data, read once into the 4D array, is pydicom's ``pixel_array``
    rescaled: whole HU in int16 (half the memory), others in float32."""
    paths = _write(tmp_path, _acquisition())
    if change is not None:
        _rewrite(paths, change)
    loaded = load_series(paths, min_time_points=10)
    hu = loaded.acquisition.hu
    assert hu.dtype == dtype
    for t, row in enumerate(loaded.layout.grid):
        for z, ref in enumerate(row):
            ds = pydicom.dcmread(ref.path)
            expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            np.testing.assert_array_equal(hu[t, z], expected)


def test_short_pixel_data_names_the_file(tmp_path: Path) -> None:
    paths = _write(tmp_path, _acquisition())

    def _short(ds: pydicom.Dataset) -> None:
        ds.PixelData = ds.PixelData[:100]

    _rewrite(paths[:1], _short)
    with pytest.raises(UnreadableImageError, match=f"{paths[0].name}: pixel data cannot be"):
        load_series(paths, min_time_points=10)
