"""The acquisition on a uniform time grid, and the measured input curves (AIF, VOF) on it.

Times are seconds from the first image; axis order ``(t, z, y, x)``. Slices may carry their own
times (toggling-table/shuttle acquisitions): a curve from several slices is then resampled per
slice onto the uniform grid.
"""

from __future__ import annotations

import numpy as np

from ctp_node.perfusion import compress, inputs, timing
from ctp_node.perfusion.acquisition import Acquisition
from ctp_node.perfusion.errors import NoArterialInputError
from ctp_node.perfusion.result import InputCurve


class TimeGrid:
    """The acquisition on a uniform time grid, served one slice at a time."""

    def __init__(self, acquisition: Acquisition, interval_s: float) -> None:
        self.acquisition = acquisition
        self.times_s = timing.uniform_times(acquisition.times_s, interval_s)
        self.dt_s = float(self.times_s[1] - self.times_s[0])
        st = acquisition.slice_times_s
        self.slice_times_s = (
            st
            if st is not None
            else np.repeat(acquisition.times_s[:, None], acquisition.hu.shape[1], axis=1)
        )

    def curve_hu(self, voxels_zyx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean HU curve of voxels and its times ``(t,)``: the slices' own acquisition times
        when the voxels' slices share them, else the uniform grid (each voxel resampled with
        its own slice's times first, as in a shuttle acquisition)."""
        hu = self.acquisition.hu
        curves = hu[:, voxels_zyx[:, 0], voxels_zyx[:, 1], voxels_zyx[:, 2]].astype(np.float64)
        times = self.slice_times_s[:, voxels_zyx[:, 0]]
        if np.all(times == times[:, :1]):
            return curves.mean(axis=1), times[:, 0].copy()
        resampled = [
            np.interp(self.times_s, times[:, i], curves[:, i]) for i in range(len(times.T))
        ]
        return np.mean(resampled, axis=0), self.times_s.copy()

    def voxel_curves(self, voxels_zyx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each voxel's HU curve on the uniform grid ``(grid, n)``, and the factor ``(n,)`` by
        which that linear interpolation scales the variance of white frame noise (averaged
        over the grid)."""
        hu = self.acquisition.hu
        curves = np.empty((self.times_s.size, len(voxels_zyx)))
        gain = np.empty(len(voxels_zyx))
        for z in np.unique(voxels_zyx[:, 0]):
            sel = voxels_zyx[:, 0] == z
            matrix = compress.interpolation_matrix(self.slice_times_s[:, z], self.times_s)
            v = voxels_zyx[sel]
            curves[:, sel] = matrix @ hu[:, z, v[:, 1], v[:, 2]].astype(np.float64)
            gain[sel] = float(np.mean(np.sum(matrix**2, axis=1)))
        return curves, gain


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
        concentration = inputs.denoise_arterial(
            times_s, concentration, noise_hu / np.sqrt(len(voxels))
        )
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
