"""Acquisition quality control against the ACR–ASNR–SPR CT perfusion practice parameter.

Every acquisition is checked, study by study, from its header facts and from the data: duration,
baseline, venous washout, temporal sampling, tube voltage and current-time product, CTDIvol,
contrast volume and injection rate, patient age, motion, the arterial input and the coverage.
Each check gives one :class:`QualityFinding` with its result (``pass``, ``warn`` or
``not recorded``), the measured value and unit (UCUM), the limit and the section of the practice
parameter it comes from. Limits are configuration (:class:`QualityLimits`); the defaults are the
practice parameter's.

Sections (ACR–ASNR–SPR Practice Parameter for the Performance of CT Perfusion in
Neuroradiologic Imaging): IV.C acquisition technique and contrast, IV.C.3 post-processing
(motion), VI.C input curves, VII radiation safety.

Axis order of the data is ``(t, z, y, x)``; times in seconds from the first image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ctp_node.perfusion.acquisition import Acquisition
from ctp_node.perfusion.result import InputCurve, PerfusionResult
from ctp_node.qc.headers import header_checks
from ctp_node.qc.limits import (
    _ARRIVAL_FRACTION,
    _MAX_TISSUE_VOXELS,
    _MIN_TISSUE_RISE_HU,
    ARTERIAL_INPUT,
    BASELINE,
    CHECK_NAMES,
    COVERAGE,
    DURATION,
    MOTION,
    NOT_RECORDED,
    PASS,
    RESULTS,
    SAMPLING,
    WARN,
    WASHOUT,
    QualityFinding,
    QualityLimits,
    _within,
    warned_checks,
)


def assess_acquisition(
    acquisition: Acquisition,
    result: PerfusionResult,
    limits: QualityLimits = QualityLimits(),
    *,
    other_slabs: int = 0,
) -> list[QualityFinding]:
    """Check one acquisition against the practice parameter.

    Parameters
    ----------
    acquisition : the dynamic acquisition (times, geometry, header facts; data ``(t, z, y, x)``).
    result : what the engine computed from it (tissue mask, AIF, VOF; per-frame motion in mm
        as ``result.motion_mm`` when the engine measured it).
    limits : the limits to apply.
    other_slabs : number of further perfusion series (slabs, each with its own bolus) of the
        same study; 0 for a single slab.

    Returns
    -------
    One finding per check, in the order of :data:`CHECK_NAMES`.
    """
    tissue_baseline, tissue_arrival_s = tissue_arrival(acquisition, result.tissue_mask)
    return [
        _duration(acquisition, limits),
        _baseline(tissue_baseline, tissue_arrival_s, limits),
        _washout(result.vof, limits),
        _sampling(acquisition, result, tissue_arrival_s, limits),
        *header_checks(acquisition, limits),
        _motion(getattr(result, "motion_mm", None), limits),
        _arterial_input(result.aif, limits),
        _coverage(acquisition, other_slabs, limits),
    ]


def tissue_arrival(
    acquisition: Acquisition, tissue_mask: np.ndarray
) -> tuple[int | None, float | None]:
    """Images before contrast reaches the tissue, and the arrival time in s.

    Measured on the mean curve of the tissue voxels: arrival is the first image whose enhancement
    over the first image reaches 10 % of the curve's peak enhancement. ``(None, None)`` when the
    tissue does not enhance measurably.
    """
    indices = np.flatnonzero(tissue_mask)
    if indices.size == 0:
        return None, None
    indices = indices[:: max(1, indices.size // _MAX_TISSUE_VOXELS)]
    n_t = acquisition.hu.shape[0]
    curve = acquisition.hu.reshape(n_t, -1)[:, indices].mean(axis=1, dtype=np.float64)
    enhancement = curve - curve[0]
    peak = int(np.argmax(enhancement))
    rise = float(enhancement[peak])
    if rise < _MIN_TISSUE_RISE_HU:
        return None, None
    first = int(np.argmax(enhancement[: peak + 1] >= _ARRIVAL_FRACTION * rise))
    return first, float(acquisition.times_s[first] - acquisition.times_s[0])


# --------------------------------------------------------------------------------------------
# The checks


def _duration(acquisition: Acquisition, limits: QualityLimits) -> QualityFinding:
    times = acquisition.times_s
    duration = float(times[-1] - times[0])
    ok = _within(duration, limits.duration_min_s, limits.duration_max_s)
    detail = f"{times.size} images over {duration:.1f} s of cine"
    if not ok:
        short = duration < limits.duration_min_s
        detail += (
            ": shorter than recommended, the bolus passage may be truncated"
            if short
            else ": longer than needed, extra radiation dose"
        )
    return QualityFinding(
        DURATION,
        PASS if ok else WARN,
        duration,
        "s",
        f"{limits.duration_min_s:g}-{limits.duration_max_s:g} s",
        "IV.C",
        detail + ".",
    )


def _baseline(images: int | None, arrival_s: float | None, limits: QualityLimits) -> QualityFinding:
    limit = f">= {limits.baseline_images_min} images"
    if images is None:
        return QualityFinding(
            BASELINE,
            NOT_RECORDED,
            None,
            "{images}",
            limit,
            "IV.C",
            "Contrast arrival in the tissue could not be measured (no tissue enhancement).",
        )
    ok = images >= limits.baseline_images_min
    detail = f"{images} image(s) before contrast reached the tissue (arrival at {arrival_s:.1f} s)"
    if not ok:
        detail += "; the pre-contrast baseline is unreliable, start the cine earlier"
    return QualityFinding(
        BASELINE, PASS if ok else WARN, float(images), "{images}", limit, "IV.C", detail + "."
    )


def _washout(vof: InputCurve | None, limits: QualityLimits) -> QualityFinding:
    limit = f"back to <= {limits.venous_end_max_percent:g} % of the venous peak"
    if vof is None:
        return QualityFinding(
            WASHOUT,
            NOT_RECORDED,
            None,
            "%",
            limit,
            "IV.C",
            "No venous curve was found; the washout cannot be assessed.",
        )
    concentration = np.asarray(vof.concentration_hu, dtype=float)
    peak_index = int(np.argmax(concentration))
    peak = float(concentration[peak_index])
    if peak <= 0:
        return QualityFinding(
            WASHOUT, NOT_RECORDED, None, "%", limit, "IV.C", "The venous curve does not enhance."
        )
    end_percent = 100.0 * float(concentration[-1]) / peak
    peak_s = float(vof.times_s[peak_index])
    ok = peak_index < concentration.size - 1 and end_percent <= limits.venous_end_max_percent
    detail = (
        f"The venous curve peaks at {peak_s:.1f} s and ends at {round(end_percent)} % of its peak"
    )
    detail += (
        ": the downslope is captured."
        if ok
        else ": the washout is truncated (the acquisition ends before the venous curve returns "
        "towards baseline); CBV and MTT may be underestimated."
    )
    return QualityFinding(WASHOUT, PASS if ok else WARN, end_percent, "%", limit, "IV.C", detail)


def _first_pass_window(
    acquisition: Acquisition, result: PerfusionResult, tissue_arrival_s: float | None
) -> tuple[float, float]:
    """From one image before the earlier of AIF and tissue arrival to the time the venous
    (or, without it, the arterial) curve has fallen to half its peak; times in s."""
    times = acquisition.times_s
    arrivals = [result.aif.arrival_s]
    if tissue_arrival_s is not None:
        arrivals.append(float(times[0]) + tissue_arrival_s)
    first = int(np.searchsorted(times, min(arrivals), side="left"))
    start = float(times[max(0, first - 1)])
    curve = result.vof if result.vof is not None else result.aif
    concentration = np.asarray(curve.concentration_hu, dtype=float)
    peak = int(np.argmax(concentration))
    after = np.flatnonzero(concentration[peak:] <= 0.5 * concentration[peak])
    end = float(curve.times_s[peak + after[0]]) if after.size else float(times[-1])
    return start, max(end, start)


def _sampling(
    acquisition: Acquisition,
    result: PerfusionResult,
    tissue_arrival_s: float | None,
    limits: QualityLimits,
) -> QualityFinding:
    times = acquisition.times_s
    start, end = _first_pass_window(acquisition, result, tissue_arrival_s)
    intervals = np.diff(times)
    inside = (times[1:] > start) & (times[:-1] < end)
    longest = float(intervals[inside].max()) if inside.any() else float(intervals.max())
    overall = float(intervals.max())
    ok = longest <= limits.sampling_interval_max_s + 1e-6
    detail = (
        f"Longest interval between images {longest:.2f} s during the first pass "
        f"({start:.1f}-{end:.1f} s); {overall:.2f} s over the whole cine"
    )
    if not ok:
        detail += "; the bolus peaks may be missed, flows underestimated"
    return QualityFinding(
        SAMPLING,
        PASS if ok else WARN,
        longest,
        "s",
        f"<= {limits.sampling_interval_max_s:g} s through the first pass",
        "IV.C",
        detail + ".",
    )


def _motion(motion_mm: Any, limits: QualityLimits) -> QualityFinding:
    limit = f"< {limits.motion_limit_mm:g} mm displacement"
    if motion_mm is None:
        return QualityFinding(
            MOTION, NOT_RECORDED, None, "mm", limit, "IV.C.3", "Motion not assessed."
        )
    displacement = np.atleast_1d(np.asarray(motion_mm, dtype=float))
    displacement = displacement[np.isfinite(displacement)]
    if displacement.size == 0:
        return QualityFinding(
            MOTION, NOT_RECORDED, None, "mm", limit, "IV.C.3", "Motion not assessed."
        )
    largest = float(np.abs(displacement).max())
    affected = int((np.abs(displacement) >= limits.motion_limit_mm).sum())
    ok = largest < limits.motion_limit_mm
    detail = f"Largest head displacement {largest:.1f} mm"
    if displacement.size > 1:
        detail += f"; {affected} of {displacement.size} images at or above {limit[2:]}"
    detail += (
        "."
        if ok
        else ": movement during the cine acquisition; the maps may be degraded where the head "
        "moved (check the source images)."
    )
    return QualityFinding(MOTION, PASS if ok else WARN, largest, "mm", limit, "IV.C.3", detail)


def full_width_half_maximum_s(times_s: np.ndarray, curve: np.ndarray) -> float | None:
    """Full width at half maximum of a curve's main peak in s (linear interpolation);
    ``None`` when the curve does not fall to half its peak on both sides."""
    times_s = np.asarray(times_s, dtype=float)
    curve = np.asarray(curve, dtype=float)
    peak = int(np.argmax(curve))
    half = 0.5 * float(curve[peak])
    if half <= 0:
        return None
    before = np.flatnonzero(curve[:peak] < half)
    after = np.flatnonzero(curve[peak:] < half)
    if before.size == 0 or after.size == 0:
        return None

    left_i = int(before[-1])
    rising = float(
        np.interp(half, [curve[left_i], curve[left_i + 1]], [times_s[left_i], times_s[left_i + 1]])
    )
    right_j = peak + int(after[0])
    falling = float(
        np.interp(
            half,
            [curve[right_j], curve[right_j - 1]],
            [times_s[right_j], times_s[right_j - 1]],
        )
    )
    return falling - rising


def _arterial_input(aif: InputCurve, limits: QualityLimits) -> QualityFinding:
    concentration = np.asarray(aif.concentration_hu, dtype=float)
    times = np.asarray(aif.times_s, dtype=float)
    peak_index = int(np.argmax(concentration))
    peak = float(concentration[peak_index])
    limit = (
        f"peak >= {limits.aif_peak_min_hu:g} HU, FWHM {limits.aif_fwhm_min_s:g}-"
        f"{limits.aif_fwhm_max_s:g} s, back to <= {limits.aif_end_max_percent:g} % of the peak"
    )
    problems = []
    if peak < limits.aif_peak_min_hu:
        problems.append(f"peak {peak:.0f} HU is low (partial volume or poor bolus)")
    width = full_width_half_maximum_s(times, concentration)
    end_percent = 100.0 * float(concentration[-1]) / peak if peak > 0 else float("nan")
    if peak_index == 0 or aif.baseline_frames < 1:
        problems.append("no rise from a baseline (bolus already present in the first image)")
    if peak_index >= concentration.size - 1 or not end_percent <= limits.aif_end_max_percent:
        problems.append("truncated (the arterial curve does not return towards baseline)")
    if width is None:
        problems.append("the width cannot be measured (the curve does not fall to half its peak)")
    elif not _within(width, limits.aif_fwhm_min_s, limits.aif_fwhm_max_s):
        problems.append(f"width {width:.1f} s is implausible")
    summary = (
        f"AIF ({aif.selection}, {len(aif.voxels_zyx)} voxels): peak {peak:.0f} HU at "
        f"{float(times[peak_index]):.1f} s, FWHM "
        f"{'not measurable' if width is None else f'{width:.1f} s'}, ends at "
        f"{round(end_percent) if np.isfinite(end_percent) else '?'} % of the peak"
    )
    detail = summary + ("; " + "; ".join(problems) + "." if problems else ": plausible.")
    return QualityFinding(
        ARTERIAL_INPUT,
        WARN if problems else PASS,
        peak,
        "[hnsf'U]",
        limit,
        "VI.C",
        detail,
    )


def _coverage(acquisition: Acquisition, other_slabs: int, limits: QualityLimits) -> QualityFinding:
    n_z = acquisition.hu.shape[1]
    extent_mm = float(n_z * acquisition.slice_spacing_mm)
    limit = f">= {limits.coverage_min_mm:g} mm" if limits.coverage_min_mm > 0 else "reported only"
    ok = extent_mm >= limits.coverage_min_mm
    detail = f"{n_z} slices of {acquisition.slice_spacing_mm:g} mm: {extent_mm:.0f} mm craniocaudal"
    if other_slabs > 0:
        detail += (
            f"; one of {other_slabs + 1} slabs acquired with separate boluses (limited z-coverage):"
            " contrast and dose add up over the slabs, each slab is reported separately"
        )
    else:
        detail += "; a single slab"
    if not ok:
        detail += "; less coverage than the facility's minimum"
    return QualityFinding(
        COVERAGE, PASS if ok else WARN, extent_mm, "mm", limit, "IV.C", detail + "."
    )


__all__ = [
    "CHECK_NAMES",
    "RESULTS",
    "QualityFinding",
    "QualityLimits",
    "assess_acquisition",
    "full_width_half_maximum_s",
    "tissue_arrival",
    "warned_checks",
]
