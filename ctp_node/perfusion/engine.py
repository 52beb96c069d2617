"""The perfusion engine: one acquisition in, maps, input curves and stroke volumes out.

:func:`compute_perfusion` bins very fine pixels (:mod:`resolution`) and registers the frames
(:mod:`motion`), then runs the stages of :func:`_compute_perfusion` in order, each taking and
returning small frozen dataclasses:

1. :func:`_prepare` → :class:`_Prepared`: time grid, baseline and bolus arrival, noise,
   intracranial and parenchyma masks, vessel candidates;
2. :func:`_tissue_curves` → :class:`_TissueCurves`: tissue curves projected onto a temporal
   basis and denoised (:mod:`profiles`), time to peak;
3. :func:`_arterial_input` → :class:`_Arterial`, :func:`_venous_correction` →
   :class:`_InputCurves`: the automatic (or manual) AIF and VOF, the venous partial-volume
   correction of the AIF;
4. :func:`_residues` → :class:`_Residues`: oSVD deconvolution of every voxel at once as small
   matrix products (:mod:`deconvolution`), the residue model fit (:mod:`parametric`);
5. :func:`_maps`: CBF, CBV, MTT, TTP, Tmax and the tissue mask;
6. :func:`_lesions` → :class:`_Lesions`: normal reference, core and hypoperfusion volumes.

Axis order ``(t, z, y, x)``; only the parenchyma voxels are analysed, in float32, chunked so
that memory stays bounded on 512 × 512 acquisitions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from ctp_node.perfusion import (
    inputs,
    masks,
    motion,
    parametric,
    pooling,
    regularise,
    resolution,
    stroke,
    timing,
)
from ctp_node.perfusion.acquisition import Acquisition
from ctp_node.perfusion.deconvolution import (
    ResidueFeatures,
    correct_peak,
    deconvolve_projected,
    residue_operators,
    sampled_peak_ratio,
    thresholds,
)
from ctp_node.perfusion.errors import NoBrainTissueError
from ctp_node.perfusion.grid import TimeGrid, input_curve, manual_voxels
from ctp_node.perfusion.parameters import PerfusionParameters
from ctp_node.perfusion.profiles import Profiles, build_profiles
from ctp_node.perfusion.result import InputCurve, PerfusionResult, StrokeVolumes

ALGORITHM = "ctp-node oSVD 0.18"
#: The whole-brain curve must rise at least this much for contrast to count as arrived, HU.
_MIN_BRAIN_RISE_HU = 1.5
#: Baseline attenuation accepted for arterial/venous candidates (blood, partial volume), HU.
_VESSEL_BASELINE_MAX_HU = 150.0
#: True MTTs (s) at which the truncation bias of the residue peak is simulated.
_LUT_MTT_S = np.geomspace(0.5, 40.0, 40)


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
        result = _with_motion(result, moved, parameters.motion_limit_mm)
    return resolution.expand_result(
        result, factor, acquisition, parameters, release_source=release_source
    )


def _with_motion(
    result: PerfusionResult, moved: motion.MotionEstimate, limit_mm: float
) -> PerfusionResult:
    """The result with the measured motion and, when the head moved visibly, a warning."""
    warnings = list(result.warnings)
    largest = float(moved.displacement_mm.max()) if moved.displacement_mm.size else 0.0
    excluded = tuple(int(i) for i in np.flatnonzero(moved.excluded))
    if largest > limit_mm:
        warnings.append(
            f"Head motion up to {largest:.1f} mm (limit {limit_mm:g} mm) in "
            f"{int((moved.displacement_mm > limit_mm).sum())} of {moved.displacement_mm.size} "
            "images; the frames were registered in-plane, but the maps may be degraded."
        )
    if excluded:
        warnings.append(
            f"{len(excluded)} image(s) could not be registered (through-plane motion?) and were "
            "replaced by interpolation in time: " + ", ".join(str(i) for i in excluded) + "."
        )
    return replace(
        result,
        warnings=tuple(warnings),
        motion_mm=moved.displacement_mm.astype(np.float32),
        motion_corrected_frames=tuple(int(i) for i in np.flatnonzero(moved.corrected)),
        motion_excluded_frames=excluded,
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
    prepared = _prepare(acquisition, p)
    tissue = _tissue_curves(acquisition, prepared, p)
    arterial = _arterial_input(prepared, tissue, p, aif_zyx)
    curves = _venous_correction(prepared, arterial, p, vof_zyx)
    residues = _residues(prepared, tissue, curves, p)
    maps, tissue_mask = _maps(prepared, tissue, residues, p)
    lesions = _lesions(acquisition, maps, tissue_mask, p)
    maps["rCBF"] = lesions.relative_cbf
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
        warnings=(*prepared.warnings, *curves.warnings),
    )


@dataclass(frozen=True)
class _Prepared:
    """What every later stage reads: the time grid, noise, baseline and masks.

    Attributes
    ----------
    grid : the uniform time grid the curves are resampled onto.
    shape : ``(z, y, x)`` of the acquisition.
    workers : threads for the chunked stages.
    noise : image noise σ, HU.
    area_noise : σ of white noise that gives the noise of 3 × 3 means, HU.
    baseline_frames : images before contrast arrival.
    baseline : their mean, HU ``(z, y, x)``.
    baseline_noise : its noise σ, HU.
    intracranial, parenchyma : masks ``(z, y, x)``.
    candidates : voxels that may be arterial or venous inputs.
    features : the candidates' curve features.
    warnings : for the report.
    """

    grid: TimeGrid
    shape: tuple[int, int, int]
    workers: int
    noise: float
    area_noise: float
    baseline_frames: int
    baseline: np.ndarray
    baseline_noise: float
    intracranial: np.ndarray
    parenchyma: np.ndarray
    candidates: np.ndarray
    features: inputs.CurveFeatures
    warnings: tuple[str, ...]


def _prepare(acq: Acquisition, p: PerfusionParameters) -> _Prepared:
    """Timing, noise, baseline and masks; raises when there is no brain or no usable timing."""
    timing.check_duration(acq.times_s)
    grid = TimeGrid(acq, p.resample_interval_s)
    nt = acq.hu.shape[0]
    # Parenchyma from the first image (pre-contrast unless NoBaselineError below).
    brain0 = masks.parenchyma_mask(acq.hu[0], p.tissue_min_hu, p.tissue_max_hu)
    if brain0.sum() < 50:
        raise NoBrainTissueError(
            "No brain tissue was found in the images (no voxels of 15–70 HU inside the skull); "
            "check that the series is a head CT perfusion acquisition."
        )
    brain_idx = np.flatnonzero(brain0)
    brain_idx = brain_idx[:: max(1, brain_idx.size // 100_000)]
    brain_curve = acq.hu.reshape(nt, -1)[:, brain_idx].mean(axis=1, dtype=np.float64)
    baseline_frames, _ = timing.bolus_arrival(
        brain_curve, acq.times_s, min_rise_hu=_MIN_BRAIN_RISE_HU
    )
    noise = inputs.image_noise_hu(acq.hu, brain0)
    # The noise of 3 × 3 means, as the σ of white noise that would give it: CT noise is
    # spatially correlated (the reconstruction kernel), so averaging neighbours removes less
    # of it than it would of independent noise, and the filters must allow for that.
    area_noise = max(noise, 3.0 * inputs.image_noise_hu(acq.hu, brain0, window=3))
    baseline = acq.hu[:baseline_frames].mean(axis=0)
    baseline_noise = noise / np.sqrt(max(baseline_frames, 1))
    intracranial = masks.intracranial_mask(baseline)
    parenchyma = masks.parenchyma_mask(
        baseline,
        p.tissue_min_hu,
        p.tissue_max_hu,
        intracranial,
        baseline_noise_hu=baseline_noise,
    )
    smooth_base = masks.smoothed_baseline(baseline)
    candidates = (
        intracranial
        & (smooth_base >= p.tissue_min_hu - 10)
        & (smooth_base <= _VESSEL_BASELINE_MAX_HU)
    )
    return _Prepared(
        grid=grid,
        shape=acq.hu.shape[1:],
        workers=p.worker_threads if p.worker_threads > 0 else (os.cpu_count() or 1),
        noise=noise,
        area_noise=area_noise,
        baseline_frames=baseline_frames,
        baseline=baseline,
        baseline_noise=baseline_noise,
        intracranial=intracranial,
        parenchyma=parenchyma,
        candidates=candidates,
        features=inputs.vessel_features(
            acq.hu, baseline, candidates, grid.slice_times_s, grid.times_s
        ),
        warnings=_timing_warnings(acq.times_s, baseline_frames),
    )


def _timing_warnings(times_s: np.ndarray, baseline_frames: int) -> tuple[str, ...]:
    warnings = []
    if baseline_frames < 2:
        warnings.append(
            f"Only {baseline_frames} image(s) before contrast arrival; at least 2 "
            "baseline images are recommended."
        )
    if times_s[-1] - times_s[0] < 50.0:
        warnings.append(
            f"The acquisition lasts {times_s[-1] - times_s[0]:.0f} s; 50–70 s are recommended."
        )
    return tuple(warnings)


@dataclass(frozen=True)
class _TissueCurves:
    """The parenchyma's curves, compressed and denoised on the uniform grid, and their time
    to peak (s, ``(z, y, x)``; 0 outside the parenchyma)."""

    profiles: Profiles
    ttp_s: np.ndarray


def _tissue_curves(acq: Acquisition, prepared: _Prepared, p: PerfusionParameters) -> _TissueCurves:
    grid, noise = prepared.grid, prepared.area_noise
    profiles = build_profiles(
        acq.hu,
        prepared.baseline,
        prepared.parenchyma,
        grid.slice_times_s,
        grid.times_s,
        noise,
        radius=p.denoise_radius_voxels,
        spatial_sigma_voxels=p.denoise_spatial_sigma_mm / min(acq.pixel_spacing_mm),
        profile_sigma_hu=p.denoise_profile_sigma_factor * noise / 3.0,
        workers=prepared.workers,
        min_components=p.temporal_components_min,
    )
    ttp = np.zeros(prepared.shape, np.float32)
    ttp[prepared.parenchyma] = grid.times_s[0] + grid.dt_s * profiles.peak_index()
    return _TissueCurves(profiles, ttp)


@dataclass(frozen=True)
class _Arterial:
    """The arterial input as measured (before the venous correction): the curve, its values
    on the uniform grid (HU) and the image half whose arteries were avoided (or None)."""

    curve: InputCurve
    on_grid: np.ndarray
    avoided: np.ndarray | None


def _arterial_input(
    prepared: _Prepared,
    tissue: _TissueCurves,
    p: PerfusionParameters,
    aif_zyx: tuple[int, int, int] | None,
) -> _Arterial:
    """The AIF at ``aif_zyx``, or chosen automatically away from the delayed side (arteries
    there are distal to an occlusion)."""
    grid, feats, candidates = prepared.grid, prepared.features, prepared.candidates
    avoid = _delayed_hemisphere(tissue.ttp_s, prepared.parenchyma, prepared.intracranial)
    if aif_zyx is not None:
        voxels = manual_voxels(aif_zyx, prepared.shape, "AIF", feats.peak_hu, p.aif_voxels)
        selection = "manual"
    else:
        voxels = inputs.select_arterial(feats, candidates, prepared.noise, p.aif_voxels, avoid)
        voxels = _grow_input(
            grid, feats, candidates, avoid, voxels, prepared.noise, p.aif_max_voxels
        )
        selection = "automatic"
    curve, on_grid = input_curve(grid, "AIF", voxels, selection, prepared.noise)
    return _Arterial(curve, on_grid, avoid)


@dataclass(frozen=True)
class _InputCurves:
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


def _venous_correction(
    prepared: _Prepared,
    arterial: _Arterial,
    p: PerfusionParameters,
    vof_zyx: tuple[int, int, int] | None,
) -> _InputCurves:
    """The VOF (at ``vof_zyx`` or automatic) and the AIF scaled so that its area is the
    VOF's (partial volume), within ``aif_scale_max``."""
    grid, feats = prepared.grid, prepared.features
    warnings: list[str] = []
    vof_curve, scale = None, 1.0
    if vof_zyx is not None:
        # The brightest at the peak, not above the baseline (see inputs.venous_rank).
        brightest = feats.peak_hu + prepared.baseline
        vof_vox = manual_voxels(vof_zyx, prepared.shape, "VOF", brightest, p.vof_voxels)
        vof_sel = "manual"
    else:
        aif_ttp = float(grid.times_s[np.argmax(arterial.on_grid)])
        vof_vox = inputs.select_venous(
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
        raw_scale = inputs.venous_scale(arterial.on_grid, vof_grid, grid.dt_s)
        if p.venous_correction:
            scale = float(np.clip(raw_scale, 1.0, p.aif_scale_max))
            if raw_scale > p.aif_scale_max:
                warnings.append(
                    f"The venous/arterial area ratio ({raw_scale:.2f}) exceeds "
                    f"{p.aif_scale_max:g}; the correction was capped, check the AIF."
                )
    aif = arterial.curve
    return _InputCurves(
        aif=InputCurve(**{**aif.__dict__, "concentration_hu": aif.concentration_hu * scale}),
        aif_on_grid=arterial.on_grid * scale,
        vof=vof_curve,
        scale=scale,
        warnings=tuple(warnings),
    )


@dataclass(frozen=True)
class _Residues:
    """Per parenchyma voxel (in :class:`Profiles` order), from the residue functions.

    Attributes
    ----------
    flow : CBF before units (the residue's peak, or the model's amplitude), 1/s.
    area : ∫k dt = ∫C / ∫AIF, the measured blood volume before units.
    volume : the blood volume the maps show (``area``, or the fitted residue's area).
    tmax_s, onset_s : Tmax and the oSVD residue's onset, s.
    shape_prior : the residue shapes' prior the model fit used (None without it).
    """

    flow: np.ndarray
    area: np.ndarray
    volume: np.ndarray
    tmax_s: np.ndarray
    onset_s: np.ndarray
    shape_prior: tuple[float, ...] | None


def _residues(
    prepared: _Prepared, tissue: _TissueCurves, curves: _InputCurves, p: PerfusionParameters
) -> _Residues:
    """oSVD deconvolution of every parenchyma voxel, the truncation-bias correction of its
    peak, and (``model_based_flow``) the residue model fit that gives flow and volume."""
    grid, profiles = prepared.grid, tissue.profiles
    levels = thresholds(p.svd_threshold_min, p.svd_threshold_max, p.svd_threshold_steps)
    res = _deconvolve(prepared, profiles, curves.aif_on_grid, levels, p)
    # ∫k dt = ∫C / ∫AIF (regularisation-independent).
    aif_area = float(curves.aif_on_grid.sum())
    area = profiles.apply(lambda synthesis: synthesis.sum(axis=1)[:, None], 1)[:, 0] / aif_area
    flow, volume = res.peak, area
    tmax = res.onset_s if p.tmax_from_onset else res.peak_time_s
    if p.exponential_peak_correction:
        synthesis, rows = max(profiles.groups(), key=lambda g: g[1].stop - g[1].start)
        z_group = int(np.searchsorted(profiles.slice_rows, rows.start, side="right") - 1)
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
        flow = correct_peak(flow, area, res.level, ratios, _LUT_MTT_S)
    if not p.model_based_flow:
        return _Residues(flow, area, volume, tmax, res.onset_s, None)
    model = _model_fit(prepared, profiles, curves.aif, res.onset_s, p)
    flow = model.flow
    if p.model_based_volume:
        # The fitted residue's area: the measured curve's, matched to its signal.
        volume = flow * model.mtt_s
    if p.tmax_from_model:
        tmax = model.delay_s
    return _Residues(flow, area, volume, tmax, res.onset_s, tuple(model.shape_prior))


def _deconvolve(
    prepared: _Prepared,
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


def _model_fit(
    prepared: _Prepared,
    profiles: Profiles,
    aif: InputCurve,
    onset_s: np.ndarray,
    p: PerfusionParameters,
) -> parametric.ModelFit:
    """The residue model fitted to each voxel's curve pooled with its like neighbours."""
    arterial = inputs.arterial_model(
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
    )
    if p.model_mtt_smoothing_voxels > 0:
        model = regularise.smooth_mtt(model, profiles.mask, p.model_mtt_smoothing_voxels)
    return model


def _maps(
    prepared: _Prepared, tissue: _TissueCurves, residues: _Residues, p: PerfusionParameters
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """CBF (mL/100 g/min), CBV (mL/100 g), MTT (s), TTP (s), Tmax (s) and the oSVD delay (s)
    of the tissue, and the tissue mask (the parenchyma without its large vessels)."""
    density_ratio = p.hematocrit_factor / p.brain_density_g_ml
    m = prepared.parenchyma
    maps = {name: np.zeros(prepared.shape, np.float32) for name in ("CBF", "CBV", "Tmax", "delay")}
    maps["CBF"][m] = 6000.0 * density_ratio * residues.flow
    maps["CBV"][m] = 100.0 * density_ratio * residues.area
    maps["Tmax"][m] = residues.tmax_s
    maps["delay"][m] = residues.onset_s
    # Vessels by the measured area: a vessel's curve is no tissue model's.
    tissue_mask = masks.remove_vessels(m, maps["CBV"], p.vessel_cbv_ml_100g)
    maps["CBV"][m] = 100.0 * density_ratio * residues.volume
    maps["CBF"] = np.maximum(maps["CBF"], 0)
    maps["CBV"] = np.maximum(maps["CBV"], 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mtt = np.where(maps["CBF"] > 0, 60.0 * maps["CBV"] / maps["CBF"], 0.0)
    maps["MTT"] = mtt.astype(np.float32)
    maps["TTP"] = tissue.ttp_s
    maps = {name: maps[name] for name in ("CBF", "CBV", "MTT", "TTP", "Tmax", "delay")}
    for name in maps:
        maps[name] = np.where(tissue_mask, maps[name], 0).astype(np.float32)
    if tissue_mask.sum() == 0:
        raise NoBrainTissueError("No perfused brain tissue remained after excluding vessels.")
    return maps, tissue_mask


@dataclass(frozen=True)
class _Lesions:
    """The normal reference CBF (mL/100 g/min), CBF relative to it, the core and Tmax
    masks and their volumes."""

    normal_cbf: float
    relative_cbf: np.ndarray
    core: np.ndarray
    tmax6: np.ndarray
    tmax10: np.ndarray
    volumes: StrokeVolumes


def _lesions(
    acq: Acquisition, maps: dict[str, np.ndarray], tissue: np.ndarray, p: PerfusionParameters
) -> _Lesions:
    normal = stroke.normal_reference_cbf(
        maps["CBF"], maps["Tmax"], tissue, p.core_reference_tmax_s, p.core_reference_mean
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(tissue, maps["CBF"] / max(normal, 1e-6), 0).astype(np.float32)
    voxel_ml = acq.voxel_volume_ml
    core, tmax6, tmax10 = stroke.lesion_masks(
        maps["CBF"], maps["Tmax"], tissue, normal, voxel_ml, p, min(acq.pixel_spacing_mm)
    )
    volumes = stroke.stroke_volumes(core, tmax6, tmax10, voxel_ml, p)
    return _Lesions(normal, relative, core, tmax6, tmax10, volumes)


def _report(
    p: PerfusionParameters,
    prepared: _Prepared,
    tissue: _TissueCurves,
    curves: _InputCurves,
    residues: _Residues,
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


def _grow_input(
    grid: TimeGrid,
    feats: inputs.CurveFeatures,
    candidates: np.ndarray,
    avoid: np.ndarray | None,
    seeds: np.ndarray,
    noise: float,
    max_count: int,
) -> np.ndarray:
    """The seed voxels and every other vessel voxel whose curve is a scaled copy of theirs.

    A handful of voxels leaves the input curve noisy, and because they were ranked by their
    own (noisy) peaks, biased towards a sharper bolus; both lower every flow. Averaging all
    voxels of the same vessels (:func:`inputs.matching_curves`) divides that noise without
    mixing in partial-volume tissue or arteries with another timing.
    """
    if max_count <= len(seeds):
        return seeds
    pool_mask = candidates
    if avoid is not None and not avoid[tuple(seeds.T)].any():
        pool_mask = candidates & ~avoid
    pool = inputs.vessel_pool(feats, pool_mask, seeds)
    curves, gain = grid.voxel_curves(pool)
    return pool[inputs.matching_curves(curves, gain, len(seeds), noise, max_count)]


def _delayed_hemisphere(
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
