"""Acquisition quality checks: each broken practice-parameter fact warns, and only it."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import numpy as np
import pytest

from ctp_node.perfusion import Acquisition, PerfusionResult, compute_perfusion
from ctp_node.phantom import PhantomSpec, make_phantom
from ctp_node.qc import (
    CHECK_NAMES,
    NOT_RECORDED,
    PASS,
    WARN,
    QualityFinding,
    QualityLimits,
    assess_acquisition,
    full_width_half_maximum_s,
    warned_checks,
)

#: A small phantom on which the engine still works (about 1 s per computation).
SMALL = PhantomSpec(matrix=64, pixel_spacing_mm=3.44)


def _computed(acquisition: Acquisition) -> PerfusionResult:
    return compute_perfusion(acquisition)


@pytest.fixture(scope="module")
def standard() -> tuple[Acquisition, PerfusionResult]:
    acquisition = make_phantom(SMALL).acquisition
    return acquisition, _computed(acquisition)


def _by_name(findings: list[QualityFinding]) -> dict[str, QualityFinding]:
    return {finding.name: finding for finding in findings}


def _late_start(acquisition: Acquisition, dropped: int) -> Acquisition:
    """The cine started ``dropped`` images later (the first images are missing)."""
    t0 = acquisition.times_s[dropped]
    return replace(
        acquisition,
        hu=acquisition.hu[dropped:],
        times_s=acquisition.times_s[dropped:] - t0,
        slice_times_s=acquisition.slice_times_s[dropped:] - t0,
    )


def test_the_standard_phantom_passes_every_check(standard) -> None:
    acquisition, result = standard

    findings = assess_acquisition(acquisition, result, QualityLimits())

    assert [f.name for f in findings] == list(CHECK_NAMES)
    by_name = _by_name(findings)
    expected_motion = PASS if getattr(result, "motion_mm", None) is not None else NOT_RECORDED
    assert {f.name: f.result for f in findings} == {
        **{name: PASS for name in CHECK_NAMES},
        "Motion": expected_motion,
    }
    if expected_motion == NOT_RECORDED:
        assert by_name["Motion"].detail == "Motion not assessed."
    assert by_name["Acquisition duration"].value == pytest.approx(60.0)
    assert by_name["Acquisition duration"].unit == "s"
    assert by_name["Baseline images"].value >= 4  # arterial arrival at 6 s, 1.5 s sampling
    assert by_name["Temporal sampling"].value == pytest.approx(1.5)
    assert (by_name["Tube voltage"].value, by_name["Tube voltage"].unit) == (80.0, "kV")
    assert by_name["Tube current-time product"].unit == "mA.s"
    assert by_name["Coverage"].value == pytest.approx(40.0)  # 8 slices of 5 mm
    assert "single slab" in by_name["Coverage"].detail
    assert by_name["CTDIvol"].section == "VII"
    assert by_name["Arterial input"].section == "VI.C"
    assert all(f.limit.isascii() for f in findings)


@pytest.mark.parametrize(
    ("variant", "warned"),
    [
        ("duration_s=40", "Acquisition duration"),
        ("one baseline image", "Baseline images"),
        ("late bolus", "Venous washout"),
        ("interval_s=3", "Temporal sampling"),
    ],
)
def test_a_broken_acquisition_warns_of_that_alone(variant: str, warned: str) -> None:
    acquisition = {
        "duration_s=40": lambda: make_phantom(replace(SMALL, duration_s=40.0)).acquisition,
        # Contrast reaches the tissue at about 9 s; a cine started 7.5 s late keeps one image.
        "one baseline image": lambda: _late_start(make_phantom(SMALL).acquisition, 5),
        # The venous curve peaks at about 55 s of a 60 s cine.
        "late bolus": lambda: make_phantom(replace(SMALL, aif_arrival_s=45.0)).acquisition,
        "interval_s=3": lambda: make_phantom(replace(SMALL, interval_s=3.0)).acquisition,
    }[variant]()

    findings = assess_acquisition(acquisition, _computed(acquisition), QualityLimits())

    assert warned_checks(findings) == [warned]


def test_one_baseline_image_is_counted(standard) -> None:
    acquisition = _late_start(standard[0], 5)

    finding = _by_name(assess_acquisition(acquisition, _computed(acquisition)))["Baseline images"]

    assert (finding.result, finding.value, finding.unit) == (WARN, 1.0, "{images}")
    assert finding.section == "IV.C"


@pytest.mark.parametrize(
    ("facts", "warned", "result"),
    [
        ({"kvp": 120.0}, "Tube voltage", WARN),
        ({"exposure_mas": 300.0}, "Tube current-time product", WARN),
        ({"ctdivol_mgy": 1200.0}, "CTDIvol", WARN),
        ({"contrast_volume_ml": 30.0}, "Contrast volume", WARN),
        ({"contrast_rate_ml_s": 3.0}, "Injection rate", WARN),
        ({"patient_age_years": 10.0}, "Patient age", WARN),
        ({"kvp": None}, "Tube voltage", NOT_RECORDED),
        ({"ctdivol_mgy": None}, "CTDIvol", NOT_RECORDED),
        ({"patient_age_years": None}, "Patient age", NOT_RECORDED),
    ],
)
def test_a_header_fact_out_of_range_warns_of_that_alone(
    standard, facts: dict, warned: str, result: str
) -> None:
    acquisition, computed = standard
    changed = replace(acquisition, facts=replace(acquisition.facts, **facts))

    findings = _by_name(assess_acquisition(changed, computed, QualityLimits()))

    assert findings[warned].result == result
    others = {name: f.result for name, f in findings.items() if name not in (warned, "Motion")}
    assert set(others.values()) == {PASS}


def test_no_contrast_tags_are_not_recorded_and_do_not_warn(standard) -> None:
    acquisition, computed = standard
    changed = replace(
        acquisition,
        facts=replace(
            acquisition.facts, contrast_agent=None, contrast_volume_ml=None, contrast_rate_ml_s=None
        ),
    )

    findings = _by_name(assess_acquisition(changed, computed))

    assert findings["Contrast volume"].result == NOT_RECORDED
    assert findings["Injection rate"].result == NOT_RECORDED
    assert findings["Contrast volume"].value is None
    assert "not recorded" in findings["Contrast volume"].detail
    assert warned_checks(list(findings.values())) == []


def test_a_child_gets_the_paediatric_note(standard) -> None:
    acquisition, computed = standard
    child = replace(acquisition, facts=replace(acquisition.facts, patient_age_years=10.0))

    finding = _by_name(assess_acquisition(child, computed))["Patient age"]

    assert (finding.value, finding.unit, finding.limit) == (10.0, "a", ">= 18 years")
    assert "MRI" in finding.detail and "higher threshold" in finding.detail


def test_ctdivol_alert_level_is_configurable(standard) -> None:
    acquisition, computed = standard

    findings = _by_name(
        assess_acquisition(acquisition, computed, QualityLimits(ctdivol_alert_mgy=150))
    )

    assert findings["CTDIvol"].result == WARN
    assert "physicist" in findings["CTDIvol"].detail


def test_motion_above_the_limit_warns_with_the_frames_affected(standard) -> None:
    acquisition, computed = standard
    n_t = acquisition.hu.shape[0]
    # As the phantom's motion option moves the head: 5 mm in the last quarter of the cine.
    displacement = np.where(np.arange(n_t) >= 3 * n_t // 4, 5.0, 0.2)
    moved = dataclasses.replace(computed, motion_mm=displacement)

    findings = assess_acquisition(acquisition, moved, QualityLimits())

    assert warned_checks(findings) == ["Motion"]
    motion = _by_name(findings)["Motion"]
    assert (motion.value, motion.unit, motion.section) == (5.0, "mm", "IV.C.3")
    affected = int((displacement >= 3.0).sum())
    assert f"{affected} of {n_t} images" in motion.detail

    still = dataclasses.replace(computed, motion_mm=np.full(n_t, 0.5))
    assert _by_name(assess_acquisition(acquisition, still))["Motion"].result == PASS


def test_a_truncated_arterial_input_warns(standard) -> None:
    acquisition, computed = standard
    aif = computed.aif
    peak = int(np.argmax(aif.concentration_hu))
    # The arterial curve held at its peak from then on: it never returns towards baseline.
    held = aif.concentration_hu.copy()
    held[peak:] = held[peak]
    truncated = replace(computed, aif=replace(aif, concentration_hu=held))

    finding = _by_name(assess_acquisition(acquisition, truncated))["Arterial input"]

    assert finding.result == WARN
    assert "truncated" in finding.detail
    assert finding.unit == "[hnsf'U]"


def test_a_second_slab_is_reported_in_the_coverage(standard) -> None:
    acquisition, computed = standard

    finding = _by_name(assess_acquisition(acquisition, computed, other_slabs=1))["Coverage"]

    assert finding.result == PASS
    assert "one of 2 slabs" in finding.detail


def test_full_width_half_maximum_of_a_triangle() -> None:
    times = np.arange(0.0, 20.0, 1.0)
    curve = np.clip(5.0 - np.abs(times - 8.0), 0.0, None)  # peak 5 at 8 s, half 2.5 at ±2.5 s

    assert full_width_half_maximum_s(times, curve) == pytest.approx(5.0)
    assert full_width_half_maximum_s(times, np.minimum(curve, 0) + times) is None


def test_findings_are_json_able(standard) -> None:
    findings = assess_acquisition(*standard)

    as_dicts = [f.to_dict() for f in findings]

    assert set(as_dicts[0]) == {"name", "result", "value", "unit", "limit", "section", "detail"}
    with pytest.raises(ValueError, match="result"):
        QualityFinding("Tube voltage", "failed", 120.0, "kV", "70-90 kV", "IV.C", "")


def test_motion_measured_by_the_engine_warns_and_nothing_else() -> None:
    """A head that moves 5 mm in the last quarter of the cine, through the real engine."""
    moved_spec = dataclasses.replace(SMALL, motion_mm=5.0)
    acquisition = make_phantom(moved_spec).acquisition
    findings = assess_acquisition(acquisition, compute_perfusion(acquisition))
    assert warned_checks(findings) == ["Motion"]
    motion = _by_name(findings)["Motion"]
    # One pixel of this small phantom is 3.44 mm: the measured displacement is that close.
    assert abs(motion.value - 5.0) <= SMALL.pixel_spacing_mm
