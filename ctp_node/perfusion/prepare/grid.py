"""The acquisition on a uniform time grid (the input curves on it:
:mod:`ctp_node.perfusion.inputs.curves`).

Times are seconds from the first image; axis order ``(t, z, y, x)``. Slices may carry their own
times (toggling-table/shuttle acquisitions): a curve from several slices is then resampled per
slice onto the uniform grid.
"""

from __future__ import annotations

import numpy as np

from ctp_node.perfusion.acquisition import Acquisition
from ctp_node.perfusion.prepare import timing


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
            matrix = interpolation_matrix(self.slice_times_s[:, z], self.times_s)
            v = voxels_zyx[sel]
            curves[:, sel] = matrix @ hu[:, z, v[:, 1], v[:, 2]].astype(np.float64)
            gain[sel] = float(np.mean(np.sum(matrix**2, axis=1)))
        return curves, gain


def interpolation_matrix(times_s: np.ndarray, grid_s: np.ndarray) -> np.ndarray:
    """Linear interpolation from samples at ``times_s`` onto ``grid_s`` as a ``(grid, t)``
    matrix (constant beyond the ends)."""
    upper = np.clip(np.searchsorted(times_s, grid_s, side="right"), 1, times_s.size - 1)
    lower = upper - 1
    weight = np.clip((grid_s - times_s[lower]) / (times_s[upper] - times_s[lower]), 0.0, 1.0)
    matrix = np.zeros((grid_s.size, times_s.size))
    rows = np.arange(grid_s.size)
    np.add.at(matrix, (rows, lower), 1.0 - weight)
    np.add.at(matrix, (rows, upper), weight)
    return matrix
