"""The TID 1500 stroke-volume SR: valid DICOM, the contract's groups and values, stable UIDs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from ctp_node.perfusion.acquisition import Acquisition
from ctp_node.perfusion.result import PerfusionResult
from ctp_node.report.settings import ReportSettings
from ctp_node.report.structured_report import build_structured_report

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture(scope="module")
def sr_path(
    result: PerfusionResult,
    acquisition: Acquisition,
    source_headers: list[pydicom.Dataset],
    tmp_path_factory,
) -> Path:
    path = tmp_path_factory.mktemp("sr") / "sr.dcm"
    build_structured_report(
        result,
        source_headers,
        ReportSettings(),
        acquisition_facts=acquisition.facts,
        notes=["3 late images were dropped"],
    ).save_as(path, enforce_file_format=True)
    return path


def _groups(path: Path) -> dict[str, dict[str, tuple[float, str]]]:
    """Tracking identifier → {measurement name → (value, UCUM unit)}."""
    document = hd.sr.srread(path)
    assert isinstance(document, hd.sr.Comprehensive3DSR)
    return {
        group.tracking_identifier: {
            m.name.meaning: (m.value, m.unit.value) for m in group.get_measurements()
        }
        for group in document.content.get_image_measurement_groups()
    }


def test_passes_dciodvfy_without_errors(
    sr_path: Path, dciodvfy_errors: Callable[[Path], list[str]]
) -> None:
    assert dciodvfy_errors(sr_path) == []


def test_groups_and_volumes(sr_path: Path) -> None:
    assert _groups(sr_path) == {
        "Ischemic core (rCBF<30%)": {"Volume": (12.5, "ml")},
        "Hypoperfusion (Tmax>6s)": {"Volume": (80.0, "ml")},
        "Hypoperfusion (Tmax>10s)": {"Volume": (30.0, "ml"), "Volume Ratio": (0.38, "{ratio}")},
        "Mismatch": {"Volume": (67.5, "ml"), "Volume Ratio": (6.4, "{ratio}")},
        "Arterial input function (AIF)": {"Bolus Arrival Time": (4.5, "s")},
    }


def test_undefined_ratios_are_left_out(
    result: PerfusionResult, source_headers: list[pydicom.Dataset], tmp_path: Path
) -> None:
    volumes = replace(
        result.volumes, core_ml=0.0, mismatch_ratio=None, hypoperfusion_intensity_ratio=None
    )
    path = tmp_path / "sr.dcm"
    build_structured_report(
        replace(result, volumes=volumes), source_headers, ReportSettings()
    ).save_as(path, enforce_file_format=True)
    groups = _groups(path)
    assert groups["Mismatch"] == {"Volume": (67.5, "ml")}
    assert groups["Ischemic core (rCBF<30%)"] == {"Volume": (0.0, "ml")}


def test_belongs_to_the_source_study_and_is_deterministic(
    sr_path: Path,
    result: PerfusionResult,
    source_headers: list[pydicom.Dataset],
) -> None:
    ds = pydicom.dcmread(sr_path)
    source = source_headers[0]
    assert ds.SOPClassUID == COMPREHENSIVE_3D_SR
    for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "AccessionNumber"):
        assert ds[keyword].value == source[keyword].value, keyword
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.SeriesInstanceUID == source.SeriesInstanceUID
    again = build_structured_report(result, source_headers, ReportSettings())
    assert (again.SOPInstanceUID, again.SeriesInstanceUID) == (
        ds.SOPInstanceUID,
        ds.SeriesInstanceUID,
    )
    assert ds.SeriesNumber == 910


def _texts(path: Path) -> list[str]:
    document = hd.sr.srread(path)
    return [
        str(item.TextValue)
        for item in hd.sr.utils.find_content_items(document, recursive=True)
        if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == "C0034375"
    ]


def test_states_method_contrast_motion_and_target_mismatch(sr_path: Path) -> None:
    texts = _texts(sr_path)
    assert any(t.startswith("Target mismatch (DEFUSE 3 criteria): PRESENT") for t in texts)
    assert any(t.startswith("Method: bcSVD test") for t in texts)
    assert any(
        "rCBF < 30 % of the normal CBF 52.0 ml/100 g/min (mean of tissue with Tmax < 4 s), "
        "core counted where the local median Tmax is >= 4 s" in t
        for t in texts
    )
    assert (
        "Contrast: Contrast agent: Iopamidol 370; Contrast volume: 40 ml; "
        "Injection rate: 5 ml/s." in texts
    )
    assert "Motion: not assessed." in texts
    assert "Note: 3 late images were dropped" in texts


def test_without_header_facts_contrast_is_not_recorded(
    result: PerfusionResult, source_headers: list[pydicom.Dataset], tmp_path: Path
) -> None:
    path = tmp_path / "sr.dcm"
    build_structured_report(
        replace(result, warnings=("Head motion of 4 mm between frames 3 and 4.",)),
        source_headers,
        ReportSettings(),
    ).save_as(path, enforce_file_format=True)
    texts = _texts(path)
    assert "Contrast: agent, volume and injection rate are not recorded in the image headers." in (
        texts
    )
    assert "Motion: Head motion of 4 mm between frames 3 and 4." in texts
    assert "Warning: Head motion of 4 mm between frames 3 and 4." in texts


def test_aif_location_and_curve_can_be_read_back(
    sr_path: Path, result: PerfusionResult, source_headers: list[pydicom.Dataset]
) -> None:
    texts = _texts(sr_path)
    location = next(t for t in texts if t.startswith("AIF location"))
    assert "(slice, row, column) (1, 16, 16), 0-based" in location
    # Voxel (z 1, row 16, column 16) of the fixture's geometry, in patient coordinates.
    source = source_headers[1]
    x, y, _ = (float(v) for v in source.ImagePositionPatient)
    row_mm, column_mm = (float(v) for v in source.PixelSpacing)
    expected = f"({x + 16 * column_mm:.1f}, {y + 16 * row_mm:.1f}, "
    assert expected in location
    curve = next(t for t in texts if t.startswith("AIF curve"))
    pairs = [pair.split(": ") for pair in curve.split("HU = ")[1].split("; ")]
    times = [float(t) for t, _ in pairs]
    values = [float(v) for _, v in pairs]
    assert times == pytest.approx(list(result.aif.times_s), abs=0.005)
    assert values == pytest.approx(list(result.aif.concentration_hu), abs=0.05)


def test_dsrdump_renders_it(sr_path: Path, dsrdump) -> None:
    text = dsrdump(sr_path)
    assert "Ischemic core (rCBF<30%)" in text
    assert "Target mismatch (DEFUSE 3 criteria)" in text


def test_motion_is_stated_with_the_frames_corrected_and_excluded(
    result: PerfusionResult, source_headers: list[pydicom.Dataset], tmp_path: Path
) -> None:
    moved = dataclasses.replace(
        result,
        motion_mm=np.array([0.0, 0.1, 0.2, 4.0, 3.5, 2.0] + [0.1] * (result.aif.times_s.size - 6)),
        motion_corrected_frames=(3, 4),
        motion_excluded_frames=(5,),
    )
    path = tmp_path / "sr.dcm"
    build_structured_report(moved, source_headers, ReportSettings()).save_as(
        path, enforce_file_format=True
    )
    (statement,) = [text for text in _texts(path) if text.startswith("Motion:")]
    assert "largest head displacement 4.0 mm" in statement
    assert "2 image(s) registered back" in statement
    assert "could not be corrected" in statement and "images 6" in statement
