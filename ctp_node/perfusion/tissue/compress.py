"""A temporal basis for the tissue curves: principal components of the concentration profiles.

Brain tissue curves are smooth and alike (a bolus passage that differs in delay, width and
height), so a handful of temporal components carries all of their signal while white image
noise spreads evenly over all components. Projecting every voxel onto the leading components
removes most of the noise without any spatial blurring, and makes everything downstream (the
bilateral filter, deconvolution at every threshold, TTP, areas) a small matrix product per voxel.

Curves are on the acquisition's own frames ``(t,)``; the basis is ``(t, r)`` with orthonormal
columns.
"""

from __future__ import annotations

import numpy as np

#: Components are kept while their eigenvalue exceeds this multiple of the noise floor, plus
#: a safety margin of ``_EXTRA`` components for signal shapes too rare to rise above the floor.
_SIGNAL_FACTOR = 1.5
_EXTRA = 5


def temporal_basis(
    curves: np.ndarray, min_components: int = 8, max_components: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Leading principal directions of ``curves`` ``(t, n)`` (uncentred second moment).

    The number of components is the number of eigenvalues above ``_SIGNAL_FACTOR`` times the
    noise floor (the median of the lower half of the spectrum, where only noise lives) plus
    ``_EXTRA``, clipped to ``[min_components, max_components]`` and to ``t``.

    Returns
    -------
    basis : float32 ``(t, r)``, orthonormal columns, strongest first.
    eigenvalues : float64 ``(t,)``, mean squared projection per component (HU²), descending.
    """
    n_t = curves.shape[0]
    c = curves.astype(np.float64)
    moment = c @ c.T / max(c.shape[1], 1)
    values, vectors = np.linalg.eigh(moment)
    values, vectors = values[::-1], vectors[:, ::-1]
    floor = noise_floor(values)
    signal = int(np.sum(values > _SIGNAL_FACTOR * max(floor, 1e-12)))
    count = int(np.clip(signal + _EXTRA, min(min_components, n_t), min(max_components, n_t)))
    return vectors[:, :count].astype(np.float32), values


def noise_floor(eigenvalues: np.ndarray) -> float:
    """The noise's share of each eigenvalue of :func:`temporal_basis` (HU²): the median of the
    lower half of the spectrum, where only noise lives."""
    n_t = eigenvalues.size
    return float(np.median(eigenvalues[n_t // 2 :])) if n_t >= 4 else 0.0


def signal_weights(eigenvalues: np.ndarray, count: int) -> np.ndarray:
    """The signal's share ``(λ − floor) / λ`` of each of the first ``count`` components, in
    [0, 1]: a distance between two profiles weighted by it counts the components that tell
    tissues apart and hardly those that carry only noise (a Wiener weighting)."""
    values = eigenvalues[:count]
    floor = noise_floor(eigenvalues)
    return np.clip((values - floor) / np.maximum(values, 1e-12), 0.0, 1.0).astype(np.float32)
