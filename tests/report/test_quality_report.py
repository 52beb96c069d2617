"""The acquisition quality findings in the outputs: the SR's QC container (valid DICOM, read
back with highdicom), the quality page and the mismatch page's banner."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from ctp_node.perfusion.acquisition import Acquisition
from ctp_node.perfusion.result import PerfusionResult
from ctp_node.qc import CHECK_NAMES, QualityFinding, assess_acquisition
from ctp_node.report import build_secondary_captures, build_structured_report
from ctp_node.report.quality_page import quality_banner, quality_lines
from ctp_node.report.settings import ReportSettings
from ctp_node.report.sr_content import QUALITY_CONTROL

#: (result, value, UCUM unit) of each check in the hand-made findings.
FINDINGS = {
    "Acquisition duration": ("pass", 60.0, "s"),
    "Baseline images": ("warn", 1.0, "{images}"),
    "Venous washout": ("pass", 12.5, "%"),
    "Temporal sampling": ("pass", 1.5, "s"),
    "Tube voltage": ("warn", 120.0, "kV"),
    "Tube current-time product": ("pass", 150.0, "mA.s"),
    "CTDIvol": ("pass", 190.0, "mGy"),
    "Contrast volume": ("not recorded", None, "ml"),
    "Injection rate": ("not recorded", None, "ml/s"),
    "Patient age": ("pass", 71.0, "a"),
    "Motion": ("not recorded", None, "mm"),
    "Arterial input": ("pass", 480.0, "[hnsf'U]"),
    "Coverage": ("pass", 15.0, "mm"),
}


@pytest.fixture(scope="module")
def findings() -> list[QualityFinding]:
    return [
        QualityFinding(name, *FINDINGS[name][:2], FINDINGS[name][2], "limit", "IV.C", f"{name}.")
        for name in CHECK_NAMES
    ]


@pytest.fixture(scope="module")
def sr_path(
    result: PerfusionResult,
    acquisition: Acquisition,
    source_headers: list[pydicom.Dataset],
    findings: list[QualityFinding],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    path = tmp_path_factory.mktemp("sr-quality") / "sr.dcm"
    build_structured_report(
        result,
        source_headers,
        ReportSettings(),
        acquisition_facts=acquisition.facts,
        quality=findings,
    ).save_as(path, enforce_file_format=True)
    return path


def _quality_container(path: Path) -> hd.sr.ContainerContentItem:
    document = hd.sr.srread(path)
    containers = hd.sr.utils.find_content_items(
        document, name=QUALITY_CONTROL, value_type=hd.sr.ValueTypeValues.CONTAINER
    )
    assert len(containers) == 1
    return containers[0]


def test_sr_with_quality_passes_dciodvfy(
    sr_path: Path, dciodvfy_errors: Callable[[Path], list[str]]
) -> None:
    assert dciodvfy_errors(sr_path) == []


def test_sr_has_one_entry_per_check_read_back_with_highdicom(sr_path: Path) -> None:
    container = _quality_container(sr_path)

    read = {}
    for entry in container.ContentSequence:
        assert entry.ValueType == "CODE"
        values = {"result": entry.value.meaning}
        for item in entry.ContentSequence:
            assert item.RelationshipType == "HAS PROPERTIES"
            if item.ValueType == "NUM":
                values["value"] = (item.value, item.unit.value)
            else:
                values[item.name.meaning] = item.value
        read[entry.name.meaning] = values

    assert list(read) == list(CHECK_NAMES)
    for name, (result, value, unit) in FINDINGS.items():
        assert read[name]["result"] == result, name
        assert read[name].get("value") == (None if value is None else (value, unit)), name
        assert read[name]["Limit"] == "limit"
        assert read[name]["Practice parameter section"] == "IV.C"
        assert read[name]["Finding"] == f"{name}."


def test_sr_states_which_checks_warned(sr_path: Path) -> None:
    document = hd.sr.srread(sr_path)
    texts = [
        str(item.TextValue)
        for item in hd.sr.utils.find_content_items(document, recursive=True)
        if item.ValueType == "TEXT"
    ]
    assert any(
        t.startswith("Acquisition quality (ACR-ASNR-SPR practice parameter): 13 checks, ")
        and "2 warning(s): Baseline images, Tube voltage" in t
        for t in texts
    )
    # The volumes are still where the contract puts them.
    groups = document.content.get_image_measurement_groups()
    assert "Mismatch" in [g.tracking_identifier for g in groups]


def test_sr_without_quality_has_no_container(
    result: PerfusionResult, source_headers: list[pydicom.Dataset]
) -> None:
    document = build_structured_report(result, source_headers, ReportSettings())
    assert hd.sr.utils.find_content_items(document, name=QUALITY_CONTROL, recursive=True) == []
    assert "CodingSchemeIdentificationSequence" not in document


def test_sr_from_computed_findings_passes_dciodvfy(
    result: PerfusionResult,
    acquisition: Acquisition,
    source_headers: list[pydicom.Dataset],
    dciodvfy_errors: Callable[[Path], list[str]],
    tmp_path: Path,
) -> None:
    # The fixture's flat curves leave several checks unmeasurable: no number, still valid.
    findings = assess_acquisition(acquisition, result)
    path = tmp_path / "sr.dcm"
    build_structured_report(result, source_headers, ReportSettings(), quality=findings).save_as(
        path, enforce_file_format=True
    )
    assert dciodvfy_errors(path) == []
    assert len(_quality_container(path).ContentSequence) == len(CHECK_NAMES)


def test_pages_show_the_findings_and_the_banner(
    result: PerfusionResult,
    acquisition: Acquisition,
    source_headers: list[pydicom.Dataset],
    findings: list[QualityFinding],
) -> None:
    plain = build_secondary_captures(result, acquisition, source_headers, ReportSettings())
    pages = build_secondary_captures(
        result, acquisition, source_headers, ReportSettings(), quality=findings
    )

    assert [p.ImageComments for p in pages] == [p.ImageComments for p in plain]
    # The banner changes the mismatch page, the list changes the quality page; maps unchanged.
    changed = [
        not np.array_equal(a.pixel_array, b.pixel_array) for a, b in zip(plain, pages, strict=True)
    ]
    assert changed == [True, False, False, False, False, False, True]


def test_banner_and_lines_name_the_warned_checks(findings: list[QualityFinding]) -> None:
    assert quality_banner(findings) == (
        "Acquisition quality: 2 warnings (Baseline images, Tube voltage); see the quality page."
    )
    assert quality_banner([f for f in findings if f.result != "warn"]) is None
    lines = dict(quality_lines(findings))
    assert lines["WARN  Tube voltage: 120 kV"] is True
    assert lines["ok    Tube current-time product: 150 mAs"] is False
    assert lines["n/r   Motion: not assessed"] is False
