"""Stage 3 of the engine: the arterial input (automatic, away from the delayed side, or where a
person placed it) and the venous output with the partial-volume correction of the AIF."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctp_node.perfusion.inputs.curves import input_curve, manual_voxels
from ctp_node.perfusion.inputs.selection import (
    matching_curves,
    select_arterial,
    select_venous,
    venous_scale,
    vessel_pool,
)
from ctp_node.perfusion.parameters import PerfusionParameters
from ctp_node.perfusion.prepare.features import CurveFeatures
from ctp_node.perfusion.prepare.grid import TimeGrid
from ctp_node.perfusion.prepare.stage import Prepared
from ctp_node.perfusion.result import InputCurve
from ctp_node.perfusion.tissue.stage import TissueCurves


@dataclass(frozen=True)
class Arterial:
    """The arterial input as measured (before the venous correction): the curve, its values
    on the uniform grid (HU) and the image half whose arteries were avoided (or None)."""

    curve: InputCurve
    on_grid: np.ndarray
    avoided: np.ndarray | None


def arterial_input(
    prepared: Prepared,
    tissue: TissueCurves,
    p: PerfusionParameters,
    aif_zyx: tuple[int, int, int] | None,
) -> Arterial:
    """The AIF at ``aif_zyx``, or chosen automatically away from the delayed side (arteries
    there are distal to an occlusion)."""
    grid, feats, candidates = prepared.grid, prepared.features, prepared.candidates
    avoid = delayed_hemisphere(tissue.ttp_s, prepared.parenchyma, prepared.intracranial)
    if aif_zyx is not None:
        voxels = manual_voxels(aif_zyx, prepared.shape, "AIF", feats.peak_hu, p.aif_voxels)
        selection = "manual"
    else:
        voxels = select_arterial(feats, candidates, prepared.noise, p.aif_voxels, avoid)
        voxels = grow_input(
            grid, feats, candidates, avoid, voxels, prepared.noise, p.aif_max_voxels
        )
        selection = "automatic"
    curve, on_grid = input_curve(grid, "AIF", voxels, selection, prepared.noise)
    return Arterial(curve, on_grid, avoid)


@dataclass(frozen=True)
class InputCurves:
    """The inputs the deconvolution uses.

    Attributes
    ----------
    aif : the arterial curve scaled by the venous partial-volume correction.
    aif_on_grid : the same on the uniform grid, HU.
    vof : the venous curve, or None when none was found.
    scale : the partial-volume factor applied (1 = none).
    warnings : for the report.
    """

    aif: InputCurve
    aif_on_grid: np.ndarray
    vof: InputCurve | None
    scale: float
    warnings: tuple[str, ...]


def venous_correction(
    prepared: Prepared,
    arterial: Arterial,
    p: PerfusionParameters,
    vof_zyx: tuple[int, int, int] | None,
) -> InputCurves:
    """The VOF (at ``vof_zyx`` or automatic) and the AIF scaled so that its area is the
    VOF's (partial volume), within ``aif_scale_max``."""
    grid, feats = prepared.grid, prepared.features
    warnings: list[str] = []
    vof_curve, scale = None, 1.0
    if vof_zyx is not None:
        # The brightest at the peak, not above the baseline (see selection.venous_rank).
        brightest = feats.peak_hu + prepared.baseline
        vof_vox = manual_voxels(vof_zyx, prepared.shape, "VOF", brightest, p.vof_voxels)
        vof_sel = "manual"
    else:
        aif_ttp = float(grid.times_s[np.argmax(arterial.on_grid)])
        vof_vox = select_venous(
            feats, prepared.candidates, prepared.noise, aif_ttp, p.vof_voxels, prepared.baseline
        )
        vof_sel = "automatic"
    if vof_vox is None:
        warnings.append(
            "No venous outflow curve was found; the arterial input is not corrected "
            "for partial volume, so absolute CBF and CBV may be overestimated."
        )
    else:
        vof_curve, vof_grid = input_curve(grid, "VOF", vof_vox, vof_sel)
        if vof_curve.concentration_hu[-1] > 0.3 * vof_curve.concentration_hu.max():
            warnings.append(
                "The venous washout is truncated (the acquisition ends before the "
                "venous curve returns towards baseline)."
            )
        raw_scale = venous_scale(arterial.on_grid, vof_grid, grid.dt_s)
        if p.venous_correction:
            scale = float(np.clip(raw_scale, 1.0, p.aif_scale_max))
            if raw_scale > p.aif_scale_max:
                warnings.append(
                    f"The venous/arterial area ratio ({raw_scale:.2f}) exceeds "
                    f"{p.aif_scale_max:g}; the correction was capped, check the AIF."
                )
    aif = arterial.curve
    return InputCurves(
        aif=InputCurve(**{**aif.__dict__, "concentration_hu": aif.concentration_hu * scale}),
        aif_on_grid=arterial.on_grid * scale,
        vof=vof_curve,
        scale=scale,
        warnings=tuple(warnings),
    )


def grow_input(
    grid: TimeGrid,
    feats: CurveFeatures,
    candidates: np.ndarray,
    avoid: np.ndarray | None,
    seeds: np.ndarray,
    noise: float,
    max_count: int,
) -> np.ndarray:
    """The seed voxels and every other vessel voxel whose curve is a scaled copy of theirs.

    A handful of voxels leaves the input curve noisy, and because they were ranked by their
    own (noisy) peaks, biased towards a sharper bolus; both lower every flow. Averaging all
    voxels of the same vessels (:func:`matching_curves`) divides that noise without
    mixing in partial-volume tissue or arteries with another timing.
    """
    if max_count <= len(seeds):
        return seeds
    pool_mask = candidates
    if avoid is not None and not avoid[tuple(seeds.T)].any():
        pool_mask = candidates & ~avoid
    pool = vessel_pool(feats, pool_mask, seeds)
    curves, gain = grid.voxel_curves(pool)
    return pool[matching_curves(curves, gain, len(seeds), noise, max_count)]


def delayed_hemisphere(
    ttp_s: np.ndarray, parenchyma: np.ndarray, intracranial: np.ndarray
) -> np.ndarray | None:
    """The image half (left/right of the head's centre) whose tissue peaks > 1.5 s later."""
    columns = np.nonzero(intracranial)[2]
    if columns.size == 0:
        return None
    middle = float(columns.mean())
    x = np.arange(parenchyma.shape[2])
    left = parenchyma & (x < middle)
    right = parenchyma & (x > middle)
    if left.sum() < 100 or right.sum() < 100:
        return None
    # The latest-peaking 20 % of each side: sensitive to a territory, not to the whole side.
    late_left = float(np.percentile(ttp_s[left], 80))
    late_right = float(np.percentile(ttp_s[right], 80))
    side = np.broadcast_to(x, parenchyma.shape)
    if late_right - late_left > 1.5:
        return side > middle
    if late_left - late_right > 1.5:
        return side < middle
    return None
