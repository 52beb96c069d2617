"""Stage 4 of the engine: the residue functions of every parenchyma voxel. oSVD deconvolution
(:mod:`ctp_node.perfusion.residues.deconvolution`), then (``model_based_flow``) the residue
model fit (:mod:`ctp_node.perfusion.residues.parametric`) that gives flow, volume and Tmax, or
else the truncation-bias correction of the oSVD peak."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from ctp_node.perfusion.inputs.selection import arterial_model
from ctp_node.perfusion.inputs.stage import InputCurves
from ctp_node.perfusion.parameters import PerfusionParameters
from ctp_node.perfusion.prepare import masks
from ctp_node.perfusion.prepare.stage import Prepared
from ctp_node.perfusion.residues import parametric, pooling, regularise
from ctp_node.perfusion.residues.deconvolution import (
    ResidueFeatures,
    correct_peak,
    deconvolve_projected,
    residue_operators,
    sampled_peak_ratio,
    thresholds,
)
from ctp_node.perfusion.result import InputCurve
from ctp_node.perfusion.tissue.profiles import Profiles
from ctp_node.perfusion.tissue.stage import TissueCurves

#: True MTTs (s) at which the truncation bias of the residue peak is simulated.
_LUT_MTT_S = np.geomspace(0.5, 40.0, 40)


@dataclass(frozen=True)
class Residues:
    """Per parenchyma voxel (in :class:`Profiles` order), from the residue functions.

    Attributes
    ----------
    flow : CBF before units (the residue's peak, or the model's amplitude), 1/s.
    area : ∫k dt = ∫C / ∫AIF, the measured blood volume before units.
    volume : the blood volume the maps show (``area``, or the fitted residue's area).
    tmax_s, onset_s : Tmax and the oSVD residue's onset, s.
    tissue : True where the voxel is tissue, False where its measured blood volume marks a
        large vessel or the in-plane rim of one (``vessel_cbv_ml_100g``).
    passage_seen : the share (0–1) of the fitted model's bolus passage inside the acquisition
        (:attr:`model_curves.Dictionary.passage_seen`); None without the model fit.
    shape_prior : the residue shapes' prior the model fit used (None without it).
    """

    flow: np.ndarray
    area: np.ndarray
    volume: np.ndarray
    tmax_s: np.ndarray
    onset_s: np.ndarray
    tissue: np.ndarray
    shape_prior: tuple[float, ...] | None
    passage_seen: np.ndarray | None = None


def residue_functions(
    prepared: Prepared, tissue: TissueCurves, curves: InputCurves, p: PerfusionParameters
) -> Residues:
    """oSVD deconvolution of every parenchyma voxel and either (``model_based_flow``) the
    residue model fit that gives flow and volume, or the truncation-bias correction of the
    oSVD peak that is then the flow."""
    profiles = tissue.profiles
    levels = thresholds(p.svd_threshold_min, p.svd_threshold_max, p.svd_threshold_steps)
    res = deconvolve(prepared, profiles, curves.aif_on_grid, levels, p)
    # ∫k dt = ∫C / ∫AIF (regularisation-independent).
    aif_area = float(curves.aif_on_grid.sum())
    area = profiles.apply(lambda synthesis: synthesis.sum(axis=1)[:, None], 1)[:, 0] / aif_area
    tissue_voxels = not_vessels(prepared, area, p)
    tmax = res.onset_s if p.tmax_from_onset else res.peak_time_s
    if not p.model_based_flow:
        flow = res.peak
        if p.exponential_peak_correction:
            flow = corrected_peak(prepared, profiles, curves, res, area, levels)
        return Residues(flow, area, area, tmax, res.onset_s, tissue_voxels, None)
    model = model_fit(prepared, profiles, curves.aif, res.onset_s, tissue_voxels, p)
    flow, volume = model.flow, area
    if p.model_based_volume:
        # The fitted residue's area: the measured curve's, matched to its signal.
        volume = flow * model.mtt_s
    if p.tmax_from_model:
        tmax = model.delay_s
    return Residues(
        flow,
        area,
        volume,
        tmax,
        res.onset_s,
        tissue_voxels,
        tuple(model.shape_prior),
        model.passage_seen,
    )


def corrected_peak(
    prepared: Prepared,
    profiles: Profiles,
    curves: InputCurves,
    res: ResidueFeatures,
    area: np.ndarray,
    levels: np.ndarray,
) -> np.ndarray:
    """The oSVD peak of every voxel corrected for its truncation bias: how much each voxel's
    threshold lowers the peak of an exponential residue with its area, simulated with the
    study's own input on the largest group of slices sharing their times."""
    synthesis, rows = max(profiles.groups(), key=lambda g: g[1].stop - g[1].start)
    z_group = int(np.searchsorted(profiles.slice_rows, rows.start, side="right") - 1)
    grid = prepared.grid
    ratios = sampled_peak_ratio(
        curves.aif.times_s,
        curves.aif.concentration_hu,
        grid.slice_times_s[:, z_group],
        profiles.basis @ synthesis,
        curves.aif_on_grid,
        grid.dt_s,
        levels,
        _LUT_MTT_S,
    )
    return correct_peak(res.peak, area, res.level, ratios, _LUT_MTT_S)


def not_vessels(prepared: Prepared, area: np.ndarray, p: PerfusionParameters) -> np.ndarray:
    """Per parenchyma voxel, False where its measured blood volume ∫C / ∫AIF (``area``) marks
    a large vessel or the rim of one (``vessel_cbv_ml_100g``): a vessel's curve is no tissue
    model's."""
    cbv = np.zeros(prepared.shape, np.float32)
    cbv[prepared.parenchyma] = 100.0 * p.hematocrit_factor / p.brain_density_g_ml * area
    tissue = masks.remove_vessels(prepared.parenchyma, cbv, p.vessel_cbv_ml_100g)
    return tissue[prepared.parenchyma]


def deconvolve(
    prepared: Prepared,
    profiles: Profiles,
    aif_on_grid: np.ndarray,
    levels: np.ndarray,
    p: PerfusionParameters,
) -> ResidueFeatures:
    """oSVD of every parenchyma voxel at once (per group of slices sharing times)."""
    operators = residue_operators(aif_on_grid, prepared.grid.dt_s, levels)
    parts = []
    for synthesis, rows in profiles.groups():
        bank = np.einsum("rg,kgl->krl", synthesis, operators)
        parts.append(
            deconvolve_projected(
                profiles.coefficients[rows],
                bank,
                prepared.grid.dt_s,
                levels,
                p.oscillation_index_max,
                workers=prepared.workers,
            )
        )
    return ResidueFeatures(
        **{
            name: np.concatenate([getattr(q, name) for q in parts])
            for name in ResidueFeatures.__dataclass_fields__
        }
    )


def model_fit(
    prepared: Prepared,
    profiles: Profiles,
    aif: InputCurve,
    onset_s: np.ndarray,
    tissue_voxels: np.ndarray,
    p: PerfusionParameters,
) -> parametric.ModelFit:
    """The residue model fitted to each voxel's curve pooled with its like neighbours;
    ``tissue_voxels`` (:func:`not_vessels`) are those whose MTT the others may borrow."""
    arterial = arterial_model(
        aif.times_s, aif.concentration_hu, prepared.noise / np.sqrt(len(aif.voxels_zyx))
    )
    baseline_noise = prepared.baseline_noise
    model = parametric.model_flow(
        profiles,
        prepared.grid.slice_times_s,
        arterial,
        float(aif.times_s[0]),
        partial(
            pooling.pooled,
            radius=p.model_pool_radius_voxels,
            spatial_sigma_voxels=p.model_pool_spatial_sigma_voxels,
            profile_sigma_hu=p.model_pool_profile_sigma_factor * max(prepared.area_noise, 1e-3),
            iterations=p.model_pool_iterations,
            workers=prepared.workers,
            delay_s=onset_s,
            delay_sigma_s=p.model_pool_delay_sigma_s,
            delay_median_voxels=p.model_pool_delay_median_voxels,
            baseline_hu=prepared.baseline[prepared.parenchyma],
            # 0 = off; else not below the difference noise alone makes between two baselines.
            baseline_sigma_hu=p.model_pool_baseline_sigma_hu
            and max(p.model_pool_baseline_sigma_hu, 2 * np.sqrt(2) * baseline_noise),
        ),
        workers=prepared.workers,
        delay_s=onset_s,
        delay_window_s=p.model_delay_window_s,
        flow_median=p.model_flow_median,
        own_amplitude=p.model_own_amplitude,
        study_prior=p.model_shape_prior_from_study,
        free_baseline=p.model_free_baseline,
    )
    if p.model_mtt_smoothing_voxels > 0:
        model = regularise.smooth_mtt(
            model, profiles.mask, p.model_mtt_smoothing_voxels, tissue_voxels
        )
    return model
