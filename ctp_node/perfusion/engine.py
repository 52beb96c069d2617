"""The perfusion engine: one acquisition in, maps, input curves and stroke volumes out.

Steps: in-plane binning of very fine pixels (:mod:`resolution`) → baseline and bolus arrival →
parenchyma mask → tissue curves projected onto a temporal basis and denoised (:mod:`profiles`)
→ automatic (or manual) AIF and VOF → venous partial-volume correction of the AIF → oSVD
deconvolution of every voxel at once as small matrix products (:mod:`deconvolution`) → CBF,
CBV, MTT, TTP, Tmax → core and hypoperfusion volumes. Axis order ``(t, z, y, x)``; only the
parenchyma voxels are analysed, in float32, chunked so that memory stays bounded on
512 × 512 acquisitions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
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
from ctp_node.perfusion.profiles import build_profiles
from ctp_node.perfusion.result import InputCurve, PerfusionResult

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
    p = parameters
    acq = acquisition
    timing.check_duration(acq.times_s)
    warnings: list[str] = []
    grid = TimeGrid(acq, p.resample_interval_s)
    nt, nz, ny, nx = acq.hu.shape
    workers = p.worker_threads if p.worker_threads > 0 else (os.cpu_count() or 1)

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
    if baseline_frames < 2:
        warnings.append(
            f"Only {baseline_frames} image(s) before contrast arrival; at least 2 "
            "baseline images are recommended."
        )
    if acq.times_s[-1] - acq.times_s[0] < 50.0:
        warnings.append(
            f"The acquisition lasts {acq.times_s[-1] - acq.times_s[0]:.0f} s; "
            "50–70 s are recommended."
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
    feats = inputs.vessel_features(acq.hu, baseline, candidates, grid.slice_times_s, grid.times_s)

    # Tissue curves: compressed, denoised, on the uniform grid.
    profiles = build_profiles(
        acq.hu,
        baseline,
        parenchyma,
        grid.slice_times_s,
        grid.times_s,
        area_noise,
        radius=p.denoise_radius_voxels,
        spatial_sigma_voxels=p.denoise_spatial_sigma_mm / min(acq.pixel_spacing_mm),
        profile_sigma_hu=p.denoise_profile_sigma_factor * area_noise / 3.0,
        workers=workers,
        min_components=p.temporal_components_min,
    )
    ttp = np.zeros((nz, ny, nx), np.float32)
    ttp[parenchyma] = grid.times_s[0] + grid.dt_s * profiles.peak_index()

    # Side with delayed tissue: arteries there are distal to an occlusion.
    avoid = _delayed_hemisphere(ttp, parenchyma, intracranial)

    # Arterial input.
    if aif_zyx is not None:
        aif_vox = manual_voxels(aif_zyx, (nz, ny, nx), "AIF", feats.peak_hu, p.aif_voxels)
        aif_sel = "manual"
    else:
        aif_vox = inputs.select_arterial(feats, candidates, noise, p.aif_voxels, avoid)
        aif_vox = _grow_input(grid, feats, candidates, avoid, aif_vox, noise, p.aif_max_voxels)
        aif_sel = "automatic"
    aif_curve, aif_grid = input_curve(grid, "AIF", aif_vox, aif_sel, noise)
    aif_ttp = float(grid.times_s[np.argmax(aif_grid)])

    # Venous output and partial-volume correction.
    vof_curve = None
    scale = 1.0
    if vof_zyx is not None:
        # The brightest at the peak, not above the baseline (see inputs.venous_rank).
        brightest = feats.peak_hu + baseline
        vof_vox = manual_voxels(vof_zyx, (nz, ny, nx), "VOF", brightest, p.vof_voxels)
        vof_sel = "manual"
    else:
        vof_vox = inputs.select_venous(feats, candidates, noise, aif_ttp, p.vof_voxels, baseline)
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
        raw_scale = inputs.venous_scale(aif_grid, vof_grid, grid.dt_s)
        if p.venous_correction:
            scale = float(np.clip(raw_scale, 1.0, p.aif_scale_max))
            if raw_scale > p.aif_scale_max:
                warnings.append(
                    f"The venous/arterial area ratio ({raw_scale:.2f}) exceeds "
                    f"{p.aif_scale_max:g}; the correction was capped, check the AIF."
                )
    aif_grid = aif_grid * scale
    aif_curve = InputCurve(
        **{**aif_curve.__dict__, "concentration_hu": aif_curve.concentration_hu * scale}
    )
    aif_area = float(aif_grid.sum())

    # Deconvolution of every parenchyma voxel at once (per group of slices sharing times).
    levels = thresholds(p.svd_threshold_min, p.svd_threshold_max, p.svd_threshold_steps)
    operators = residue_operators(aif_grid, grid.dt_s, levels)
    density_ratio = p.hematocrit_factor / p.brain_density_g_ml
    parts = []
    for synthesis, rows in profiles.groups():
        bank = np.einsum("rg,kgl->krl", synthesis, operators)
        parts.append(
            deconvolve_projected(
                profiles.coefficients[rows],
                bank,
                grid.dt_s,
                levels,
                p.oscillation_index_max,
                workers=workers,
            )
        )
    res = ResidueFeatures(
        **{
            name: np.concatenate([getattr(q, name) for q in parts])
            for name in ResidueFeatures.__dataclass_fields__
        }
    )
    # ∫k dt = ∫C / ∫AIF (regularisation-independent).
    area = profiles.apply(lambda synthesis: synthesis.sum(axis=1)[:, None], 1)[:, 0] / aif_area
    peak = res.peak
    volume = area
    tmax = res.onset_s if p.tmax_from_onset else res.peak_time_s
    if p.exponential_peak_correction:
        synthesis, rows = max(profiles.groups(), key=lambda g: g[1].stop - g[1].start)
        z_group = int(np.searchsorted(profiles.slice_rows, rows.start, side="right") - 1)
        ratios = sampled_peak_ratio(
            aif_curve.times_s,
            aif_curve.concentration_hu,
            grid.slice_times_s[:, z_group],
            profiles.basis @ synthesis,
            aif_grid,
            grid.dt_s,
            levels,
            _LUT_MTT_S,
        )
        peak = correct_peak(peak, area, res.level, ratios, _LUT_MTT_S)
    if p.model_based_flow:
        arterial = inputs.arterial_model(
            aif_curve.times_s,
            aif_curve.concentration_hu,
            noise / np.sqrt(len(aif_curve.voxels_zyx)),
        )
        model = parametric.model_flow(
            profiles,
            grid.slice_times_s,
            arterial,
            float(aif_curve.times_s[0]),
            partial(
                pooling.pooled,
                radius=p.model_pool_radius_voxels,
                spatial_sigma_voxels=p.model_pool_spatial_sigma_voxels,
                profile_sigma_hu=p.model_pool_profile_sigma_factor * max(area_noise, 1e-3),
                iterations=p.model_pool_iterations,
                workers=workers,
                delay_s=res.onset_s,
                delay_sigma_s=p.model_pool_delay_sigma_s,
                delay_median_voxels=p.model_pool_delay_median_voxels,
                baseline_hu=baseline[parenchyma],
                # 0 = off; else not below the difference noise alone makes between two baselines.
                baseline_sigma_hu=p.model_pool_baseline_sigma_hu
                and max(p.model_pool_baseline_sigma_hu, 2 * np.sqrt(2) * baseline_noise),
            ),
            workers=workers,
            delay_s=res.onset_s,
            delay_window_s=p.model_delay_window_s,
            flow_median=p.model_flow_median,
            own_amplitude=p.model_own_amplitude,
            study_prior=p.model_shape_prior_from_study,
        )
        if p.model_mtt_smoothing_voxels > 0:
            model = regularise.smooth_mtt(model, profiles.mask, p.model_mtt_smoothing_voxels)
        peak = model.flow
        if p.model_based_volume:
            # The fitted residue's area: the measured curve's, matched to its signal.
            volume = peak * model.mtt_s
        if p.tmax_from_model:
            tmax = model.delay_s
    maps = {name: np.zeros((nz, ny, nx), np.float32) for name in ("CBF", "CBV", "Tmax", "delay")}
    m = parenchyma
    maps["CBF"][m] = 6000.0 * density_ratio * peak
    maps["CBV"][m] = 100.0 * density_ratio * area
    maps["Tmax"][m] = tmax
    maps["delay"][m] = res.onset_s
    # Vessels by the measured area: a vessel's curve is no tissue model's.
    tissue = masks.remove_vessels(parenchyma, maps["CBV"], p.vessel_cbv_ml_100g)
    maps["CBV"][m] = 100.0 * density_ratio * volume
    maps["CBF"] = np.maximum(maps["CBF"], 0)
    maps["CBV"] = np.maximum(maps["CBV"], 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mtt = np.where(maps["CBF"] > 0, 60.0 * maps["CBV"] / maps["CBF"], 0.0)
    maps["MTT"] = mtt.astype(np.float32)
    maps["TTP"] = ttp
    maps = {name: maps[name] for name in ("CBF", "CBV", "MTT", "TTP", "Tmax", "delay")}
    for name in maps:
        maps[name] = np.where(tissue, maps[name], 0).astype(np.float32)
    if tissue.sum() == 0:
        raise NoBrainTissueError("No perfused brain tissue remained after excluding vessels.")

    normal = stroke.normal_reference_cbf(
        maps["CBF"], maps["Tmax"], tissue, p.core_reference_tmax_s, p.core_reference_mean
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        maps["rCBF"] = np.where(tissue, maps["CBF"] / max(normal, 1e-6), 0).astype(np.float32)
    voxel_ml = acq.voxel_volume_ml
    core, tmax6, tmax10 = stroke.lesion_masks(
        maps["CBF"], maps["Tmax"], tissue, normal, voxel_ml, p, min(acq.pixel_spacing_mm)
    )
    volumes = stroke.stroke_volumes(core, tmax6, tmax10, voxel_ml, p)
    report = p.as_report()
    report.update(
        {
            "aif_partial_volume_scale": scale,
            "noise_sigma_hu": noise,
            "baseline_frames": float(baseline_frames),
            "resample_interval_s": grid.dt_s,
            "temporal_components": float(profiles.basis.shape[1]),
        }
    )
    if p.model_based_flow:  # the residue shapes' prior the fit used
        report.update(
            {
                f"residue_prior_{name}": w
                for name, w in zip(parametric.SHAPES, model.shape_prior, strict=True)
            }
        )
    return PerfusionResult(
        maps=maps,
        tissue_mask=tissue,
        core_mask=core,
        tmax6_mask=tmax6,
        tmax10_mask=tmax10,
        aif=aif_curve,
        vof=vof_curve,
        volumes=volumes,
        normal_cbf=normal,
        parameters=report,
        algorithm=ALGORITHM,
        warnings=tuple(warnings),
    )


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
