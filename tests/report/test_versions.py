"""Versions of a result: new inputs give new UIDs, and a later version says what it supersedes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from ctp_node.perfusion.acquisition import Acquisition
from ctp_node.perfusion.result import PerfusionResult
from ctp_node.report import (
    build_failure_notice,
    build_parametric_maps,
    build_secondary_captures,
    build_structured_report,
)
from ctp_node.report.settings import ReportSettings
from ctp_node.report.versions import (
    FAILURE_SR_KIND,
    Predecessor,
    ResultVersion,
    content_digest,
    version_key,
)

SERIES = "1.2.826.0.1.3680043.8.498.1"
INSTANCES = [f"{SERIES}.{n}" for n in range(1, 42)]


def _digest(uids=INSTANCES, **kwargs) -> str:  # type: ignore[no-untyped-def]
    return content_digest(SERIES, uids, algorithm_version="0.18", **kwargs)


def test_the_digest_is_of_the_set_of_inputs_and_the_choices() -> None:
    assert _digest() == _digest(list(reversed(INSTANCES)))  # arrival order does not matter
    others = [
        _digest(INSTANCES[:25]),  # the first 25 of 41 images
        _digest(settings="tmax_threshold_s=8"),
        _digest(aif_zyx=(1, 20, 30)),
        _digest(vof_zyx=(1, 20, 30)),
        content_digest(SERIES, INSTANCES, algorithm_version="0.19"),
    ]
    assert len({_digest(), *others}) == len(others) + 1


def test_the_key_chains_the_predecessor() -> None:
    a, b = _digest(), _digest(INSTANCES[:25])
    first = version_key(b, None)
    second = version_key(a, first)
    third = version_key(b, second)  # back to the first inputs: still a new version
    assert len({first, second, third}) == 3
    assert version_key(a, first) == second  # the same inputs and history: the same key


def _all_outputs(
    result: PerfusionResult,
    acquisition: Acquisition,
    sources: list[pydicom.Dataset],
    settings: ReportSettings,
) -> list[pydicom.Dataset]:
    return [
        *build_parametric_maps(result, sources, settings),
        *build_secondary_captures(result, acquisition, sources, settings),
        build_structured_report(result, sources, settings),
    ]


@pytest.fixture(scope="module")
def second_version() -> ResultVersion:
    first_key = version_key(_digest(INSTANCES[:25]), None)
    return ResultVersion(
        number=2,
        key=version_key(_digest(), first_key),
        predecessor=Predecessor(
            key=first_key,
            number=1,
            reported_at=dt.datetime(2026, 12, 3, 14, 5),
            extent="25 of 41 time points",
        ),
        reason="more images arrived",
    )


def test_another_version_gives_every_output_new_uids_and_the_same_one_the_same(
    result, acquisition, source_headers, second_version
) -> None:
    first = ReportSettings(version=ResultVersion(key=second_version.predecessor.key))
    second = ReportSettings(version=second_version)
    uids = {
        name: [
            (str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
            for ds in _all_outputs(result, acquisition, source_headers, settings)
        ]
        for name, settings in (("first", first), ("second", second), ("again", second))
    }
    assert uids["second"] == uids["again"]
    series_first = {series for series, _ in uids["first"]}
    series_second = {series for series, _ in uids["second"]}
    instances_first = {instance for _, instance in uids["first"]}
    assert not series_first & series_second
    assert not instances_first & {instance for _, instance in uids["second"]}


def test_the_second_version_says_what_it_supersedes_and_names_its_predecessor(
    result,
    acquisition,
    source_headers,
    second_version,
    tmp_path: Path,
    dciodvfy_errors: Callable[[Path], list[str]],
) -> None:
    settings = ReportSettings(version=second_version)
    outputs = _all_outputs(result, acquisition, source_headers, settings)
    for ds in outputs:
        assert "v2 supersedes 14:05" in str(ds.SeriesDescription), ds.SeriesDescription
        assert len(str(ds.SeriesDescription)) <= 64
    sr = outputs[-1]
    predecessor_sr = build_structured_report(
        result,
        source_headers,
        ReportSettings(version=ResultVersion(key=second_version.predecessor.key)),
    )
    (study,) = sr.PredecessorDocumentsSequence
    assert study.StudyInstanceUID == source_headers[0].StudyInstanceUID
    (series,) = study.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == predecessor_sr.SeriesInstanceUID
    (instance,) = series.ReferencedSOPSequence
    assert instance.ReferencedSOPInstanceUID == predecessor_sr.SOPInstanceUID
    statement = (
        "Version 2: supersedes the result of 14:05 from 25 of 41 time points; more images arrived."
    )
    texts = [str(item.get("TextValue", "")) for item in _content_items(sr)]
    assert statement in texts
    path = tmp_path / "sr-v2.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    page = tmp_path / "sc-v2.dcm"
    outputs[5].save_as(page, enforce_file_format=True)
    assert dciodvfy_errors(page) == []


def test_a_result_after_a_failure_notice_names_the_notice(source_headers, result) -> None:
    notice_key = version_key(_digest(INSTANCES[:25]), None)
    notice_sr = build_failure_notice(
        "The contrast bolus never arrives.",
        source_headers,
        ReportSettings(version=ResultVersion(key=notice_key)),
    )[1]
    version = ResultVersion(
        number=2,
        key=version_key(_digest(), notice_key),
        predecessor=Predecessor(key=notice_key, number=1, sr_kind=FAILURE_SR_KIND),
        reason="more images arrived",
    )
    sr = build_structured_report(result, source_headers, ReportSettings(version=version))
    reference = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert reference.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == notice_sr.SOPInstanceUID
    assert "supersedes the failure notice (version 1)" in version.statement()


def test_version_one_has_no_predecessor_and_later_ones_have_one() -> None:
    with pytest.raises(ValueError, match="predecessor"):
        ResultVersion(number=2, key="k")
    with pytest.raises(ValueError, match="predecessor"):
        ResultVersion(number=1, key="k", predecessor=Predecessor(key="j", number=1))
    assert ResultVersion().statement() == "" and ResultVersion().series_suffix() == ""


def _content_items(ds: pydicom.Dataset):  # type: ignore[no-untyped-def]
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _content_items(item)
