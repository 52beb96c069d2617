"""The tumour profile's stage: the leak across the blood-brain barrier measured and removed.

Where the barrier is broken (an enhancing tumour), contrast leaves the vessels during and after
the first pass and accumulates in the extravascular extracellular space. Deconvolving such a
curve as if all its tracer were in the vessels reads the leak as blood: CBV and MTT far too
high, the voxel taken for a large vessel and dropped from the tissue, and CBF biased by the
rising tail. So, with ``permeability`` on, the engine first measures the arterial input
(stages 1–3 on the acquisition as acquired), then :func:`remove_leakage` fits every
intracranial voxel's post-first-pass phase by Patlak's model with back-flux
(:mod:`~ctp_node.perfusion.permeability.patlak`) and subtracts the fitted leak from the
voxel's curve, frame by frame; the engine's stages then run again on these intravascular
curves, so CBF, CBV (leakage-corrected) and MTT keep one definition with the stroke profile's.
K^trans is the fit's; :func:`enhancing_region` is the tissue whose K^trans is significant.

The back-flux rate k_ep is fitted on in-plane means of :data:`RATE_WINDOW_VOXELS` voxels
(a per-voxel rate from raw curves is biased by their noise), then every voxel's K^trans and
leak are fitted with it known, on the voxel's own raw curve (baseline removed), at its slice's
own frame times (the arterial input interpolated to them).

The leak is removed only where it is clearly there: where the in-plane 3 × 3 mean of K^trans
is at least :data:`REMOVE_SE` of its standard errors above 0 (and the voxel's own K^trans is
positive: a negative leak subtracted adds late tracer, which makes tissue look venous). A
leaking tumour is a region, so its mean is 3 times surer than one voxel and the test keeps
its edge and its weakly leaking parts (1 mL/100g/min at σ 10 HU); where the late phase cannot
measure a leak (an arterial curve that falls back to 0: a voxel's baseline error then looks
like one, SE ~2 mL/100g/min at σ 5 HU), a noise-driven leak subtracted from every curve would
add its noise to the maps and can change the venous curve the arterial input is scaled to.

Axis order ``(t, z, y, x)``. Pure numpy/scipy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from ctp_node.perfusion.acquisition import Acquisition
from ctp_node.perfusion.parameters import PerfusionParameters
from ctp_node.perfusion.permeability.patlak import (
    PatlakSettings,
    back_flux_rates,
    patlak_maps,
)
from ctp_node.perfusion.prepare.stage import Prepared
from ctp_node.perfusion.result import InputCurve

#: In-plane side of the mean the back-flux rates are fitted on, voxels (at the engine's
#: processing resolution, about 1 mm): 5 × 5 holds enough curves for the rate, whose noise
#: bias falls with the mean's variance, and is small beside an enhancing tumour.
RATE_WINDOW_VOXELS = 5
#: Standard errors the 3 × 3 mean of K^trans must exceed for the leak to be removed (2: about
#: 2 % of the tissue that does not leak has a noise-driven leak removed, zero on average).
REMOVE_SE = 2.0
#: How the reports name the model.
MODEL = "Patlak analysis with back-flux (two-compartment exchange, Murase's linear form)"


@dataclass(frozen=True)
class Leakage:
    """The leak measured in every intracranial voxel.

    Attributes
    ----------
    ktrans : K^trans, mL/100g/min, float32 ``(z, y, x)`` (0 outside the intracranial mask).
    ktrans_se : its standard error, mL/100g/min.
    first_pass_end_s : the earliest time the fit used, s from the first image (the first
        slice's).
    late_frames : frames after the first pass the fit used (the first slice's).
    model : how the reports name the model (:data:`MODEL`).
    """

    ktrans: np.ndarray
    ktrans_se: np.ndarray
    first_pass_end_s: float
    late_frames: int
    model: str = MODEL


def remove_leakage(
    acquisition: Acquisition, prepared: Prepared, aif: InputCurve, p: PerfusionParameters
) -> tuple[Leakage, Acquisition]:
    """K^trans of every intracranial voxel, and the acquisition with the fitted leak removed
    from each of their curves (a copy: ``acquisition`` is not changed).

    ``prepared`` and ``aif`` are the engine's first three stages on ``acquisition``; ``p``
    gives the brain density and the haematocrits K^trans is converted with.

    Raises
    ------
    LatePhaseTooShortError : too few images follow the first pass for the fit (the message
        says what to acquire).
    """
    settings = PatlakSettings(
        brain_density_g_ml=p.brain_density_g_ml,
        hematocrit_factor=p.hematocrit_factor,
        large_vessel_hematocrit=p.large_vessel_hematocrit,
    )
    grid = prepared.grid
    hu = acquisition.hu.astype(np.float32, copy=True)
    ktrans = np.zeros(prepared.shape, np.float32)
    ktrans_se = np.zeros(prepared.shape, np.float32)
    fits = []
    for z in range(hu.shape[1]):
        inside = prepared.intracranial[z]
        if not inside.any():
            continue
        times = grid.slice_times_s[:, z]
        arterial = np.interp(times, aif.times_s, aif.concentration_hu)
        enhancement = hu[:, z] - prepared.baseline[z].astype(np.float32)
        means = _masked_mean(enhancement, inside, RATE_WINDOW_VOXELS)
        rates = back_flux_rates(times, arterial, means[:, inside])  # raises: late phase short
        fit = patlak_maps(
            times,
            arterial,
            enhancement[:, inside],
            settings,
            back_flux_per_min=rates,
            baseline_var=prepared.noise**2 / max(prepared.baseline_frames, 1),
        )
        ktrans[z, inside] = fit.ktrans
        ktrans_se[z, inside] = fit.ktrans_se
        leaking = _leaking(ktrans[z], ktrans_se[z], inside)[inside]
        hu[:, z, inside] -= np.where(leaking, fit.leak_hu, 0.0).astype(np.float32)
        fits.append(fit)
    if not fits:  # no intracranial voxel: later stages say so
        return Leakage(ktrans, ktrans_se, float("nan"), 0), acquisition
    leakage = Leakage(ktrans, ktrans_se, fits[0].first_pass_end_s, fits[0].late_frames)
    return leakage, replace(acquisition, hu=hu)


def _leaking(ktrans: np.ndarray, se: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Voxels of one slice ``(y, x)`` whose leak is removed: positive K^trans, and a 3 × 3
    mean (over ``mask``) at least :data:`REMOVE_SE` standard errors of that mean above 0."""
    count = np.maximum(9.0 * ndimage.uniform_filter(mask.astype(np.float32), 3), 1.0)
    mean = _masked_mean(ktrans, mask, 3)
    mean_se = np.sqrt(_masked_mean(se**2, mask, 3) / count)  # of the mean of `count` voxels
    return mask & (ktrans > 0) & (mean >= REMOVE_SE * mean_se)


def _masked_mean(values: np.ndarray, mask: np.ndarray, side: int) -> np.ndarray:
    """In-plane means of ``values`` ``(..., y, x)`` over ``side`` × ``side`` windows, counting
    only the voxels of ``mask`` ``(y, x)`` (so bone and scalp do not enter the brain's means)."""
    size = (1,) * (values.ndim - 2) + (side, side)
    weight = ndimage.uniform_filter(mask.astype(np.float32), side, mode="constant")
    total = ndimage.uniform_filter(values * mask, size, mode="constant")
    return total / np.maximum(weight, 1e-6)


def enhancing_region(
    leakage: Leakage,
    tissue_mask: np.ndarray,
    voxel_volume_ml: float,
    p: PerfusionParameters,
) -> np.ndarray:
    """The enhancing region: tissue whose K^trans is at least ``enhancing_ktrans_min`` and
    ``enhancing_significance`` standard errors above 0, in connected groups (26-connected) of
    at least ``enhancing_min_volume_ml``; bool ``(z, y, x)``."""
    significant = (
        tissue_mask
        & (leakage.ktrans >= p.enhancing_ktrans_min)
        & (leakage.ktrans >= p.enhancing_significance * leakage.ktrans_se)
    )
    labels, count = ndimage.label(significant, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return significant
    sizes = np.bincount(labels.ravel())[1:] * voxel_volume_ml
    keep = np.concatenate([[False], sizes >= p.enhancing_min_volume_ml])
    return keep[labels]
