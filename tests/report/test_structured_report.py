"""The TID 1500 stroke-volume SR: valid DICOM, the contract's groups and values, stable UIDs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from ctp_node.perfusion.result import PerfusionResult
from ctp_node.report.settings import ReportSettings
from ctp_node.report.structured_report import build_structured_report

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture(scope="module")
def sr_path(
    result: PerfusionResult, source_headers: list[pydicom.Dataset], tmp_path_factory
) -> Path:
    path = tmp_path_factory.mktemp("sr") / "sr.dcm"
    build_structured_report(result, source_headers, ReportSettings()).save_as(
        path, enforce_file_format=True
    )
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
        "Hypoperfusion (Tmax>10s)": {"Volume": (30.0, "ml"), "Volume Ratio": (0.375, "{ratio}")},
        "Mismatch": {"Volume": (67.5, "ml"), "Volume Ratio": (6.4, "{ratio}")},
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
