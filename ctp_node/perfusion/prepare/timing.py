"""Time axis handling: uniform resampling, bolus arrival and baseline subtraction.

Axis order ``(t, z, y, x)``; times in seconds from the first image of the acquisition.
"""

from __future__ import annotations

import numpy as np

from ctp_node.perfusion.errors import AcquisitionTooShortError, NoBaselineError, NoContrastError

#: Fewest time points and shortest span from which maps can be computed.
MIN_FRAMES = 8
MIN_DURATION_S = 20.0


def uniform_times(times_s: np.ndarray, interval_s: float) -> np.ndarray:
    """A uniform grid from the first to the last time; ``interval_s = 0`` → median spacing."""
    step = float(np.median(np.diff(times_s))) if interval_s <= 0 else float(interval_s)
    count = int(np.floor((times_s[-1] - times_s[0]) / step + 1e-6)) + 1
    return times_s[0] + step * np.arange(count)


def resample_slice(curves: np.ndarray, times_s: np.ndarray, grid_s: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``(t, ...)`` curves sampled at ``times_s`` onto ``grid_s``.

    Loops over the new time points only; every voxel is interpolated at once.
    """
    if times_s.shape == grid_s.shape and np.allclose(times_s, grid_s):
        return curves.astype(np.float32, copy=True)  # callers modify it in place
    upper = np.clip(np.searchsorted(times_s, grid_s, side="right"), 1, times_s.size - 1)
    lower = upper - 1
    weight = np.clip((grid_s - times_s[lower]) / (times_s[upper] - times_s[lower]), 0.0, 1.0)
    out = np.empty((grid_s.size, *curves.shape[1:]), np.float32)
    for i in range(grid_s.size):
        out[i] = curves[lower[i]] * np.float32(1 - weight[i]) + curves[upper[i]] * np.float32(
            weight[i]
        )
    return out


def check_duration(times_s: np.ndarray) -> None:
    """Refuse acquisitions from which no maps can be computed."""
    if times_s.size < MIN_FRAMES:
        raise AcquisitionTooShortError(
            f"The dynamic series has only {times_s.size} time points; at least {MIN_FRAMES} "
            "are needed to follow the contrast bolus through the brain."
        )
    span = float(times_s[-1] - times_s[0])
    if span < MIN_DURATION_S:
        raise AcquisitionTooShortError(
            f"The dynamic series covers only {span:.0f} s; at least {MIN_DURATION_S:.0f} s "
            "(50–70 s recommended) are needed to capture the bolus passage."
        )


def bolus_arrival(curve: np.ndarray, times_s: np.ndarray, *, min_rise_hu: float) -> tuple[int, int]:
    """Frames of bolus arrival and of the peak of a (spatially averaged) HU curve.

    Returns ``(baseline_frames, peak_frame)``: the number of frames before the curve starts to
    rise towards its peak (the baseline), and the index of the peak.

    Raises
    ------
    NoContrastError : the curve never rises by ``min_rise_hu``.
    NoBaselineError : the curve already rises at the first image.
    AcquisitionTooShortError : the peak is at the last image (bolus not captured).
    """
    smooth = np.convolve(np.pad(curve, 1, mode="edge"), np.ones(3) / 3, mode="valid")
    level = float(np.median(smooth[: max(2, min(3, smooth.size // 10))]))
    peak = int(np.argmax(smooth))
    rise = float(smooth[peak] - level)
    if rise < min_rise_hu:
        raise NoContrastError(
            f"No contrast enhancement is visible in the brain (largest rise {rise:.1f} HU): "
            "the bolus was not injected, missed the acquisition window, or the series is not "
            "a perfusion scan."
        )
    if peak >= curve.size - 1:
        raise AcquisitionTooShortError(
            f"The brain enhancement is still rising at the last image ({times_s[-1]:.0f} s): "
            "the acquisition ended before the bolus peak; repeat with a longer scan or an "
            "earlier start."
        )
    below = np.flatnonzero(smooth[: peak + 1] - level < 0.1 * rise)
    if below.size == 0:
        raise NoBaselineError(
            "Contrast is already present in the first image: there is no pre-contrast "
            "baseline; start the acquisition before the contrast arrives (at least 2 "
            "baseline images)."
        )
    baseline_frames = int(below[-1]) + 1
    return baseline_frames, peak
