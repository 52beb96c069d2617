"""Parametric Maps: valid DICOM, exact values, the output contract, deterministic UIDs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from ctp_node.perfusion.result import MAP_UNITS, PerfusionResult
from ctp_node.report.parametric_map import build_parametric_maps, map_window
from ctp_node.report.settings import ReportSettings

PARAMETRIC_MAP_STORAGE = "1.2.840.10008.5.1.4.1.1.30"
QUANTITY_CODES = {
    "CBF": "126390",
    "CBV": "126391",
    "MTT": "113052",
    "TTP": "113069",
    "Tmax": "113084",
}


@pytest.fixture(scope="module")
def written_maps(
    result: PerfusionResult, source_headers: list[pydicom.Dataset], tmp_path_factory
) -> list[Path]:
    out_dir = tmp_path_factory.mktemp("pm")
    paths = []
    for parametric_map in build_parametric_maps(result, source_headers, ReportSettings()):
        path = out_dir / f"{parametric_map.SeriesNumber}.dcm"
        parametric_map.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _mapping(ds: pydicom.Dataset) -> pydicom.Dataset:
    return ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]


def test_one_series_per_map_in_contract_order(written_maps: list[Path]) -> None:
    datasets = [pydicom.dcmread(path) for path in written_maps]
    assert [_mapping(ds).LUTLabel for ds in datasets] == list(MAP_UNITS)
    assert [ds.SeriesNumber for ds in datasets] == [900, 901, 902, 903, 904]
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 5
    for ds, name in zip(datasets, MAP_UNITS, strict=True):
        assert ds.SOPClassUID == PARAMETRIC_MAP_STORAGE
        assert ds.SeriesDescription.startswith(name + " ")


@pytest.mark.parametrize("index", range(5))
def test_passes_dciodvfy_without_errors(
    written_maps: list[Path], index: int, dciodvfy_errors: Callable[[Path], list[str]]
) -> None:
    assert dciodvfy_errors(written_maps[index]) == []


def test_without_body_part_still_valid(
    result: PerfusionResult,
    source_headers: list[pydicom.Dataset],
    tmp_path: Path,
    dciodvfy_errors: Callable[[Path], list[str]],
) -> None:
    headers = [pydicom.Dataset(ds) for ds in source_headers]
    for ds in headers:
        del ds.BodyPartExamined
    parametric_map = build_parametric_maps(result, headers, ReportSettings())[0]
    path = tmp_path / "cbf.dcm"
    parametric_map.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []


@pytest.mark.parametrize("index", range(5))
def test_values_positions_and_labels_read_back(
    written_maps: list[Path],
    result: PerfusionResult,
    source_headers: list[pydicom.Dataset],
    index: int,
) -> None:
    name = list(MAP_UNITS)[index]
    ds = pydicom.dcmread(written_maps[index])
    parametric_map = hd.pm.ParametricMap.from_dataset(ds)
    assert isinstance(parametric_map, hd.pm.ParametricMap)

    # Frames carry float32 values; highdicom may order them along its own slice normal, so
    # each frame is matched to its source slice by position.
    source_positions = [tuple(float(v) for v in s.ImagePositionPatient) for s in source_headers]
    pixels = ds.pixel_array
    assert pixels.dtype == np.float32
    assert pixels.shape == result.maps[name].shape
    matched = []
    for frame_index, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        position = tuple(float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient)
        z = source_positions.index(position)
        matched.append(z)
        np.testing.assert_array_equal(pixels[frame_index], result.maps[name][z])
    assert sorted(matched) == list(range(len(source_headers)))

    shared = ds.SharedFunctionalGroupsSequence[0]
    source = source_headers[0]
    assert [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient] == [
        float(v) for v in source.ImageOrientationPatient
    ]
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == [0.9, 0.8]
    assert ds.FrameOfReferenceUID == source.FrameOfReferenceUID

    mapping = _mapping(ds)
    assert mapping.LUTLabel == name
    unit = mapping.MeasurementUnitsCodeSequence[0]
    assert (unit.CodingSchemeDesignator, unit.CodeValue) == ("UCUM", MAP_UNITS[name])
    quantity = mapping.QuantityDefinitionSequence[0].ConceptCodeSequence[0]
    assert (quantity.CodingSchemeDesignator, quantity.CodeValue) == ("DCM", QUANTITY_CODES[name])
    assert (mapping.RealWorldValueSlope, mapping.RealWorldValueIntercept) == (1.0, 0.0)
    assert mapping.DoubleFloatRealWorldValueFirstValueMapped == pytest.approx(
        float(result.maps[name].min())
    )
    assert mapping.DoubleFloatRealWorldValueLastValueMapped == pytest.approx(
        float(result.maps[name].max())
    )


def test_belongs_to_the_source_study(
    written_maps: list[Path], source_headers: list[pydicom.Dataset]
) -> None:
    source = source_headers[0]
    for path in written_maps:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in (
            "StudyInstanceUID",
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "PatientSex",
            "AccessionNumber",
            "StudyID",
            "StudyDate",
        ):
            assert ds[keyword].value == source[keyword].value, keyword
        referenced = {
            item.SourceImageSequence[0].ReferencedSOPInstanceUID
            for item in (
                frame.DerivationImageSequence[0] for frame in ds.PerFrameFunctionalGroupsSequence
            )
        }
        assert referenced == {s.SOPInstanceUID for s in source_headers}


def test_default_windows(written_maps: list[Path], result: PerfusionResult) -> None:
    # The hand-made TTP runs 30-32.3 s in the tissue: its window is the narrowest (6 s) around
    # it, not 0 s to the acquisition's end. Tmax keeps its fixed window; CBF, CBV and MTT run
    # from 0 to just above the tissue's 98th percentile (tests/report/test_readable_outputs.py),
    # here the narrowest, a quarter of the conventional 60, 6 and 12: the hand-made values
    # are small.
    expected = {"TTP": (29, 35), "Tmax": (0, 10)}
    for name, conventional in (("CBF", 60), ("CBV", 6), ("MTT", 12)):
        high = float(np.percentile(result.maps[name][result.tissue_mask], 98))
        lower, upper = map_window(name, result)
        assert lower == 0 and high <= upper <= max(1.3 * high, conventional / 4), (name, upper)
        expected[name] = (lower, upper)
    for path in written_maps:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        voi = ds.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence[0]
        name = _mapping(ds).LUTLabel
        lower, upper = expected[name]
        assert float(voi.WindowWidth) == pytest.approx(upper - lower)
        assert float(voi.WindowCenter) == pytest.approx((upper + lower) / 2)
        assert voi.WindowCenterWidthExplanation == f"{name} {lower:g}-{upper:g}"


def test_derivation_is_perfusion_image_analysis(written_maps: list[Path]) -> None:
    ds = pydicom.dcmread(written_maps[0], stop_before_pixels=True)
    derivation = ds.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
    code = derivation.DerivationCodeSequence[0]
    assert (code.CodeValue, code.CodeMeaning) == ("129104", "Perfusion image analysis")


def test_uids_are_deterministic(
    result: PerfusionResult, source_headers: list[pydicom.Dataset]
) -> None:
    first = build_parametric_maps(result, source_headers, ReportSettings())
    again = build_parametric_maps(result, source_headers, ReportSettings())
    assert [ds.SOPInstanceUID for ds in first] == [ds.SOPInstanceUID for ds in again]
    assert [ds.SeriesInstanceUID for ds in first] == [ds.SeriesInstanceUID for ds in again]

    newer = build_parametric_maps(result, source_headers, ReportSettings(algorithm_version="9.9.9"))
    assert not {ds.SOPInstanceUID for ds in newer} & {ds.SOPInstanceUID for ds in first}


def test_settings_reach_the_header(
    result: PerfusionResult, source_headers: list[pydicom.Dataset]
) -> None:
    settings = ReportSettings(
        series_number_start=700, institution_name="Stroke Centre", software_version="1.2.3"
    )
    maps = build_parametric_maps(result, source_headers, settings)
    assert [ds.SeriesNumber for ds in maps] == [700, 701, 702, 703, 704]
    assert {ds.InstitutionName for ds in maps} == {"Stroke Centre"}
    assert {ds.SoftwareVersions for ds in maps} == {"1.2.3"}


def test_shape_mismatch_is_refused(
    result: PerfusionResult, source_headers: list[pydicom.Dataset]
) -> None:
    with pytest.raises(ValueError, match="CBF map has shape"):
        build_parametric_maps(result, source_headers[:2], ReportSettings())


def test_missing_map_is_refused(
    result: PerfusionResult, source_headers: list[pydicom.Dataset]
) -> None:
    maps = {name: values for name, values in result.maps.items() if name != "Tmax"}
    with pytest.raises(ValueError, match="no Tmax map"):
        build_parametric_maps(replace(result, maps=maps), source_headers, ReportSettings())


def test_unsupported_values_are_nan_and_said_so(
    result: PerfusionResult,
    source_headers: list[pydicom.Dataset],
    tmp_path: Path,
    dciodvfy_errors: Callable[[Path], list[str]],
) -> None:
    """Voxels the result marks unsupported hold NaN (the documented sentinel) in that map's
    Float Pixel Data only, its Image Comments count them, the mapping's value range and the
    window stay finite, and the object stays valid. Without a vein (this result's ``vof`` is
    None) the CBF and CBV maps, and only they, say they lack the partial-volume correction."""
    marked = np.zeros(result.tissue_mask.shape, bool)
    marked[1, 5:9, 10:13] = True
    marked_result = replace(result, unsupported={"CBV": marked, "MTT": marked})
    maps = build_parametric_maps(marked_result, source_headers, ReportSettings())
    by_name = {_mapping(ds).LUTLabel: ds for ds in maps}
    for name, ds in by_name.items():
        path = tmp_path / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == []
        pixels = pydicom.dcmread(path).pixel_array  # frames in source order (see above)
        comments = str(ds.get("ImageComments", ""))
        if name in ("CBV", "MTT"):
            np.testing.assert_array_equal(np.isnan(pixels), marked)
            np.testing.assert_array_equal(pixels[~marked], result.maps[name][~marked])
            assert f"NaN (not a number) marks {int(marked.sum())} brain voxels whose {name}" in (
                comments
            )
            mapping = _mapping(ds)
            kept = result.maps[name][~marked]
            assert mapping.DoubleFloatRealWorldValueLastValueMapped == pytest.approx(kept.max())
            voi = ds.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence[0]
            assert np.isfinite(float(voi.WindowCenter)) and np.isfinite(float(voi.WindowWidth))
        else:
            assert np.isfinite(pixels).all() and "NaN" not in comments
        assert ("No venous outflow curve was found" in comments) == (name in ("CBF", "CBV"))
