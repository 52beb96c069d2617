"""The perfusion engine: one acquisition in, maps, input curves and stroke volumes out.

:func:`compute_perfusion` bins very fine pixels (:mod:`resolution`) and registers the frames
(:mod:`ctp_node.perfusion.prepare.motion`), then runs the stages of :func:`_compute_perfusion`
in order. Each stage lives in a sub-package of its own (``<stage>/stage.py``, with the modules
it uses beside it) and takes and returns small frozen dataclasses:

1. ``prepare/``: :func:`~ctp_node.perfusion.prepare.stage.prepare` → ``Prepared``: time grid,
   baseline and bolus arrival, noise, intracranial and parenchyma masks, vessel candidates;
2. ``tissue/``: :func:`~ctp_node.perfusion.tissue.stage.tissue_curves` → ``TissueCurves``:
   tissue curves projected onto a temporal basis and denoised, time to peak;
3. ``inputs/``: :func:`~ctp_node.perfusion.inputs.stage.arterial_input` → ``Arterial``,
   :func:`~ctp_node.perfusion.inputs.stage.venous_correction` → ``InputCurves``: the
   automatic (or manual) AIF and VOF, the venous partial-volume correction of the AIF;
4. ``permeability/`` (the tumour profile only, ``permeability``):
   :func:`~ctp_node.perfusion.permeability.stage.remove_leakage` → ``Leakage``: K^trans of
   every voxel, and the acquisition with the fitted leak removed, on which stages 1–3 run
   again;
5. ``residues/``: :func:`~ctp_node.perfusion.residues.stage.residue_functions` →
   ``Residues``: oSVD deconvolution of every voxel at once as small matrix products, the
   residue model fit;
6. ``maps/``: :func:`~ctp_node.perfusion.maps.stage.perfusion_maps`: CBF, CBV, MTT, TTP, Tmax
   and the tissue mask;
7. ``lesions/``: :func:`~ctp_node.perfusion.lesions.stage.stroke_lesions` → ``Lesions``:
   normal reference, core and hypoperfusion volumes.

Axis order ``(t, z, y, x)``; only the parenchyma voxels are analysed, in float32, chunked so
that memory stays bounded on 512 × 512 acquisitions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from ctp_node.perfusion import asymmetry, resolution
from ctp_node.perfusion.acquisition import Acquisition
from ctp_node.perfusion.errors import LatePhaseTooShortError
from ctp_node.perfusion.inputs.stage import InputCurves, arterial_input, venous_correction
from ctp_node.perfusion.lesions.stage import stroke_lesions
from ctp_node.perfusion.maps.stage import passage_warning, perfusion_maps, unsupported_values
from ctp_node.perfusion.parameters import PerfusionParameters
from ctp_node.perfusion.permeability.stage import Leakage, enhancing_region, remove_leakage
from ctp_node.perfusion.prepare import motion, timing
from ctp_node.perfusion.prepare.stage import Prepared, prepare
from ctp_node.perfusion.residues import parametric
from ctp_node.perfusion.residues.stage import Residues, residue_functions
from ctp_node.perfusion.result import (
    MAP_UNITS,
    PerfusionResult,
    Permeability,
    without_unsupported,
)
from ctp_node.perfusion.tissue.stage import TissueCurves, tissue_curves

ALGORITHM = "ctp-node oSVD 0.23"


def compute_perfusion(
    acquisition: Acquisition,
    parameters: PerfusionParameters = PerfusionParameters(),
    *,
    aif_zyx: tuple[int, int, int] | None = None,
    vof_zyx: tuple[int, int, int] | None = None,
    release_source: Callable[[], None] | None = None,
) -> PerfusionResult:
    """Perfusion maps and stroke volumes of one acquisition.

    Parameters
    ----------
    acquisition : the dynamic series, HU ``(t, z, y, x)``.
    parameters : constants, thresholds and algorithm settings.
    aif_zyx, vof_zyx : voxel ``(z, y, x)`` of a manually placed arterial / venous input;
        overrides the automatic selection.
    release_source : called each time the engine stops reading ``acquisition.hu`` for a
        while — once it has its own binned copy, and once it has judged the tissue at the
        acquisition's own pixels — so that the caller may release the array's memory pages
        (a wide-detector study held in a file, :mod:`ctp_node.assemble.spill`).

    Raises
    ------
    PerfusionError : (a subclass) when no maps can be computed; ``str(err)`` says why.
    """
    factor = resolution.block_factor(acquisition.pixel_spacing_mm, parameters.processing_pixel_mm)
    binned = resolution.bin_acquisition(acquisition, factor)
    if binned.hu.dtype != np.float32:  # whole HU in int16, not binned
        binned = replace(binned, hu=binned.hu.astype(np.float32))
    own_copy = binned.hu is not acquisition.hu
    if release_source is not None and own_copy:
        release_source()
    moved = None
    if parameters.motion_correction and binned.hu.shape[0] >= timing.MIN_FRAMES:
        # The engine's own array (binned or converted) is registered in place: no second copy.
        binned, moved = motion.correct_motion(binned, in_place=own_copy)
    result = _compute_perfusion(
        binned,
        parameters,
        aif_zyx=resolution.coarse_location(aif_zyx, factor),
        vof_zyx=resolution.coarse_location(vof_zyx, factor),
    )
    del binned  # before the maps are expanded to the acquisition's grid
    if moved is not None:
        result = motion.with_motion(result, moved, parameters.motion_limit_mm)
    return resolution.expand_result(
        result, factor, acquisition, parameters, release_source=release_source
    )


def _compute_perfusion(
    acquisition: Acquisition,
    parameters: PerfusionParameters,
    *,
    aif_zyx: tuple[int, int, int] | None,
    vof_zyx: tuple[int, int, int] | None,
) -> PerfusionResult:
    """The engine's stages in order, on the (binned, registered) acquisition."""
    p = parameters
    leakage, why_no_leakage = None, []
    if p.permeability:
        leakage, acquisition, why_no_leakage = _without_leakage(acquisition, p, aif_zyx, vof_zyx)
    prepared = prepare(acquisition, p)
    tissue = tissue_curves(acquisition, prepared, p)
    arterial = arterial_input(prepared, tissue, p, aif_zyx)
    curves = venous_correction(prepared, arterial, p, vof_zyx)
    residues = residue_functions(prepared, tissue, curves, p)
    maps, tissue_mask = perfusion_maps(prepared, tissue, residues, p)
    lesions = stroke_lesions(acquisition, maps, tissue_mask, p)
    maps["rCBF"] = lesions.relative_cbf
    # Tmax is the time of the residue's maximum after the bolus reaches the AIF's artery: not
    # below 0. The fitted delay may be (down to -3 s: noise around 0, or tissue reached before
    # that artery); the lesions were judged on it, unclipped, as its smoothing is unbiased.
    maps["Tmax"] = np.maximum(maps["Tmax"], 0.0)
    warnings = [*prepared.warnings, *curves.warnings, *why_no_leakage]
    if "passage_seen" in maps:
        cut_short = passage_warning(
            maps["passage_seen"], tissue_mask, lesions.tmax6, acquisition.voxel_volume_ml
        )
        warnings += [cut_short] if cut_short else []
    unsupported = unsupported_values(maps, tissue_mask, float(prepared.grid.times_s[-1]))
    comparison = None
    if p.hemispheric_asymmetry:
        comparison, why_not = _hemispheres(acquisition, prepared, maps, tissue_mask, unsupported, p)
        warnings += [why_not] if why_not else []
    permeability = None
    if leakage is not None:
        maps["Ktrans"] = np.where(tissue_mask, leakage.ktrans, 0).astype(np.float32)
        region = enhancing_region(leakage, tissue_mask, acquisition.voxel_volume_ml, p)
        permeability = Permeability(
            region,
            float(region.sum() * acquisition.voxel_volume_ml),
            leakage.model,
            leakage.first_pass_end_s,
            leakage.late_frames,
        )
    return PerfusionResult(
        maps=maps,
        tissue_mask=tissue_mask,
        core_mask=lesions.core,
        tmax6_mask=lesions.tmax6,
        tmax10_mask=lesions.tmax10,
        aif=curves.aif,
        vof=curves.vof,
        volumes=lesions.volumes,
        normal_cbf=lesions.normal_cbf,
        parameters=_report(p, prepared, tissue, curves, residues),
        algorithm=ALGORITHM,
        warnings=tuple(warnings),
        unsupported=unsupported,
        asymmetry=comparison,
        permeability=permeability,
    )


def _without_leakage(
    acquisition: Acquisition,
    p: PerfusionParameters,
    aif_zyx: tuple[int, int, int] | None,
    vof_zyx: tuple[int, int, int] | None,
) -> tuple[Leakage | None, Acquisition, list[str]]:
    """The leak measured with the first three stages' input curves, and the acquisition with
    it removed; or None, the acquisition as it is and a warning saying why there is none."""
    prepared = prepare(acquisition, p)
    tissue = tissue_curves(acquisition, prepared, p)
    curves = venous_correction(prepared, arterial_input(prepared, tissue, p, aif_zyx), p, vof_zyx)
    try:
        leakage, corrected = remove_leakage(acquisition, prepared, curves.aif, p)
    except LatePhaseTooShortError as exc:
        return None, acquisition, [f"No permeability (K^trans) map: {exc}"]
    return leakage, corrected, []


def _hemispheres(
    acquisition: Acquisition,
    prepared: Prepared,
    maps: dict[str, np.ndarray],
    tissue_mask: np.ndarray,
    unsupported: dict[str, np.ndarray],
    p: PerfusionParameters,
) -> tuple[asymmetry.HemisphericComparison | None, str | None]:
    """The maps' hemispheric comparison (values the acquisition cannot support left out), or
    None and a warning saying why there is none."""
    reported = {name: without_unsupported(maps[name], unsupported.get(name)) for name in MAP_UNITS}
    try:
        comparison = asymmetry.compare_hemispheres(
            prepared.baseline,
            prepared.intracranial,
            tissue_mask,
            reported,
            acquisition.pixel_spacing_mm,
            acquisition.orientation,
            asymmetry.AsymmetryThresholds(p.asymmetry_time_difference_s, p.asymmetry_flow_ratio),
            margin_mm=p.asymmetry_midline_margin_mm,
        )
    except asymmetry.EmptyHemisphereError as exc:
        return None, f"No hemispheric comparison: {exc}."
    return comparison, None


def _report(
    p: PerfusionParameters,
    prepared: Prepared,
    tissue: TissueCurves,
    curves: InputCurves,
    residues: Residues,
) -> dict[str, float]:
    """The settings and the measured quantities the result reports."""
    report = p.as_report()
    report.update(
        {
            "aif_partial_volume_scale": curves.scale,
            "noise_sigma_hu": prepared.noise,
            "baseline_frames": float(prepared.baseline_frames),
            "resample_interval_s": prepared.grid.dt_s,
            "temporal_components": float(tissue.profiles.basis.shape[1]),
        }
    )
    if residues.shape_prior is not None:  # the residue shapes' prior the fit used
        report.update(
            {
                f"residue_prior_{name}": w
                for name, w in zip(parametric.SHAPES, residues.shape_prior, strict=True)
            }
        )
    return report
