"""Which voxels are brain parenchyma: skull, air, scalp, CSF and large vessels excluded.

Arrays are ``(z, y, x)``; the baseline image is the mean of the pre-contrast frames in HU.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Pre-contrast attenuation above which a voxel is bone, in HU.
BONE_HU = 300.0


def in_plane_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, slice]:
    """Rows and columns of the smallest in-plane rectangle holding every voxel of ``mask``
    ``(..., y, x)`` (not empty), widened by ``margin`` on each side within the image: the
    part of the field of view that the brain's work needs."""
    plane = mask.reshape(-1, *mask.shape[-2:]).any(axis=0)
    ys, xs = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    return (
        slice(max(ys[0] - margin, 0), ys[-1] + margin + 1),
        slice(max(xs[0] - margin, 0), xs[-1] + margin + 1),
    )


def intracranial_mask(baseline_hu: np.ndarray) -> np.ndarray:
    """Voxels enclosed by the skull, per slice; everything non-bone if no skull is found."""
    bone = baseline_hu > BONE_HU
    inside = np.zeros(baseline_hu.shape, bool)
    for z in range(baseline_hu.shape[0]):
        if not bone[z].any():
            continue
        closed = ndimage.binary_closing(bone[z], iterations=3, border_value=0)
        filled = ndimage.binary_fill_holes(closed)
        inside[z] = filled & ~ndimage.binary_dilation(bone[z], iterations=1)
    if inside.sum() < 0.01 * inside.size:
        # No closed skull (e.g. a cropped field of view): do not restrict.
        inside = ~bone
    return inside


def smoothed_baseline(baseline_hu: np.ndarray) -> np.ndarray:
    """In-plane 3 × 3 mean of the baseline image, against noise in the attenuation ranges."""
    return ndimage.uniform_filter(baseline_hu.astype(np.float32), size=(1, 3, 3), mode="nearest")


#: Baseline noise σ (HU) up to which voxels are classified on their own baseline: CSF (≈ 5 HU)
#: and white matter (≈ 25 HU) then lie ≥ 3 σ from the 15 HU boundary.
QUIET_BASELINE_HU = 3.5


def parenchyma_mask(
    baseline_hu: np.ndarray,
    min_hu: float,
    max_hu: float,
    intracranial: np.ndarray | None = None,
    baseline_noise_hu: float | None = None,
) -> np.ndarray:
    """Intracranial voxels whose pre-contrast attenuation is that of brain tissue.

    CSF (≈ 0–15 HU), air, fat and bone fall outside ``[min_hu, max_hu]``; large vessels are
    removed later by :func:`remove_vessels`, once CBV is known. ``intracranial`` may pass
    :func:`intracranial_mask` of the same image when it is already known.

    ``baseline_noise_hu`` is the noise σ of ``baseline_hu``. When it is small enough
    (:data:`QUIET_BASELINE_HU`) each voxel is judged on its own attenuation, so that a sulcus
    one or two voxels wide stays CSF (its 3 × 3 mean reads as tissue, and a voxel without
    flow inside the tissue mask would count as ischaemic core); otherwise (or when unknown) on
    the 3 × 3 mean, against noise.
    """
    quiet = baseline_noise_hu is not None and baseline_noise_hu <= QUIET_BASELINE_HU
    values = baseline_hu if quiet else smoothed_baseline(baseline_hu)
    if intracranial is None:
        intracranial = intracranial_mask(baseline_hu)
    mask = intracranial & (values >= min_hu) & (values <= max_hu)
    return ndimage.binary_opening(mask, structure=np.ones((1, 2, 2), bool))


def remove_vessels(tissue: np.ndarray, cbv_ml_100g: np.ndarray, vessel_cbv_ml_100g: float):
    """Tissue without voxels whose blood volume marks a large vessel (and their in-plane rim)."""
    vessels = tissue & (cbv_ml_100g > vessel_cbv_ml_100g)
    rim = ndimage.binary_dilation(
        vessels, structure=np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool)
    )
    return tissue & ~rim
