"""The measured input curves (AIF, VOF): their voxels' mean curve on the acquisition's times,
baseline-subtracted, and on the uniform grid (:class:`ctp_node.perfusion.prepare.grid.TimeGrid`);
and the voxels of a location a person placed.
"""

from __future__ import annotations

import numpy as np

from ctp_node.perfusion.errors import NoArterialInputError
from ctp_node.perfusion.inputs.selection import denoise_arterial
from ctp_node.perfusion.prepare import timing
from ctp_node.perfusion.prepare.grid import TimeGrid
from ctp_node.perfusion.result import InputCurve


def input_curve(
    grid: TimeGrid,
    kind: str,
    voxels: np.ndarray,
    selection: str,
    noise_hu: float = 0.0,
) -> tuple[InputCurve, np.ndarray]:
    """An :class:`InputCurve` (acquisition times) and its concentration on the uniform grid."""
    hu, times_s = grid.curve_hu(voxels)
    try:
        baseline_frames, _ = timing.bolus_arrival(hu, times_s, min_rise_hu=10.0)
    except timing.NoContrastError as err:
        raise NoArterialInputError(
            f"The {kind} location shows no contrast passage; choose another location."
        ) from err
    concentration = hu - hu[:baseline_frames].mean()
    if kind == "AIF":
        concentration = denoise_arterial(times_s, concentration, noise_hu / np.sqrt(len(voxels)))
    on_grid = np.interp(grid.times_s, times_s, concentration)
    curve = InputCurve(
        kind=kind,
        voxels_zyx=voxels.astype(int),
        times_s=times_s,
        hu=hu,
        concentration_hu=concentration,
        baseline_frames=baseline_frames,
        arrival_s=float(times_s[min(baseline_frames, hu.size - 1)]),
        selection=selection,
    )
    return curve, on_grid


def manual_voxels(
    location: tuple[int, int, int], shape: tuple[int, ...], kind: str, peak: np.ndarray, count: int
) -> np.ndarray:
    """Voxels for a person's AIF/VOF location: it and its brightest 3x3 neighbours."""
    z, y, x = (int(v) for v in location)
    if not (0 <= z < shape[0] and 0 <= y < shape[1] and 0 <= x < shape[2]):
        raise NoArterialInputError(
            f"The manual {kind} location (z={z}, y={y}, x={x}) lies outside the images "
            f"({shape[0]} slices of {shape[1]} × {shape[2]})."
        )
    ys = np.clip(np.arange(y - 1, y + 2), 0, shape[1] - 1)
    xs = np.clip(np.arange(x - 1, x + 2), 0, shape[2] - 1)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    near = np.unique(np.column_stack([np.full(yy.size, z), yy.ravel(), xx.ravel()]), axis=0)
    near_peak = peak[near[:, 0], near[:, 1], near[:, 2]]
    keep = near_peak >= 0.5 * peak[z, y, x]
    near, near_peak = near[keep], near_peak[keep]
    order = np.argsort(near_peak)[::-1][: max(count, 1)]
    chosen = near[order]
    if not (chosen == [z, y, x]).all(axis=1).any():
        chosen = np.vstack([[z, y, x], chosen[: count - 1]])
    return chosen
