"""The RGB summary pages: valid Secondary Captures of the source study, readable pixels, stable
UIDs, and the identification burned in rather than left out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ctp_node.perfusion.acquisition import Acquisition
from ctp_node.perfusion.result import PerfusionResult
from ctp_node.report import build_secondary_captures
from ctp_node.report.settings import ReportSettings

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture(scope="module")
def sc_paths(
    result: PerfusionResult,
    acquisition: Acquisition,
    source_headers: list[pydicom.Dataset],
    tmp_path_factory: pytest.TempPathFactory,
) -> list[Path]:
    folder = tmp_path_factory.mktemp("sc")
    paths = []
    for dataset in build_secondary_captures(
        result, acquisition, source_headers, ReportSettings(), notes=["a note"]
    ):
        path = folder / f"{dataset.InstanceNumber}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def test_one_page_per_summary_map_and_quality(sc_paths: list[Path]) -> None:
    comments = [str(pydicom.dcmread(p).ImageComments) for p in sc_paths]
    assert comments == [
        "Core/hypoperfusion mismatch and volumes",
        "CBF colour map",
        "CBV colour map",
        "MTT colour map",
        "Tmax colour map",
        "TTP colour map",
        "AIF/VOF curves and acquisition quality",
    ]


def test_every_page_passes_dciodvfy(
    sc_paths: list[Path], dciodvfy_errors: Callable[[Path], list[str]]
) -> None:
    assert {p.name: dciodvfy_errors(p) for p in sc_paths} == {p.name: [] for p in sc_paths}


def test_rgb_pages_of_the_source_study_in_one_series(
    sc_paths: list[Path], source_headers: list[pydicom.Dataset]
) -> None:
    source = source_headers[0]
    pages = [pydicom.dcmread(p) for p in sc_paths]
    assert {ds.SeriesInstanceUID for ds in pages} == {pages[0].SeriesInstanceUID}
    assert [ds.InstanceNumber for ds in pages] == list(range(1, len(pages) + 1))
    for ds in pages:
        assert ds.SOPClassUID == SECONDARY_CAPTURE
        assert ds.PhotometricInterpretation == "RGB"
        assert ds.BurnedInAnnotation == "YES"
        assert ds.SeriesNumber == 920
        for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "AccessionNumber"):
            assert ds[keyword].value == source[keyword].value, keyword
        pixels = ds.pixel_array
        assert pixels.shape == (1024, 1280, 3) and pixels.dtype == np.uint8
        # A rendered page, not a blank one: colour and bright text are present.
        assert pixels.max() == 255
        assert np.any(pixels[..., 0].astype(int) - pixels[..., 2] > 100)


def test_uids_are_deterministic(
    sc_paths: list[Path],
    result: PerfusionResult,
    acquisition: Acquisition,
    source_headers: list[pydicom.Dataset],
) -> None:
    again = build_secondary_captures(result, acquisition, source_headers, ReportSettings())
    first = [pydicom.dcmread(p) for p in sc_paths]
    assert [(d.SeriesInstanceUID, d.SOPInstanceUID) for d in again] == [
        (d.SeriesInstanceUID, d.SOPInstanceUID) for d in first
    ]
    other_version = build_secondary_captures(
        result, acquisition, source_headers, ReportSettings(algorithm_version="other")
    )
    assert other_version[0].SOPInstanceUID != first[0].SOPInstanceUID


def test_a_result_on_another_grid_is_refused(
    result: PerfusionResult, acquisition: Acquisition, source_headers: list[pydicom.Dataset]
) -> None:
    small = Acquisition(
        hu=acquisition.hu[:, :2],
        times_s=acquisition.times_s,
        pixel_spacing_mm=(1, 1),
        slice_spacing_mm=5.0,
    )
    with pytest.raises(ValueError, match="grid"):
        build_secondary_captures(result, small, source_headers, ReportSettings())
