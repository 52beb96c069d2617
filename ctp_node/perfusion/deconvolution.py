"""Delay-insensitive block-circulant SVD deconvolution with an oscillation index (oSVD, Wu 2003).

The circulant matrix of the zero-padded AIF is diagonalised by the DFT; its singular values are
``|DFT(aif)| · dt``. Truncating singular values below a threshold ``P · max`` is a low-pass in the
frequency domain, so all voxels are deconvolved at once with FFTs. Per voxel, the smallest
threshold whose residue has an oscillation index below the limit is kept.

Curves are rows ``(voxel, t)`` on a uniform grid of spacing ``dt_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft


@dataclass(frozen=True)
class ResidueFeatures:
    """Per-voxel results of the deconvolution (1-D arrays over voxels).

    Attributes
    ----------
    peak : max of the regularised k(t), the flow-scaled residue, in 1/s (tissue / AIF units).
    peak_time_s : time of that maximum relative to the AIF, s (sub-sample, parabolic;
        negative when the tissue leads the AIF).
    onset_s : time at which k(t) first reaches half its maximum on its rising edge, s. The true
        residue is largest at its onset (R(0) = 1 ≥ R(t)); truncation blurs that step
        symmetrically, so its half-maximum estimates the time of the residue maximum without
        the lag of the blurred peak.
    threshold : the truncation threshold used (fraction of the largest singular value).
    level : index of that threshold in the list of levels.
    """

    peak: np.ndarray
    peak_time_s: np.ndarray
    onset_s: np.ndarray
    threshold: np.ndarray
    level: np.ndarray


def thresholds(minimum: float, maximum: float, steps: int) -> np.ndarray:
    """Geometrically spaced truncation thresholds, smallest first."""
    return np.geomspace(minimum, maximum, steps) if steps > 1 else np.array([maximum])


def oscillation_index(k: np.ndarray, peak: np.ndarray) -> np.ndarray:
    """Wu's oscillation index ``Σ|k[j] − 2k[j−1] + k[j−2]| / (L · max k)`` per row."""
    second = np.abs(k[:, 2:] - 2 * k[:, 1:-1] + k[:, :-2]).sum(axis=1)
    return second / (k.shape[1] * np.maximum(peak, 1e-12))


def deconvolve(
    tissue: np.ndarray,
    aif: np.ndarray,
    dt_s: float,
    levels: np.ndarray,
    oscillation_max: float | None,
) -> ResidueFeatures:
    """Deconvolve every row of ``tissue`` ``(v, t)`` by ``aif`` ``(t,)``.

    With ``oscillation_max=None`` the single (last) level of ``levels`` is used for all voxels
    (plain fixed-threshold block-circulant SVD).
    """
    n_vox, n_t = tissue.shape
    length = fft.next_fast_len(2 * n_t, real=True)
    spectrum_aif = fft.rfft(aif.astype(np.float64), length) * dt_s
    magnitude = np.abs(spectrum_aif)
    relative = magnitude / magnitude.max()
    inverse = np.where(magnitude > 0, 1.0 / np.where(magnitude > 0, spectrum_aif, 1.0), 0.0)
    filters = np.stack([np.where(relative >= p, inverse, 0.0) for p in levels]).astype(np.complex64)
    spectrum = fft.rfft(tissue.astype(np.float32), length, axis=1, workers=-1)

    choice = np.full(n_vox, len(levels) - 1, np.int64)
    if oscillation_max is not None and len(levels) > 1:
        undecided = np.ones(n_vox, bool)
        for i in range(len(levels) - 1):
            rows = np.flatnonzero(undecided)
            if rows.size == 0:
                break
            k = fft.irfft(spectrum[rows] * filters[i], length, axis=1, workers=-1)
            ok = oscillation_index(k, k.max(axis=1)) < oscillation_max
            choice[rows[ok]] = i
            undecided[rows[ok]] = False
    k = fft.irfft(spectrum * filters[choice], length, axis=1, workers=-1)
    return _features(k, dt_s, levels[choice], choice)


def _features(
    k: np.ndarray,
    dt_s: float,
    used: np.ndarray,
    choice: np.ndarray,
) -> ResidueFeatures:
    n_vox, length = k.shape
    rows = np.arange(n_vox)
    i = np.argmax(k, axis=1)
    peak = k[rows, i]
    left, right = k[rows, (i - 1) % length], k[rows, (i + 1) % length]
    curvature = left - 2 * peak + right
    offset = np.where(
        curvature < 0, 0.5 * (left - right) / np.where(curvature < 0, curvature, -1), 0.0
    )
    offset = np.clip(offset, -0.5, 0.5)
    refined = peak - 0.25 * (left - right) * offset
    position = i + offset
    position = np.where(position > length / 2, position - length, position)

    # Rising half-maximum: walk back from the peak (circularly) to the first sample below half.
    window = length // 2
    back = (i[:, None] - np.arange(window)[None, :]) % length
    values = np.take_along_axis(k, back, axis=1)
    below = values < 0.5 * peak[:, None]
    j = np.where(below.any(axis=1), np.argmax(below, axis=1), window - 1)
    j = np.maximum(j, 1)
    v_below = values[rows, j]
    v_above = values[rows, j - 1]
    frac = np.clip((v_above - 0.5 * peak) / np.maximum(v_above - v_below, 1e-12), 0.0, 1.0)
    half = i - (j - 1) - frac
    half = np.where(half > length / 2, half - length, half)
    return ResidueFeatures(
        peak=np.maximum(refined, peak).astype(np.float32),
        peak_time_s=(position * dt_s).astype(np.float32),
        onset_s=(half * dt_s).astype(np.float32),
        threshold=used.astype(np.float32),
        level=choice.astype(np.int16),
    )


def exponential_peak_ratio(
    aif: np.ndarray, dt_s: float, levels: np.ndarray, mtt_s: np.ndarray, supersample: int = 8
) -> np.ndarray:
    """How much truncation lowers the peak of k(t) for an exponential residue.

    For each threshold level and true MTT, a tissue curve is simulated as the continuous
    convolution of the (piecewise-linear) AIF with ``exp(−t/MTT)`` starting at a few sub-sample
    onsets, sampled on the grid and deconvolved exactly as the voxels are. Returns
    ``(levels, mtt)`` ratios ``max k / CBF`` (1 = no bias), averaged over the onsets.
    """
    n_t = aif.size
    length = fft.next_fast_len(2 * n_t, real=True)
    fine_dt = dt_s / supersample
    fine_t = np.arange(n_t * supersample) * fine_dt
    aif_fine = np.interp(fine_t, np.arange(n_t) * dt_s, aif)
    onsets = (np.arange(4) + 0.5) / 4 * dt_s
    curves = []
    for mtt in mtt_s:
        for onset in onsets:
            residue = np.where(fine_t >= onset, np.exp(-(fine_t - onset) / mtt), 0.0)
            conv = (
                fft.irfft(fft.rfft(aif_fine, 2 * fine_t.size) * fft.rfft(residue, 2 * fine_t.size))[
                    : fine_t.size
                ]
                * fine_dt
            )
            curves.append(conv[::supersample])
    curves = np.asarray(curves)
    ratios = np.empty((len(levels), len(mtt_s)))
    for i, level in enumerate(levels):
        res = deconvolve(curves, aif, dt_s, np.array([level]), None)
        ratios[i] = res.peak.reshape(len(mtt_s), len(onsets)).mean(axis=1)
    del length
    return ratios


def correct_peak(
    peak: np.ndarray, area: np.ndarray, level: np.ndarray, ratios: np.ndarray, mtt_s: np.ndarray
) -> np.ndarray:
    """Undo the truncation bias of ``peak`` (max k) assuming an exponential residue.

    ``area`` is ∫k = CBF·MTT (regularisation-independent, from the curve areas), so the
    apparent MTT ``area / peak`` identifies the true MTT on the simulated curve of the voxel's
    own threshold level; the peak is divided by that level's ratio at that MTT.
    """
    corrected = peak.astype(np.float64).copy()
    for i in np.unique(level):
        rows = level == i
        ratio = np.clip(ratios[i], 1e-3, None)
        apparent = mtt_s / ratio
        order = np.argsort(apparent)
        mtt_app = area[rows] / np.maximum(peak[rows], 1e-9)
        factor = np.interp(mtt_app, apparent[order], ratio[order])
        corrected[rows] = peak[rows] / factor
    return corrected.astype(np.float32)
