"""One series through the pipeline, from either kind of CT storage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from ctp_node.phantom import PhantomSpec, make_phantom
from ctp_node.phantom.dicom import StudyIdentity, write_ct_series
from ctp_node.pipeline import PipelineSettings, process_series
from tests.assemble.enhanced_ct import enhanced_ct_per_time_point
from tests.dicom_checks import dciodvfy_errors, map_volume


def test_enhanced_ct_gives_the_same_outputs_as_classic_ct(tmp_path: Path) -> None:
    phantom = make_phantom(PhantomSpec(matrix=96, slices=6))
    classic = write_ct_series(
        phantom.acquisition, tmp_path / "classic", identity=StudyIdentity.new()
    )
    enhanced = enhanced_ct_per_time_point(classic, tmp_path / "enhanced")

    from_classic = process_series(classic, tmp_path / "out-classic", PipelineSettings())
    from_enhanced = process_series(enhanced, tmp_path / "out-enhanced", PipelineSettings())

    kinds = [o.output_kind for o in from_enhanced.outputs]
    assert kinds == [o.output_kind for o in from_classic.outputs]
    positions = phantom.acquisition.slice_positions_mm
    for mine, theirs in zip(from_enhanced.outputs, from_classic.outputs, strict=True):
        assert dciodvfy_errors(mine.path) == [], mine.path.name
        if mine.output_kind == "parametric_maps":
            a, b = pydicom.dcmread(mine.path), pydicom.dcmread(theirs.path)
            np.testing.assert_array_equal(map_volume(a, positions), map_volume(b, positions))
            referenced = {
                item.ReferencedSOPInstanceUID
                for series in a.ReferencedSeriesSequence
                for item in series.ReferencedInstanceSequence
            }
            first_time_point = pydicom.dcmread(enhanced[0], stop_before_pixels=True)
            assert referenced == {first_time_point.SOPInstanceUID}
    assert from_enhanced.summary["volumes"] == from_classic.summary["volumes"]


def test_series_numbers_and_descriptions_follow_the_configuration(tmp_path: Path) -> None:
    from ctp_node.config import load_config
    from ctp_node.wiring import job_context

    config_path = tmp_path / "node.yaml"
    config_path.write_text(
        "report:\n  series_number_start: 3000\n  series_description_suffix: STROKE\n"
    )
    settings = job_context(load_config(config_path)).settings
    phantom = make_phantom(PhantomSpec(matrix=64, slices=4, pixel_spacing_mm=220.0 / 64))
    paths = write_ct_series(phantom.acquisition, tmp_path / "ct", identity=StudyIdentity.new())
    processed = process_series(paths, tmp_path / "out", settings)
    headers = [pydicom.dcmread(o.path, stop_before_pixels=True) for o in processed.outputs]
    descriptions = {str(h.SeriesDescription) for h in headers}
    assert {"CBF STROKE", "CBV STROKE", "MTT STROKE", "TTP STROKE", "Tmax STROKE"} <= descriptions
    assert all(d.endswith("STROKE") for d in descriptions)
    assert min(int(h.SeriesNumber) for h in headers) == 3000


def test_wide_detector_volume_is_processed_at_full_coverage(tmp_path: Path) -> None:
    """Many thin slices (a wide-detector scanner): every slice mapped, coverage reported."""
    spec = PhantomSpec(matrix=64, slices=40, slice_thickness_mm=1.25, pixel_spacing_mm=220 / 64)
    phantom = make_phantom(spec)
    paths = write_ct_series(phantom.acquisition, tmp_path / "ct", identity=StudyIdentity.new())
    processed = process_series(paths, tmp_path / "out", PipelineSettings())
    positions = phantom.acquisition.slice_positions_mm
    for output in processed.outputs:
        if output.output_kind == "parametric_maps":
            assert map_volume(pydicom.dcmread(output.path), positions).shape[0] == 40
    (coverage,) = [f for f in processed.summary["quality"] if f["name"] == "Coverage"]
    assert coverage["value"] == pytest.approx(40 * 1.25, abs=1.25)


def test_a_malformed_birth_date_is_emptied_in_the_outputs_not_fatal(tmp_path: Path) -> None:
    """highdicom parses the dates it copies: one it cannot parse once stopped every output
    and the failure notice too."""
    from ctp_node.pipeline import write_failure_notice
    from ctp_node.report.settings import ReportSettings

    phantom = make_phantom(PhantomSpec(matrix=64, slices=4, pixel_spacing_mm=220.0 / 64))
    paths = write_ct_series(phantom.acquisition, tmp_path / "ct", identity=StudyIdentity.new())
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.PatientBirthDate = "19500230"  # 30 February
        ds.save_as(path)
    processed = process_series(paths, tmp_path / "out", PipelineSettings())
    headers = [pydicom.dcmread(o.path, stop_before_pixels=True) for o in processed.outputs]
    assert len(headers) >= 7
    assert {str(h.get("PatientBirthDate", "")) for h in headers} == {""}
    (report,) = [o.path for o in processed.outputs if o.output_kind == "structured_report"]
    assert b"PatientBirthDate: not a valid date or time" in report.read_bytes()  # the note
    assert pydicom.dcmread(paths[0]).PatientBirthDate == "19500230"  # the source is untouched
    notice = write_failure_notice(paths, tmp_path / "notice", "a test", ReportSettings())
    assert len(notice) == 2
