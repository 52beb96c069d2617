"""Automatic arterial input (AIF) and venous output (VOF) selection, and the venous
partial-volume correction of the AIF.

Works on per-voxel curve features ``(z, y, x)`` (:mod:`ctp_node.perfusion.prepare.features`)
computed from baseline-subtracted, uniformly resampled concentration curves (HU above baseline).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ctp_node.perfusion.errors import NoArterialInputError
from ctp_node.perfusion.prepare.features import MIN_ARTERIAL_PEAK_HU, CurveFeatures

#: An arterial peak must exceed this many noise σ (and :data:`MIN_ARTERIAL_PEAK_HU`).
_MIN_PEAK_SIGMA = 10.0


def _arterial_floor(features: CurveFeatures, candidates: np.ndarray, noise_hu: float) -> float:
    return max(
        MIN_ARTERIAL_PEAK_HU,
        _MIN_PEAK_SIGMA * noise_hu,
        0.25 * float(np.percentile(features.peak_hu[candidates], 99.9)),
    )


def select_arterial(
    features: CurveFeatures,
    candidates: np.ndarray,
    noise_hu: float,
    count: int,
    avoid: np.ndarray | None = None,
) -> np.ndarray:
    """Voxels ``(n, 3)`` of the AIF: early, high, narrow, smooth arterial curves.

    ``avoid`` (bool ``(z, y, x)``) marks a region to avoid if candidates exist elsewhere (the
    hemisphere with delayed tissue: arteries distal to an occlusion are late and dispersed).
    """
    if not candidates.any():
        raise NoArterialInputError(
            "No arterial input could be found: no voxel inside the skull has the attenuation of "
            "blood or tissue. Check that the series covers the brain."
        )
    floor = _arterial_floor(features, candidates, noise_hu)
    strong = candidates & (features.peak_hu >= floor)
    strong &= (
        features.roughness < 4.0 * np.median(features.roughness[strong]) if strong.any() else strong
    )
    if not strong.any():
        raise NoArterialInputError(
            "No artery with a clear contrast peak was found (no curve rises more than "
            f"{floor:.0f} HU). The bolus may be too small or mistimed; place the arterial input "
            "by hand or repeat the acquisition."
        )
    if avoid is not None and (strong & ~avoid).any():
        strong &= ~avoid
    earliest = float(np.percentile(features.ttp_s[strong], 5))
    early = strong & (features.ttp_s <= earliest + 1.5)
    width = features.area_hu_s / np.maximum(features.peak_hu, 1e-3)
    score = np.where(early, features.peak_hu / np.maximum(width, 1e-3), -np.inf)
    order = _best(score, min(count, int(early.sum())))
    return np.column_stack(np.unravel_index(order, score.shape))


def select_venous(
    features: CurveFeatures,
    candidates: np.ndarray,
    noise_hu: float,
    aif_ttp_s: float,
    count: int,
    baseline_hu: np.ndarray,
) -> np.ndarray | None:
    """Voxels ``(n, 3)`` of the VOF: late peak (after the AIF's) and highest attenuation at the
    peak (the sinus, the largest vein, has no partial volume)."""
    if not candidates.any():
        return None
    floor = _arterial_floor(features, candidates, noise_hu)
    late = candidates & (features.peak_hu >= floor) & (features.ttp_s >= aif_ttp_s + 1.0)
    if not late.any():
        return None
    score = np.where(late, venous_rank(features, baseline_hu), -np.inf)
    order = _best(score, min(count, int(late.sum())))
    return np.column_stack(np.unravel_index(order, score.shape))


def venous_rank(features: CurveFeatures, baseline_hu: np.ndarray) -> np.ndarray:
    """How venous-output-like each voxel is: its highest attenuation over the frames (not above
    its baseline), averaged over the in-plane 3 × 3 neighbourhood.

    The VOF's area sets the partial-volume scale of every flow and volume, and an area is
    as sensitive to the baseline as it is long: a baseline 2 HU low adds 2 HU × 60 s. Ranked
    by their area (or by their peak above baseline), the chosen voxels are those whose
    baseline noise was low, and the scale read 4–9 % high at σ 6 HU (independent phantom,
    ten studies; exact without noise). The attenuation at the peak does not involve the
    baseline frames, so the chosen voxels' baselines are unbiased. The 3 × 3 mean keeps a
    single voxel's noise at the peak from choosing it.
    """
    return ndimage.uniform_filter(features.peak_hu + baseline_hu, size=(1, 3, 3), mode="nearest")


def venous_scale(aif: np.ndarray, vof: np.ndarray, dt_s: float) -> float:
    """Partial-volume factor ``∫VOF / ∫AIF``, with both areas taken over the same bolus passage.

    The VOF passes later than the AIF by the lag between their peaks, so its area over the
    acquisition corresponds to the AIF's area over the acquisition shortened by that lag
    (otherwise truncating the venous tail would bias the factor low).
    """
    lag = round(float(np.argmax(vof) - np.argmax(aif)))
    lag = max(lag, 0)
    aif_area = float(aif[: aif.size - lag].sum()) if lag < aif.size else float(aif.sum())
    return float(vof.sum()) / aif_area if aif_area > 0 else 1.0


def vessel_pool(
    features: CurveFeatures,
    candidates: np.ndarray,
    seeds: np.ndarray,
    limit: int = 4000,
    min_relative_peak: float = 0.4,
    max_lag_s: float = 3.0,
) -> np.ndarray:
    """Voxels ``(n, 3)`` that could belong to the same vessel tree as ``seeds``: candidates
    peaking within ``max_lag_s`` of the seeds and at least ``min_relative_peak`` as high
    (partial volume), the ``limit`` highest first; the seeds come first."""
    peak = features.peak_hu[tuple(seeds.T)]
    ttp = features.ttp_s[tuple(seeds.T)]
    pool = (
        candidates
        & (features.peak_hu >= min_relative_peak * float(np.median(peak)))
        & (np.abs(features.ttp_s - float(np.median(ttp))) <= max_lag_s)
    )
    pool[tuple(seeds.T)] = False
    others = _best(np.where(pool, features.peak_hu, -np.inf), min(limit, int(pool.sum())))
    others = np.column_stack(np.unravel_index(others, pool.shape))
    return np.vstack([seeds, others.reshape(-1, 3)])


def matching_curves(
    curves: np.ndarray,
    noise_gain: np.ndarray,
    seed_count: int,
    noise_hu: float,
    max_count: int,
    min_relative_amplitude: float = 0.75,
    tolerance_sd: float = 3.0,
    shape_tolerance: float = 0.01,
) -> np.ndarray:
    """Columns of ``curves`` ``(t, n)`` that are copies of the first ``seed_count`` columns'
    mean curve (the template) scaled by partial volume, to within the image noise.

    Each curve is fitted as ``a · template + b``; it matches when ``a`` is at least
    ``min_relative_amplitude`` and the residual variance does not exceed what noise explains
    (``noise_hu² · noise_gain`` of the curve plus the template's own noise scaled by ``a²``)
    by more than ``tolerance_sd`` standard deviations of a χ² estimate, with a floor of
    ``shape_tolerance`` times the fitted peak (for noise-free data). A partial-volume vessel
    voxel mixes in tissue, whose later, broader curve leaves a residual above the noise; a
    vessel with another timing (a distal, dispersed artery) likewise. Returns the matching
    column indices, seeds first, then by decreasing ``a``, at most ``max_count``.
    """
    n_t, n = curves.shape
    seed_count = max(1, min(seed_count, n))
    template = curves[:, :seed_count].mean(axis=1)
    design = np.column_stack([template, np.ones(n_t)])
    coef, *_ = np.linalg.lstsq(design, curves, rcond=None)
    residual = curves - design @ coef
    variance = np.sum(residual**2, axis=0) / max(n_t - 2, 1)
    amplitude = coef[0]
    template_noise = noise_hu**2 * float(np.mean(noise_gain[:seed_count])) / seed_count
    expected = noise_hu**2 * noise_gain + amplitude**2 * template_noise
    allowed = expected * (1.0 + tolerance_sd * np.sqrt(2.0 / n_t))
    allowed = np.maximum(allowed, (shape_tolerance * amplitude * np.ptp(template)) ** 2)
    match = (amplitude >= min_relative_amplitude) & (variance <= allowed)
    match[:seed_count] = True
    others = np.flatnonzero(match[seed_count:]) + seed_count
    others = others[np.argsort(amplitude[others])[::-1]]
    return np.concatenate([np.arange(seed_count), others])[: max(max_count, seed_count)]


def _best(score: np.ndarray, count: int) -> np.ndarray:
    """Flat indices of the ``count`` highest scores, best first."""
    flat = score.ravel()
    finite = np.flatnonzero(np.isfinite(flat))  # the candidates: a small part of the volume
    values = flat[finite]
    count = min(count, values.size)
    top = np.argpartition(values, values.size - count)[values.size - count :]
    return finite[top[np.argsort(values[top])[::-1]]]


def gamma_variate(t_s: np.ndarray, amplitude: float, onset_s: float, alpha: float, beta_s: float):
    """``A · (t − t0)^α · exp(−(t − t0)/β)`` for ``t > t0``, else 0 (a first-pass bolus)."""
    lag = np.maximum(t_s - onset_s, 0.0)
    return np.where(t_s > onset_s, amplitude * lag**alpha * np.exp(-lag / beta_s), 0.0)


def denoise_arterial(times_s: np.ndarray, concentration: np.ndarray, noise_hu: float):
    """The arterial curve at ``times_s`` with its first pass replaced by a gamma-variate fit
    (:func:`arterial_model`)."""
    return arterial_model(times_s, concentration, noise_hu)(times_s)


def arterial_model(times_s: np.ndarray, concentration: np.ndarray, noise_hu: float):
    """The arterial curve as a function of time (s → HU), its first pass a gamma-variate fit.

    A few voxels' mean is still noisy, and because they were chosen for a high, narrow peak
    their noise at the peak is biased upwards; deconvolution with a noisy or too sharp AIF
    lowers every flow. The first pass (up to where the curve has fallen to 40 % of its peak)
    is fitted by a gamma variate; what the fit leaves over the whole curve (recirculation,
    misfit of the first pass) is added back as a cubic smoothing spline whose smoothing is
    chosen by generalised cross-validation: as smooth as the noise of the curve requires, no
    smoother. (A fixed three-frame smoothing of the recirculation alone was off by up to 3 HU
    of a 485 HU noiseless curve where a strong recirculation rises, enough to choose the wrong
    residue shape for grey matter: issue 33.) Between the frames the bolus is the fitted
    gamma variate, not an interpolation that would flatten its peak. When the fit fails or
    does not describe the first pass to within the noise, the measured curve is interpolated
    by a monotone cubic (0 outside the acquisition).
    """
    from scipy.interpolate import PchipInterpolator, make_smoothing_spline
    from scipy.optimize import curve_fit

    c = np.asarray(concentration, np.float64)
    measured = PchipInterpolator(times_s, c, extrapolate=False)

    def as_measured(t: np.ndarray) -> np.ndarray:
        return np.nan_to_num(measured(t))

    peak = int(np.argmax(c))
    if peak < 2 or c[peak] <= 0:
        return as_measured
    after = np.flatnonzero(c[peak:] < 0.4 * c[peak])
    end = peak + (int(after[0]) if after.size else c.size - peak - 1)
    rising = np.flatnonzero(c[: peak + 1] < 0.1 * c[peak])
    start = int(rising[-1]) if rising.size else 0
    t, y = times_s[: end + 1], c[: end + 1]
    onset0 = float(times_s[start])
    rise = max(float(times_s[peak]) - onset0, 1e-3)
    guess = (1.0, onset0, 3.0, rise / 3.0)
    try:
        params, _ = curve_fit(
            lambda tt, a, t0, al, b: gamma_variate(tt, a, t0, al, b),
            t,
            y / c[peak],
            p0=guess,
            bounds=([0, times_s[0] - 10, 0.5, 0.1], [np.inf, times_s[peak], 20.0, 20.0]),
            maxfev=2000,
        )
    except (RuntimeError, ValueError):
        return as_measured
    fit = gamma_variate(times_s, *params) * c[peak]
    misfit = float(np.sqrt(np.mean((fit[: end + 1] - y) ** 2)))
    if not np.isfinite(misfit) or misfit > max(3.0 * noise_hu, 0.05 * c[peak]):
        return as_measured
    try:
        rest_at = make_smoothing_spline(times_s, c - fit)
    except ValueError:  # e.g. repeated times
        return as_measured
    first, last = float(times_s[0]), float(times_s[-1])
    height = float(c[peak])

    def model(t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, np.float64)
        rest = np.where((t >= first) & (t <= last), rest_at(np.clip(t, first, last)), 0.0)
        return gamma_variate(t, *params) * height + rest

    return model
