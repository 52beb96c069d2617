"""Acute-stroke volumes: ischaemic core, hypoperfusion (Tmax), mismatch and DEFUSE 3 target.

Masks are bool ``(z, y, x)``; volumes in mL.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ctp_node.perfusion.parameters import PerfusionParameters
from ctp_node.perfusion.prepare.masks import in_plane_box
from ctp_node.perfusion.result import StrokeVolumes
from ctp_node.perfusion.tissue.denoise import tips


def normal_reference_cbf(
    cbf: np.ndarray,
    tmax_s: np.ndarray,
    tissue: np.ndarray,
    reference_tmax_s: float,
    mean: bool = True,
) -> float:
    """Reference CBF (ml/100g/min) of tissue with a normal delay (Tmax below
    ``reference_tmax_s``), i.e. tissue not affected by the occlusion, whichever side it is on:
    its mean (grey and white matter together, as the "contralateral hemisphere mean" of the
    studies that set the 30 % core threshold), or its median. Falls back to all tissue when too
    little tissue has a normal delay."""
    normal = tissue & (tmax_s < reference_tmax_s)
    if normal.sum() < 0.1 * tissue.sum():
        normal = tissue
    if not normal.any():
        return 0.0
    values = cbf[normal]
    return float(values.mean() if mean else np.median(values))


def clean_lesion(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """Remove connected components (26-connectivity) smaller than ``min_voxels``."""
    if not mask.any() or min_voxels <= 1:
        return mask
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[labels]


def local_majority(flags: np.ndarray, tissue: np.ndarray, window_voxels: int) -> np.ndarray:
    """Tissue voxels at least half of whose tissue neighbours — the tissue voxels of the
    ``window_voxels`` square in-plane window around them — are ``flags``. Only tissue counts:
    air, bone and CSF in the window are neither for nor against, so a lesion that reaches the
    brain's surface or a ventricle keeps its border. Two box filters (counts)."""
    out = np.zeros_like(tissue)
    if not tissue.any():
        return out
    box = (slice(None), *in_plane_box(tissue))
    votes, present = _tissue_sums(flags[box], tissue[box], window_voxels)
    out[box] = tissue[box] & (votes >= 0.5 * present)
    return out


def _tissue_sums(
    values: np.ndarray, tissue: np.ndarray, window_voxels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Over the ``window_voxels`` square in-plane window around each voxel, the mean of the
    tissue voxels' ``values`` (others count as 0) and the share of tissue voxels: their
    ratio is the mean over tissue only (normalised convolution)."""
    size = (1, window_voxels, window_voxels)
    total = ndimage.uniform_filter(
        np.where(tissue, values, 0).astype(np.float32), size, mode="constant"
    )
    return total, ndimage.uniform_filter(tissue.astype(np.float32), size, mode="constant")


def delayed_tissue(
    tmax_s: np.ndarray, tissue: np.ndarray, min_s: float, window_voxels: int
) -> np.ndarray:
    """Tissue whose local median Tmax — over the tissue voxels of a ``window_voxels`` square
    in-plane window — is at least ``min_s``. A median is at least ``min_s`` exactly when at
    least half of the values are (:func:`local_majority`): far cheaper than a median filter,
    and blind to the air, bone and CSF in the window (which a plain median filter would count
    as values)."""
    return local_majority(tmax_s >= min_s, tissue, window_voxels)


def edge_preserving_mean(
    values: np.ndarray,
    tissue: np.ndarray,
    sigma_voxels: float,
    range_width: float,
    iterations: int,
    needed: np.ndarray | None = None,
) -> np.ndarray:
    """``values`` ``(z, y, x)`` averaged in-plane over tissue with a bilateral filter —
    weights ``exp(−d²/2σ²)`` of the in-plane distance d (voxels) times ``exp(−(Δ/w)²)`` of
    the difference Δ of the values, w = ``range_width`` (:func:`denoise.tips` on one
    channel) — ``iterations`` times. Neighbours whose values differ by much more than w
    hardly count, so a boundary between two levels keeps its place while the noise on
    either side is averaged away; each pass pulls a voxel towards the level of the
    neighbours most like it. Voxels outside ``tissue`` neither change nor count. Only the
    voxels of ``needed`` (default: all) are sure to be filtered: the work is confined to
    the part of each slice that they depend on."""
    if sigma_voxels <= 0 or range_width <= 0 or iterations < 1:
        return values
    radius = max(1, int(np.ceil(2.0 * sigma_voxels)))
    needed = tissue if needed is None else needed
    out = values.astype(np.float32, copy=True)
    for z in np.flatnonzero(needed.any(axis=(1, 2))):
        # A voxel's value after k passes depends on voxels up to k · radius away.
        box = in_plane_box(needed[z], margin=iterations * radius)
        part, inside = out[z][box], tissue[z][box]
        for _ in range(iterations):
            part = tips(part[None], inside, radius, sigma_voxels, range_width, guide_window=1)[0]
        out[z][box] = part
    return out


def window_pixels(width_mm: float, pixel_mm: float) -> int:
    """The odd number of pixels nearest below ``width_mm / pixel_mm + 1`` (at least 1)."""
    return 2 * int(width_mm / pixel_mm / 2) + 1


def lesion_masks(
    cbf: np.ndarray,
    tmax_s: np.ndarray,
    tissue: np.ndarray,
    normal_cbf: float,
    voxel_ml: float,
    p: PerfusionParameters,
    pixel_mm: float,
):
    """Core, Tmax > 6 s and Tmax > 10 s masks after clean-up; the Tmax > 6 s
    (hypoperfusion) mask includes the core, and the core lies in tissue whose local Tmax is
    at least ``p.core_tmax_min_s`` (:func:`delayed_tissue`). ``pixel_mm``: the in-plane pixel
    size, for the majority filter's window (``p.lesion_majority_mm``)."""
    min_voxels = int(np.ceil(p.min_component_ml / voxel_ml))
    majority = window_pixels(p.lesion_majority_mm, pixel_mm)

    def smoothed(values: np.ndarray) -> np.ndarray:
        """In-plane mean over tissue only (normalised convolution), against voxel noise."""
        if p.lesion_smoothing_voxels <= 1:
            return values
        total, weight = _tissue_sums(values, tissue, p.lesion_smoothing_voxels)
        return total / np.maximum(weight, 1e-6)

    # An in-plane majority filter (of the tissue in a square ~5 mm wide) removes speckle
    # without eroding lesion borders — those at the brain's surface and the ventricles included.
    def tidy(raw: np.ndarray) -> np.ndarray:
        return clean_lesion(local_majority(raw, tissue, majority), min_voxels)

    # Acute core is hypoperfused tissue: low flow where the bolus arrives on time is noise in
    # faint white matter (or an old infarct), not an acute lesion. The gate takes the local
    # median Tmax, because the core's own Tmax, from its faintest curves, scatters widely.
    hypoperfused = (
        delayed_tissue(
            tmax_s, tissue, p.core_tmax_min_s, window_pixels(p.core_tmax_window_mm, pixel_mm)
        )
        if p.core_tmax_min_s > 0
        else tissue
    )
    cbf, tmax_s = smoothed(cbf), smoothed(tmax_s)
    # The core's decision is on the relative flow after an edge-preserving mean: a voxel at
    # the core's edge, its estimate pulled up by the filters upstream (the denoising of
    # curves, the pooling of the model fit), is drawn back to the core level it is nearer.
    rcbf = edge_preserving_mean(
        cbf / max(normal_cbf, 1e-6),
        tissue,
        p.core_bilateral_sigma_mm / pixel_mm,
        p.core_bilateral_rcbf,
        p.core_bilateral_iterations,
        needed=hypoperfused,
    )
    core = tidy(hypoperfused & (rcbf < p.core_rcbf_threshold))
    # The core is hypoperfused tissue too: its Tmax, measured on the faintest curves, is the
    # noisiest, and a core voxel outside the Tmax > 6 s region would make the mismatch
    # (hypoperfusion − core) smaller than it is.
    tmax6 = tidy(tissue & (tmax_s > p.tmax_threshold_s)) | core
    tmax10 = tidy(tissue & (tmax_s > p.tmax_severe_threshold_s))
    return core, tmax6, tmax10


def stroke_volumes(
    core: np.ndarray, tmax6: np.ndarray, tmax10: np.ndarray, voxel_ml: float, p: PerfusionParameters
) -> StrokeVolumes:
    """Volumes, mismatch, HIR and the DEFUSE 3 target-mismatch decision."""
    core_ml = float(core.sum()) * voxel_ml
    t6 = float(tmax6.sum()) * voxel_ml
    t10 = float(tmax10.sum()) * voxel_ml
    mismatch = max(t6 - core_ml, 0.0)
    ratio = t6 / core_ml if core_ml > 0 else None
    hir = t10 / t6 if t6 > 0 else None
    target = (
        core_ml < p.target_core_max_ml
        and mismatch >= p.target_mismatch_min_ml
        and (ratio is None or ratio >= p.target_mismatch_ratio_min)
    )
    return StrokeVolumes(
        core_ml=core_ml,
        tmax6_ml=t6,
        tmax10_ml=t10,
        mismatch_ml=mismatch,
        mismatch_ratio=ratio,
        hypoperfusion_intensity_ratio=hir,
        target_mismatch=bool(target),
    )
