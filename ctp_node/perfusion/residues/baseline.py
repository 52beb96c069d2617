"""Each voxel's baseline as a parameter of the model fit, not a number taken as known.

Every tissue curve is its frames minus its baseline, the mean of the N_b frames before the
brain's contrast arrives. That mean carries those frames' noise, so the whole curve is shifted
by an error of σ / √N_b: 2.5 HU at σ 5 HU and 4 baseline frames, while the enhancement of an
infarct core peaks at 2–3 HU. A fit that takes the baseline as known reads the shift as
signal, a raised curve as more flow and volume; and denoising does not average it away,
because voxels whose baselines err alike have alike curves and pool together. The core of a
stroke showed patches of doubled flow where its baseline frames happened to be low (issue 33:
our phantom's core −18 % on one noise seed; docs/measurements.md#model_free_baseline).

The images say more about a voxel's baseline than its first N_b frames: every frame before
the voxel's own bolus arrives — many more in delayed tissue — and the shape of what follows.
Fitting the curve as b + F · (AIF ⊗ R)(t − δ), with b free and the noise white, uses all of
them; it is the maximum-likelihood fit of the raw frames with an unknown baseline. Free b is
the same as comparing curves and model curves after removing their constant part: in the
temporal basis ``B`` ``(t, r)``, after the projection P = I − û ûᵀ, û the unit coefficients of
the constant curve (Bᵀ 1). Nothing is tuned.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ctp_node.perfusion.residues.model_curves import Dictionary


def offset_projection(basis: np.ndarray) -> np.ndarray:
    """P ``(r, r)`` (float32, symmetric): coefficients in ``basis`` ``(t, r)`` less their
    constant curve's part."""
    u = basis.sum(axis=0).astype(np.float64)
    length2 = float(u @ u)
    identity = np.eye(basis.shape[1])
    if length2 <= 0:
        return identity.astype(np.float32)
    return (identity - np.outer(u, u) / length2).astype(np.float32)


def projected(dictionary: Dictionary, projection: np.ndarray) -> Dictionary:
    """``dictionary`` with its model curves multiplied by ``projection``: unit atoms again,
    with norms such that a projected curve's projection on an atom over its norm is the
    model's flow F (the least-squares F with the baseline free)."""
    atoms = dictionary.atoms.astype(np.float64) @ projection
    scale = np.linalg.norm(atoms, axis=1)
    return replace(
        dictionary,
        atoms=(atoms / np.maximum(scale, 1e-12)[:, None]).astype(np.float32),
        norms=dictionary.norms * scale,
    )
