"""The failure notice: PACS learns that no maps will come, and why."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from ctp_node.report import build_failure_notice
from ctp_node.report.settings import ReportSettings

REASON = "The contrast never arrives: no arterial enhancement in 12 time points."


@pytest.fixture(scope="module")
def notice_paths(
    source_headers: list[pydicom.Dataset], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("fail")
    page, report = build_failure_notice(REASON, source_headers, ReportSettings())
    page.save_as(folder / "sc.dcm", enforce_file_format=True)
    report.save_as(folder / "sr.dcm", enforce_file_format=True)
    return folder / "sc.dcm", folder / "sr.dcm"


def test_both_objects_pass_dciodvfy(
    notice_paths: tuple[Path, Path], dciodvfy_errors: Callable[[Path], list[str]]
) -> None:
    assert [dciodvfy_errors(p) for p in notice_paths] == [[], []]


def test_page_is_rgb_in_the_source_study(
    notice_paths: tuple[Path, Path], source_headers: list[pydicom.Dataset]
) -> None:
    page = pydicom.dcmread(notice_paths[0])
    assert page.PhotometricInterpretation == "RGB"
    assert page.pixel_array.shape == (1024, 1280, 3)
    assert page.StudyInstanceUID == source_headers[0].StudyInstanceUID
    assert page.PatientID == source_headers[0].PatientID
    assert REASON in page.ImageComments


def test_report_states_the_reason(notice_paths: tuple[Path, Path]) -> None:
    document = hd.sr.srread(notice_paths[1])
    assert isinstance(document, hd.sr.Comprehensive3DSR)
    texts = [
        str(item.TextValue)
        for item in hd.sr.utils.find_content_items(document, recursive=True)
        if item.ValueType == "TEXT"
    ]
    assert f"Reason: {REASON}" in texts
    assert "CT perfusion: no maps could be computed." in texts


def test_dsrdump_renders_the_report(notice_paths: tuple[Path, Path], dsrdump) -> None:
    assert REASON[:20] in dsrdump(notice_paths[1])


def test_uids_are_deterministic_and_distinct_from_results(
    notice_paths: tuple[Path, Path], source_headers: list[pydicom.Dataset]
) -> None:
    first = [pydicom.dcmread(p) for p in notice_paths]
    again = build_failure_notice(REASON, source_headers, ReportSettings())
    assert [d.SOPInstanceUID for d in again] == [d.SOPInstanceUID for d in first]
    assert len({d.SeriesInstanceUID for d in first}) == 2


def test_an_empty_reason_is_refused(source_headers: list[pydicom.Dataset]) -> None:
    with pytest.raises(ValueError, match="reason"):
        build_failure_notice("  ", source_headers, ReportSettings())
