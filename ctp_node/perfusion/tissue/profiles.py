"""The tissue concentration profiles of a whole acquisition, compressed and denoised.

Each parenchyma voxel's baseline-subtracted curve is stored as its coefficients in a temporal
basis (:mod:`ctp_node.perfusion.tissue.compress`), rows ``(v, r)`` in the C order of the mask
``(z, y, x)``. Resampling onto the uniform time grid is linear, so it is folded into a per-slice
``(r, grid)`` synthesis matrix (slices may have their own acquisition times) instead of being
applied to the voxels.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ctp_node.perfusion.prepare.grid import interpolation_matrix
from ctp_node.perfusion.tissue import compress, denoise


@dataclass(frozen=True)
class Profiles:
    """Compressed tissue curves.

    Attributes
    ----------
    coefficients : float32 ``(v, r)``, one row per voxel of ``mask`` (C order).
    mask : bool ``(z, y, x)``.
    basis : float32 ``(t, r)``, orthonormal columns on the acquisition frames.
    synthesis : float32 ``(z, r, grid)``: ``coefficients @ synthesis[z]`` is the curve of a
        voxel of slice ``z`` on the uniform grid, HU above baseline.
    slice_rows : int ``(z + 1,)``, rows ``slice_rows[z]:slice_rows[z + 1]`` belong to slice z.
    eigenvalues : the temporal spectrum (HU², descending), for quality reports.
    """

    coefficients: np.ndarray
    mask: np.ndarray
    basis: np.ndarray
    synthesis: np.ndarray
    slice_rows: np.ndarray
    eigenvalues: np.ndarray

    def groups(self) -> list[tuple[np.ndarray, slice]]:
        """Runs of consecutive slices sharing one synthesis matrix: ``(matrix, rows)``."""
        out: list[tuple[np.ndarray, slice]] = []
        z0 = 0
        nz = self.synthesis.shape[0]
        for z in range(1, nz + 1):
            if z == nz or not np.array_equal(self.synthesis[z], self.synthesis[z0]):
                out.append((self.synthesis[z0], slice(self.slice_rows[z0], self.slice_rows[z])))
                z0 = z
        return out

    def peak_index(self, chunk: int = 65536) -> np.ndarray:
        """Grid index of each voxel's curve maximum (the time to peak), chunked over voxels."""
        out = np.empty(self.coefficients.shape[0], np.float32)
        for synthesis, rows in self.groups():
            for start in range(rows.start, rows.stop, chunk):
                stop = min(start + chunk, rows.stop)
                out[start:stop] = np.argmax(self.coefficients[start:stop] @ synthesis, axis=1)
        return out

    def apply(self, matrix_of_slice, out_columns: int) -> np.ndarray:
        """``coefficients @ matrix_of_slice(synthesis)`` for every voxel, ``(v, out)``."""
        result = np.empty((self.coefficients.shape[0], out_columns), np.float32)
        for synthesis, rows in self.groups():
            result[rows] = self.coefficients[rows] @ matrix_of_slice(synthesis)
        return result


def build_profiles(
    hu: np.ndarray,
    baseline: np.ndarray,
    mask: np.ndarray,
    slice_times_s: np.ndarray,
    grid_s: np.ndarray,
    noise_hu: float,
    *,
    radius: int,
    spatial_sigma_voxels: float,
    profile_sigma_hu: float,
    workers: int = 1,
    max_sample: int = 200_000,
    min_components: int = 8,
) -> Profiles:
    """Project, and denoise with :func:`denoise.tips`, the curves of the ``mask`` voxels.

    ``hu`` is ``(t, z, y, x)``, ``baseline`` ``(z, y, x)`` the pre-contrast image, both HU;
    ``slice_times_s`` ``(t, z)``; ``grid_s`` the uniform grid; ``min_components`` the fewest
    temporal components kept (:func:`compress.temporal_basis`).
    """
    n_t, nz = hu.shape[:2]
    counts = mask.reshape(nz, -1).sum(axis=1)
    slice_rows = np.concatenate([[0], np.cumsum(counts)])
    basis, eigenvalues = _sampled_basis(
        hu, baseline, mask, int(slice_rows[-1]), max_sample, min_components
    )
    r = basis.shape[1]
    ones = basis.sum(axis=0)

    coefficients = np.empty((int(slice_rows[-1]), r), np.float32)
    # Likeness is judged on the components that carry signal, each weighted by its signal
    # share w: noise spreads evenly over all r components while tissues differ in the first
    # few, so an unweighted distance — and the noise allowance below, which grows with it — is
    # mostly noise, and two tissues whose curves differ by less than that allowance blend.
    weights = compress.signal_weights(eigenvalues, r)
    # Weighted squared distance of two guide profiles (3 × 3 means, noise σ²/9 per
    # coefficient) of the same curve: mean 2σ²Σw/(9t), standard deviation 2σ²√(2Σw²)/(9t);
    # below mean + 3 sd = equal.
    noise_distance = (
        2.0 * noise_hu**2 * (weights.sum() + 3 * np.sqrt(2 * np.sum(weights**2))) / (9 * n_t)
    )

    def one_slice(z: int) -> None:
        m = mask[z]
        if not counts[z]:
            return
        a = basis.T @ hu[:, z][:, m] - np.outer(ones, baseline[z][m])
        if radius > 0:
            a = denoise.tips_rows(
                a.T,
                m,
                radius,
                spatial_sigma_voxels,
                profile_sigma_hu,
                noise_distance,
                n_t,
                guide_weights=weights,
            ).T
        coefficients[slice_rows[z] : slice_rows[z + 1]] = a.T

    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one_slice, range(nz)))
    else:
        for z in range(nz):
            one_slice(z)

    synthesis = _synthesis(slice_times_s, grid_s, basis)
    return Profiles(coefficients, mask, basis, synthesis, slice_rows, eigenvalues)


def _sampled_basis(
    hu: np.ndarray,
    baseline: np.ndarray,
    mask: np.ndarray,
    total: int,
    max_sample: int,
    min_components: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The temporal basis and its eigenvalues, from a spread-out sample of at most about
    ``max_sample`` of the ``total`` mask voxels."""
    step = max(1, total // max_sample)
    sample = []
    for z in range(hu.shape[1]):
        if mask[z].any():
            sample.append(hu[:, z][:, mask[z]][:, ::step] - baseline[z][mask[z]][::step])
    return compress.temporal_basis(
        np.concatenate(sample, axis=1), min_components, max(16, min_components)
    )


def _synthesis(slice_times_s: np.ndarray, grid_s: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Per slice ``(r, grid)``: the basis resampled from the slice's times onto the grid (one
    matrix per distinct set of times)."""
    nz = slice_times_s.shape[1]
    synthesis = np.empty((nz, basis.shape[1], grid_s.size), np.float32)
    cache: dict[bytes, np.ndarray] = {}
    for z in range(nz):
        key = slice_times_s[:, z].tobytes()
        if key not in cache:
            cache[key] = (interpolation_matrix(slice_times_s[:, z], grid_s) @ basis).T
        synthesis[z] = cache[key]
    return synthesis
