"""Per-voxel features of the concentration curves (peak, time to peak, area, roughness), and
the image noise, measured once in the preparation stage: the arterial and venous selections
(:mod:`ctp_node.perfusion.inputs.selection`) rank vessels by them, and every filter is scaled to
the noise.

Arrays are ``(z, y, x)``; curves are baseline-subtracted (HU above baseline).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ctp_node.perfusion.prepare.masks import in_plane_box

#: An arterial peak must exceed at least this many HU (and, in the selection, a multiple of the
#: noise); the vessel features are measured on candidates that reach 80 % of it.
MIN_ARTERIAL_PEAK_HU = 50.0


@dataclass(frozen=True)
class CurveFeatures:
    """Per-voxel features of the concentration curves, each ``(z, y, x)``.

    peak_hu : maximum of the 3-point smoothed curve, HU above baseline.
    ttp_s : time of that maximum on the uniform grid, s.
    area_hu_s : integral of the curve, HU·s.
    roughness : mean squared second difference relative to the peak (unitless).
    """

    peak_hu: np.ndarray
    ttp_s: np.ndarray
    area_hu_s: np.ndarray
    roughness: np.ndarray


def curve_features(concentration: np.ndarray, dt_s: float) -> CurveFeatures:
    """Features of ``(t, ...)`` concentration curves on a uniform grid of spacing ``dt_s``."""
    c = concentration
    smooth = c.copy()
    smooth[1:-1] = (c[:-2] + c[1:-1] + c[2:]) / 3
    peak_index = np.argmax(smooth, axis=0)
    peak = np.take_along_axis(smooth, peak_index[None], axis=0)[0]
    second = c[2:] - 2 * c[1:-1] + c[:-2]
    rough = np.mean(second**2, axis=0) / np.maximum(peak, 1e-3) ** 2
    return CurveFeatures(
        peak_hu=peak.astype(np.float32),
        ttp_s=(peak_index * dt_s).astype(np.float32),
        area_hu_s=(c.sum(axis=0) * dt_s).astype(np.float32),
        roughness=rough.astype(np.float32),
    )


def vessel_features(
    hu: np.ndarray,
    baseline: np.ndarray,
    candidates: np.ndarray,
    slice_times_s: np.ndarray,
    grid_s: np.ndarray,
    min_peak_hu: float = 0.8 * MIN_ARTERIAL_PEAK_HU,
) -> CurveFeatures:
    """:class:`CurveFeatures` of a whole acquisition ``(t, z, y, x)``, cheaply.

    Peak (largest enhancement over the frames) and area are computed for every voxel; the
    time of the peak and the roughness, which only the arterial and venous selections use,
    only for ``candidates`` that enhance by at least ``min_peak_hu`` (vessels), on the uniform
    grid ``grid_s``; elsewhere they are NaN. For those voxels the peak is that of the
    3-point-smoothed resampled curve. ``slice_times_s`` is ``(t, z)``.
    """
    n_t, nz = hu.shape[:2]
    peak = np.empty(baseline.shape, np.float32)
    area = np.empty(baseline.shape, np.float32)
    ttp = np.full(baseline.shape, np.nan, np.float32)
    rough = np.full(baseline.shape, np.nan, np.float32)
    dt_s = float(grid_s[1] - grid_s[0])
    for z in range(nz):
        times = slice_times_s[:, z]
        peak[z] = hu[:, z].max(axis=0) - baseline[z]
        # Trapezoid weights over the frames; the curve is baseline-subtracted.
        w = np.zeros(n_t)
        w[1:] += 0.5 * np.diff(times)
        w[:-1] += 0.5 * np.diff(times)
        area[z] = np.tensordot(w.astype(np.float32), hu[:, z], 1) - w.sum() * baseline[z]
        vessel = candidates[z] & (peak[z] >= min_peak_hu)
        if not vessel.any():
            continue
        curves = hu[:, z][:, vessel] - baseline[z][vessel]
        up = np.clip(np.searchsorted(times, grid_s, side="right"), 1, n_t - 1)
        frac = np.clip((grid_s - times[up - 1]) / (times[up] - times[up - 1]), 0.0, 1.0)
        on_grid = curves[up - 1] * (1 - frac[:, None]) + curves[up] * frac[:, None]
        f = curve_features(on_grid.astype(np.float32), dt_s)
        peak[z][vessel] = f.peak_hu
        ttp[z][vessel] = f.ttp_s + grid_s[0]
        rough[z][vessel] = f.roughness
    return CurveFeatures(peak_hu=peak, ttp_s=ttp, area_hu_s=area, roughness=rough)


def noise_sigma_hu(concentration: np.ndarray, mask: np.ndarray, window: int = 1) -> float:
    """Image noise σ in HU from second temporal differences of the masked voxels of one slice
    ``(t, y, x)``; with ``window`` > 1, the noise of the means of ``window`` × ``window``
    voxels centred on them (for independent noise σ / ``window``; more when neighbouring
    voxels' noise is correlated, as the reconstruction kernel makes it in CT)."""
    if window > 1:
        # Only the masked voxels' means are needed: filter their bounding box and the
        # window's half-width around it (the same means as filtering the whole slice).
        box = in_plane_box(mask, window // 2)
        concentration = ndimage.uniform_filter(
            concentration[:, box[0], box[1]], (1, window, window)
        )
        mask = mask[box]
    curves = concentration[:, mask]
    second = curves[2:] - 2 * curves[1:-1] + curves[:-2]
    return float(np.median(np.sqrt(np.mean(second**2, axis=0) / 6.0)))


def image_noise_hu(hu: np.ndarray, mask: np.ndarray, window: int = 1) -> float:
    """Image noise σ (HU) of a whole acquisition ``(t, z, y, x)`` (float32, or whole HU in
    int16, converted a slice at a time): the median over slices of
    :func:`noise_sigma_hu` on a quarter of the ``mask`` voxels (every other row and column;
    enough for σ, at a quarter of the work)."""
    sample = mask.copy()
    sample[:, ::2] = False
    sample[:, :, ::2] = False
    sigmas = [
        noise_sigma_hu(np.asarray(hu[:, z], np.float32), sample[z], window)
        for z in range(hu.shape[1])
        if sample[z].sum() > 20
    ]
    return float(np.median(sigmas)) if sigmas else 0.0
