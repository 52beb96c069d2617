"""Delay-insensitive block-circulant SVD deconvolution with an oscillation index (oSVD, Wu 2003).

The circulant matrix of the zero-padded AIF is diagonalised by the DFT; its singular values are
``|DFT(aif)| · dt``. Truncating singular values below a threshold ``P · max`` is a low-pass in the
frequency domain; applied to the curve samples it is one matrix per threshold
(:func:`residue_operators`), which composes with a temporal basis so that every voxel at every
threshold costs one small matrix product. Per voxel, the smallest threshold whose residue has an
oscillation index below the limit is kept (found by bisection over the thresholds).

Curves are rows ``(voxel, t)`` on a uniform grid of spacing ``dt_s``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy import fft

#: How far back from the residue peak its rising half-maximum is looked for, s.
_RISE_WINDOW_S = 16.0


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


def residue_operators(aif: np.ndarray, dt_s: float, levels: np.ndarray) -> np.ndarray:
    """Truncated-SVD deconvolution by ``aif`` as matrices, one per threshold level.

    Returns float32 ``(levels, t, length)``: a tissue curve ``c`` (``(t,)`` on the uniform grid)
    has the flow-scaled residue ``c @ operators[i]`` (1/s, circular over ``length`` samples, the
    last half holding negative delays) at threshold ``levels[i]``. Composed with a temporal
    basis, every voxel and every threshold becomes one small matrix product.
    """
    n_t = aif.size
    length = fft.next_fast_len(2 * n_t, real=True)
    spectrum_aif = fft.rfft(aif.astype(np.float64), length) * dt_s
    magnitude = np.abs(spectrum_aif)
    relative = magnitude / max(float(magnitude.max()), 1e-30)
    inverse = np.where(magnitude > 0, 1.0 / np.where(magnitude > 0, spectrum_aif, 1.0), 0.0)
    unit = fft.rfft(np.eye(n_t), length, axis=1)
    return np.stack(
        [fft.irfft(unit * np.where(relative >= p, inverse, 0.0), length, axis=1) for p in levels]
    ).astype(np.float32)


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
    operators = residue_operators(aif, dt_s, levels)
    return deconvolve_projected(tissue.astype(np.float32), operators, dt_s, levels, oscillation_max)


def deconvolve_projected(
    coefficients: np.ndarray,
    operators: np.ndarray,
    dt_s: float,
    levels: np.ndarray,
    oscillation_max: float | None,
    chunk: int = 65536,
    workers: int = 1,
) -> ResidueFeatures:
    """Deconvolve voxels given as rows ``(v, r)`` of coefficients of a linear curve model.

    ``operators`` ``(levels, r, length)`` map coefficients to the residue at each threshold
    (:func:`residue_operators` composed with the basis). Per voxel, the smallest threshold
    whose residue has an oscillation index below ``oscillation_max`` is found by bisection over
    the levels (the index falls as the threshold rises), so about log2(levels) products are
    evaluated instead of one per level. Work is chunked over voxels to bound memory and spread
    over ``workers`` threads.
    """
    n_vox = coefficients.shape[0]
    starts = range(0, n_vox, chunk)

    def run(start: int) -> ResidueFeatures:
        return _deconvolve_chunk(
            coefficients[start : start + chunk], operators, dt_s, levels, oscillation_max
        )

    if workers > 1 and n_vox > chunk:
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(run, starts))
    else:
        parts = [run(s) for s in starts]
    if not parts:
        parts = [run(0)]
    return ResidueFeatures(
        **{
            name: np.concatenate([getattr(p, name) for p in parts])
            for name in ResidueFeatures.__dataclass_fields__
        }
    )


def _deconvolve_chunk(
    a: np.ndarray,
    operators: np.ndarray,
    dt_s: float,
    levels: np.ndarray,
    oscillation_max: float | None,
) -> ResidueFeatures:
    n_levels = operators.shape[0]
    n_vox = a.shape[0]
    low = np.zeros(n_vox, np.int64)
    high = np.full(n_vox, n_levels - 1, np.int64)
    if oscillation_max is None or n_levels == 1:
        low[:] = high
    curvature = operators[:, :, 2:] - 2 * operators[:, :, 1:-1] + operators[:, :, :-2]
    length = operators.shape[2]
    # Bisection for the smallest level that passes; the last level passes by definition.
    while np.any(low < high):
        open_ = np.flatnonzero(low < high)
        mid = (low[open_] + high[open_]) // 2
        passed = np.empty(open_.size, bool)
        for level in np.unique(mid):
            sel = mid == level
            rows = a[open_[sel]]
            peak = (rows @ operators[level]).max(axis=1)
            second = np.abs(rows @ curvature[level]).sum(axis=1)
            passed[sel] = second < oscillation_max * length * np.maximum(peak, 1e-12)
        high[open_[passed]] = mid[passed]
        low[open_[~passed]] = mid[~passed] + 1
    k = np.empty((n_vox, length), np.float32)
    for level in np.unique(low):
        sel = low == level
        k[sel] = a[sel] @ operators[level]
    return _features(k, dt_s, levels[low], low)


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
    # The regularised residue rises within a few seconds (the filter's width) of its peak.
    window = int(min(length // 2, max(8, round(_RISE_WINDOW_S / dt_s))))
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
    return ratios


def sampled_peak_ratio(
    aif_times_s: np.ndarray,
    aif: np.ndarray,
    tissue_times_s: np.ndarray,
    to_grid: np.ndarray,
    aif_grid: np.ndarray,
    dt_s: float,
    levels: np.ndarray,
    mtt_s: np.ndarray,
    onsets: int = 6,
) -> np.ndarray:
    """Truncation bias of the peak of k(t) for an exponential residue, through the study's own
    sampling chain.

    The arterial input is known only at its acquisition times ``aif_times_s``; between them it is
    modelled by a monotone cubic (PCHIP) — a real bolus is smooth, not piecewise linear. Tissue
    curves ``AIF ⊗ exp(−t/MTT)`` at several onsets within one sampling interval are sampled at
    ``tissue_times_s`` (``(t,)``), taken to the uniform grid by ``to_grid`` (``(t, grid)``, the
    same linear map — projection onto the temporal basis and interpolation — that the voxels go
    through) and deconvolved by ``aif_grid`` at each level. Returns ``(levels, mtt)`` ratios
    ``max k / CBF``.
    """
    from scipy.interpolate import PchipInterpolator

    interval = float(np.median(np.diff(tissue_times_s)))
    fine_dt = min(dt_s, interval) / 8
    t0 = float(min(aif_times_s[0], tissue_times_s[0]))
    fine_t = t0 + np.arange(int((tissue_times_s[-1] - t0) / fine_dt) + 2) * fine_dt
    aif_fine = PchipInterpolator(aif_times_s, aif, extrapolate=False)(fine_t)
    aif_fine = np.nan_to_num(aif_fine, nan=0.0)
    n = fine_t.size
    length = fft.next_fast_len(2 * n, real=True)
    spectrum = fft.rfft(aif_fine, length)
    lag = fine_t - t0
    shifts = (np.arange(onsets) + 0.5) / onsets * interval
    residues = np.stack(
        [np.where(lag >= s, np.exp(-(lag - s) / m), 0.0) for m in mtt_s for s in shifts]
    )
    conv = fft.irfft(spectrum * fft.rfft(residues, length, axis=1), length, axis=1)[:, :n]
    conv *= fine_dt
    sampled = np.stack([np.interp(tissue_times_s, fine_t, row) for row in conv])
    curves = (sampled @ to_grid).astype(np.float32)
    ratios = np.empty((len(levels), len(mtt_s)))
    for i, level in enumerate(levels):
        res = deconvolve(curves, aif_grid, dt_s, np.array([level]), None)
        ratios[i] = res.peak.reshape(len(mtt_s), onsets).mean(axis=1)
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
