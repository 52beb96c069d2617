"""Constants, thresholds and algorithm settings of the perfusion engine.

Every field is a plain float/int/bool/str whose unit is in its name or docstring; the node's YAML
``perfusion:`` section maps onto these names one to one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class PerfusionParameters:
    """Settings of :func:`ctp_node.perfusion.engine.compute_perfusion`.

    Each entry says what the setting means, its unit and why it exists or has its value. How a
    value was tuned (engine versions, phantom figures) is in ``docs/measurements.md``, section
    "Engine settings: how each was tuned", one heading per setting (linked as "Tuning:").

    Attributes
    ----------
    brain_density_g_ml : brain tissue density ρ in g/mL.
    hematocrit_factor : k_H = (1 − Hct_large) / (1 − Hct_small) = (1 − 0.45) / (1 − 0.25), unitless.
    core_rcbf_threshold : ischaemic core is tissue with CBF below this fraction of the normal
        reference CBF (unitless; 0.30 = 30 %).
    core_reference_tmax_s : the normal reference CBF is the CBF of tissue whose Tmax is below
        this value, in s (tissue with a normal bolus delay).
    core_reference_mean : the reference is that tissue's mean CBF (grey and white matter
        together, as the contralateral-hemisphere mean of the studies behind the 30 %
        threshold, e.g. Campbell 2011); False: its median.
    core_tmax_min_s : the core is counted only in tissue whose local median Tmax (over the
        tissue of an in-plane square ``core_tmax_window_mm`` wide) is at least this, in s;
        0 = everywhere. Acute core is hypoperfused tissue: low flow with a timely bolus is
        noise in faint white matter (or an old infarct), not acute core — as the
        "rCBF < 30 % within the delayed region" core of Lin et al. (Radiology 2016). 4 s, the
        reference tissue's bound, so that no tissue is both reference and core. The window's
        median, not each voxel's Tmax, because a core's own Tmax, from its faintest curves,
        scatters widely. Tuning: docs/measurements.md#core_tmax_min_s.
    core_tmax_window_mm : width of that window, in mm: an odd number of pixels, as
        ``lesion_majority_mm`` (9 at 1.7 mm pixels, 17 at 0.9 mm), so that it covers the same
        tissue whatever the pixel size. Tuning: docs/measurements.md#core_tmax_window_mm.
    tmax_threshold_s : hypoperfusion is tissue with Tmax above this, in s.
    tmax_severe_threshold_s : severe hypoperfusion (HIR numerator), in s.
    target_core_max_ml : DEFUSE 3 target mismatch: core volume below this, in mL.
    target_mismatch_min_ml : DEFUSE 3: mismatch volume at least this, in mL.
    target_mismatch_ratio_min : DEFUSE 3: hypoperfusion / core at least this, unitless.
    min_component_ml : connected lesion components (core, Tmax masks) smaller than this, in mL,
        are removed as noise. 0.1 mL is well below any clinically relevant lesion (a 6 mm
        lacune is 0.11 mL) and well above voxel-scale noise speckle (0.001–0.015 mL per voxel).
    lesion_smoothing_voxels : CBF and Tmax are averaged over this many voxels square in-plane
        (tissue only) before the core and Tmax thresholds, as commercial software does, so
        that voxel noise does not fragment lesions (1 = no smoothing).
    core_bilateral_sigma_mm : before the core threshold, the relative CBF is averaged
        in-plane by an edge-preserving (bilateral) filter, :func:`stroke.edge_preserving_mean`:
        spatial Gaussian of this σ, in mm (0 = off). The filters upstream (of the curves, of
        the model fit) average a core's rim voxel with its brighter neighbours; its estimate
        then lies above the threshold though still nearer the core's level, and this filter
        draws it back. On a smooth gradient it changes nothing.
        Tuning: docs/measurements.md#core_bilateral_sigma_mm.
    core_bilateral_rcbf : that filter's range width: neighbours whose relative CBF differs
        by much more than this (weight ``exp(−(Δ/w)²)``; 0.14 = 14 % of the normal
        reference) hardly count; too wide a width merges a faint small core into its
        surround. Tuning: docs/measurements.md#core_bilateral_sigma_mm.
    core_bilateral_iterations : passes of that filter (0 = off).
        Tuning: docs/measurements.md#core_bilateral_sigma_mm.
    lesion_majority_mm : the lesion masks' majority filter (:func:`stroke.local_majority`)
        votes over the tissue of an in-plane square about this wide, in mm: an odd number of
        pixels, the largest not above ``lesion_majority_mm / pixel + 1`` (3 at 1.7 mm pixels,
        5 at 0.9 mm). In mm, not pixels: a window fixed at 3 pixels spans 2.6 mm at 0.9 mm
        pixels, where a faint white-matter curve's noise makes flecks of that size.
        Tuning: docs/measurements.md#lesion_majority_mm.
    resample_interval_s : the acquisition is interpolated onto a uniform time grid with this
        spacing, in s, before deconvolution (0 = the median spacing of the acquisition).
    oscillation_index_max : oSVD (Wu 2003): per voxel, the smallest truncation threshold whose
        residue has an oscillation index below this value is used (unitless).
    svd_threshold_min, svd_threshold_max : range of the oSVD truncation thresholds tried,
        as a fraction of the largest singular value (unitless).
    svd_threshold_steps : number of thresholds tried, spaced geometrically in that range.
    denoise_radius_voxels : in-plane radius of the time-profile bilateral filter (TIPS), voxels;
        0 disables denoising.
    denoise_spatial_sigma_mm : spatial width of the bilateral filter, in mm.
    denoise_profile_sigma_factor : the profile-similarity width is this factor times the noise
        σ of the 3 × 3 mean profiles that are compared (σ / 3, σ estimated from the baseline
        images; unitless). The distance is taken over the temporal components weighted by
        their signal share w (:func:`compress.signal_weights`). Narrow enough that infarct
        core and penumbra curves are not averaged together (a wide one blurs CBF across the
        core's edge). Tuning: docs/measurements.md#denoise_profile_sigma_factor.
    tissue_min_hu, tissue_max_hu : pre-contrast attenuation range of brain parenchyma, in HU
        (excludes air, fat, CSF and bone).
    vessel_cbv_ml_100g : voxels with a CBV above this, in mL/100 g, are large vessels and are
        excluded from the tissue (a blood volume fraction of about 20 %).
    aif_voxels : number of best-ranked voxels that define the arterial curve's shape (the
        seeds of an automatic selection; a manual one uses this many around the location).
    aif_max_voxels : an automatic AIF also averages every other vessel voxel (up to this
        many in all) whose curve is the seeds' curve scaled by partial volume to within the
        noise; equal to ``aif_voxels`` to use the seeds only.
    vof_voxels : number of voxels averaged into the venous output function.
    aif_scale_max : largest partial-volume correction factor the VOF may apply to the AIF.
    exponential_peak_correction : correct the truncation bias of max k(t) (which lowers CBF
        for short MTT) by simulating, with the study's own AIF and each voxel's threshold, how
        much truncation lowers the peak of an exponential residue with the voxel's CBV. Only
        without ``model_based_flow``: the fitted amplitude is not a truncated peak.
    model_based_flow : CBF is the amplitude F of the best fit of ``F · (AIF ⊗ R)(t − δ)`` with
        a residue R of one of the shapes of :data:`~ctp_node.perfusion.residues.model_curves.SHAPES`
        (:mod:`ctp_node.perfusion.residues.parametric`)
        instead of the maximum of the oSVD residue (biased upwards by noise, and by the
        exponential correction when the residue is not exponential). F and F · MTT come from
        the posterior over the models (F its median, see ``model_flow_median``; the volume
        its mean), not from the single best fit, so that a low curve that several models fit
        equally well is not given the flow of whichever the noise favours.
    model_pool_radius_voxels, model_pool_spatial_sigma_voxels, model_pool_iterations,
    model_pool_profile_sigma_factor : with ``model_based_flow``, each voxel's model is fitted
        to its curve pooled with its in-plane neighbours (disc of this radius, spatial
        Gaussian of this width) whose curves are alike: a time-profile bilateral filter
        repeated this many times, each pass judging likeness on the previous pass's curves, with
        a profile width of this factor times the image noise σ. Repetition sharpens tissue
        boundaries (mean shift) while the pool grows (0 iterations = each voxel on its own).
    model_pool_delay_sigma_s, model_pool_delay_median_voxels : the pool's likeness also
        counts the difference of the voxels' oSVD onsets, each smoothed by a median over this
        many voxels along x, then along y (a single voxel's onset is too noisy in faint
        tissue): a difference of ``model_pool_delay_sigma_s`` seconds weighs as much as a
        profile distance of one width (0 = ignored). Pooling curves that arrive seconds apart
        gives a dispersed curve whose fitted flow reads low (:func:`pooling.pooled`), which
        put delayed oligaemia and penumbra into the core.
        Tuning: docs/measurements.md#model_pool_delay_sigma_s.
    model_pool_baseline_sigma_hu : the pool's likeness also counts the difference of the
        voxels' attenuation before contrast: a difference of this many HU (or of 2√2 × the
        baseline image's noise, if that is more) weighs as much as a profile distance of
        ``model_pool_profile_sigma_factor`` × the noise (0 = baselines ignored). Grey and
        white matter differ by about 10 HU before contrast; a pool that mixes them reads grey
        matter low and white matter high.
        Tuning: docs/measurements.md#model_pool_baseline_sigma_hu.
    model_flow_median : with ``model_based_flow``, F is the posterior median instead of the
        mean. A faint curve's posterior has a long tail towards the high flows of sharp
        models that fit its noise; the median is not pulled up by it.
    model_own_amplitude : with ``model_based_flow``, the pool chooses each voxel's model
        (shape, MTT, delay) and the voxel's own denoised curve its amplitude F, by projection
        on that model (:func:`parametric.own_amplitude_fit`). The pooled curve's height is
        its like neighbours' mean, and at a faint curve's noise the pool reaches across
        boundaries: the faint core beside brighter penumbra read high, the thin grey-matter
        ribbon beside white matter low. Tuning: docs/measurements.md#model_own_amplitude.
    model_shape_prior_from_study : with ``model_based_flow``, the residue shapes (exponential,
        linear, box) are weighed by the prior the study's own voxels give them (expectation–
        maximisation over the voxels' likelihoods, :func:`parametric.study_shape_prior`)
        instead of equally. With equal priors, the shapes a faint curve does not have are half
        its posterior, and shape trades off against MTT: faint tissue's MTT, and its flow with
        it, read long or short depending on the noise. The study's prior is reported
        (``residue_prior_exponential`` …).
        Tuning: docs/measurements.md#model_shape_prior_from_study.
    model_mtt_smoothing_voxels : with ``model_based_flow``, the fitted MTT is averaged
        in-plane (Gaussian σ in voxels, log MTT weighed by the square of each voxel's volume;
        :func:`regularise.smooth_mtt`) and the flow is the volume over it (0 = off). A faint
        curve's MTT is its least determined parameter; the voxels with more signal around it
        pin it down. Meant to be used with ``model_shape_prior_from_study`` (alone it keeps
        the shape confusion's bias and removes the scatter that hid it).
        Tuning: docs/measurements.md#model_mtt_smoothing_voxels.
    temporal_components_min : the fewest temporal components the curves are compressed to.
        The basis is learnt from the voxels' curves, and shapes too rare to rise above the
        noise floor (the delayed, low, wide curves of a small infarct core) are distorted by
        too small a basis: narrowed, so that their flow reads low or high.
        Tuning: docs/measurements.md#temporal_components_min.
    model_based_volume : with ``model_based_flow``, CBV is the area F · MTT of the fitted
        residue instead of the area under the measured curve (matched to the signal, so less
        noisy, and not cut short when the acquisition ends before the washout does).
    model_free_baseline : with ``model_based_flow``, each voxel's baseline is a parameter of
        its model fit, not the mean of the frames before contrast taken as known
        (:mod:`ctp_node.perfusion.residues.baseline`): the maximum-likelihood fit with an
        unknown baseline, which uses every frame before the voxel's own bolus. Taken as known,
        the baseline's own error (σ / √N_b: 2.5 HU at σ 5 HU and 4 frames, an infarct core's
        whole enhancement) reads as flow: our phantom's core showed patches of doubled flow
        (core −18 % on one seed). Off by default: it trades that bias for variance in faint
        curves, and the variance costs more core volume than the bias where the noise is
        higher or spatially correlated (our phantom at σ 10 HU, the independent phantom);
        the figures are in docs/measurements.md#model_free_baseline.
    model_delay_window_s : with ``model_based_flow``, the fitted delay δ stays within this
        many seconds of the voxel's deconvolved residue onset (its Tmax); 0 leaves δ free. In
        a low curve, an earlier δ with a longer, flatter residue fits the noise as well as the
        true model does, and reads the flow low (delayed oligaemia and penumbra towards the
        core); the oSVD onset is not traded off against the residue shape, so it pins δ down
        (:func:`parametric.fit`). Tuning: docs/measurements.md#model_delay_window_s.
    tmax_from_onset : estimate the time of the residue maximum from the half-maximum of the
        rising edge of k(t) (unbiased by truncation blur for any non-increasing residue); when
        False, the time of the blurred peak itself (lags by about half the blur width).
    tmax_from_model : with ``model_based_flow``, Tmax is the fitted model's delay δ (the time
        of its residue maximum), fitted to the voxel's pool of like curves within
        ``model_delay_window_s`` of the onset, instead of the deconvolved residue's own.
        The pool's curve is less noisy than the voxel's.
        Tuning: docs/measurements.md#tmax_from_model.
    processing_pixel_mm : in-plane pixels finer than this, in mm, are averaged in blocks (2 × 2
        for 0.43–0.5 mm pixels) before the curves are analysed; maps and masks are returned on
        the acquisition's grid, where each pixel's own pre-contrast attenuation decides again
        whether it is tissue (a block astride a sulcus is tissue, its CSF pixels are not) and
        the volumes are counted (0 = never).
    worker_threads : threads for the voxel-wise work (0 = one per CPU core).
    motion_correction : register every frame rigidly (in-plane) to the head's usual position
        before analysis; frames that cannot be registered are interpolated in time.
    motion_limit_mm : a frame displaced more than this, in mm, is reported as visible motion
        (a warning in the result).
    venous_correction : scale the AIF so that its area equals the VOF's (partial-volume
        correction); when False the AIF is used as measured.
    hemispheric_asymmetry : compare each map's hemispheres (the vasospasm profile turns it on;
        :mod:`ctp_node.perfusion.asymmetry`): the mid-sagittal line from the pre-contrast
        image, per map the hemispheric means and medians, the right − left difference and the
        lower/higher ratio (``PerfusionResult.asymmetry``).
    asymmetry_time_difference_s : an MTT, TTP or Tmax map is flagged when its hemispheric
        means differ by more than this, s. 1.5 s: DCI thresholds on grey matter (MTT 5.5 s
        against a normal ~4 s, Sanelli et al., AJNR 2011); no asymmetry threshold is validated
        for vasospasm, so it is a starting point to set per site.
    asymmetry_flow_ratio : a CBF or CBV map is flagged when its lower hemispheric mean is below
        this fraction of the higher (0.8: a 20 % fall; DCI's CBF threshold 35 against ~50
        mL/100 g/min is ~30 %, diluted over a hemisphere).
    asymmetry_midline_margin_mm : tissue within this distance of the midline (falx, fissure,
        partial volume of both sides) belongs to neither hemisphere, mm.
    permeability : measure the leak across the blood-brain barrier and remove it from the
        curves before they are deconvolved (the tumour profile turns it on;
        :mod:`ctp_node.perfusion.permeability.stage`): K^trans (Patlak with back-flux, on the
        images after the first pass) and CBF, CBV and MTT of the intravascular curves. Needs
        images well after the first pass (90–150 s acquisitions); without them a warning
        says why there is no K^trans and the maps are the uncorrected ones.
    large_vessel_hematocrit : the haematocrit of the artery the arterial curve is measured in,
        unitless (0.45): iodine stays in the plasma, so K^trans (the plasma the leak clears)
        divides the arterial blood's enhancement by 1 − 0.45. ``hematocrit_factor`` is the
        ratio of the large and small vessels' plasma fractions; this is the large vessels'
        own. Set 0 for a source whose arterial curve already is the plasma's (as with
        ``hematocrit_factor`` 1 for a phantom without haematocrit).
    enhancing_ktrans_min : the smallest K^trans of the enhancing region, mL/100g/min. An
        intact barrier reads 0–0.5 (CT perfusion of normal brain); enhancing gliomas and
        metastases 2–15. 1.0 keeps noise and the normal brain's small values out.
    enhancing_significance : a voxel enters the enhancing region only when its K^trans is at
        least this many standard errors above 0 (3: about one normal voxel in 700 by chance).
    enhancing_min_volume_ml : connected groups of enhancing voxels smaller than this are left
        out of the region, mL (0.1: about 20 voxels of 1 × 1 × 5 mm, as ``min_component_ml``).
    """

    brain_density_g_ml: float = 1.04
    hematocrit_factor: float = 0.73
    core_rcbf_threshold: float = 0.30
    core_reference_tmax_s: float = 4.0
    core_reference_mean: bool = True
    core_tmax_min_s: float = 4.0
    core_tmax_window_mm: float = 15.0
    tmax_threshold_s: float = 6.0
    tmax_severe_threshold_s: float = 10.0
    target_core_max_ml: float = 70.0
    target_mismatch_min_ml: float = 15.0
    target_mismatch_ratio_min: float = 1.8
    min_component_ml: float = 0.1
    lesion_smoothing_voxels: int = 1
    core_bilateral_sigma_mm: float = 2.5
    core_bilateral_rcbf: float = 0.14
    core_bilateral_iterations: int = 3
    lesion_majority_mm: float = 5.0
    resample_interval_s: float = 1.0
    oscillation_index_max: float = 0.05
    svd_threshold_min: float = 0.02
    svd_threshold_max: float = 0.5
    svd_threshold_steps: int = 10
    denoise_radius_voxels: int = 3
    denoise_spatial_sigma_mm: float = 3.0
    denoise_profile_sigma_factor: float = 0.5
    tissue_min_hu: float = 15.0
    tissue_max_hu: float = 70.0
    vessel_cbv_ml_100g: float = 20.0
    aif_voxels: int = 6
    aif_max_voxels: int = 48
    vof_voxels: int = 6
    aif_scale_max: float = 4.0
    venous_correction: bool = True
    exponential_peak_correction: bool = True
    tmax_from_onset: bool = True
    tmax_from_model: bool = True
    model_based_flow: bool = True
    model_pool_radius_voxels: int = 6
    model_pool_spatial_sigma_voxels: float = 4.0
    model_pool_iterations: int = 5
    model_pool_profile_sigma_factor: float = 0.14
    model_pool_delay_sigma_s: float = 1.0
    model_pool_delay_median_voxels: int = 9
    model_pool_baseline_sigma_hu: float = 8.0
    model_flow_median: bool = True
    model_own_amplitude: bool = True
    model_based_volume: bool = True
    model_free_baseline: bool = False
    model_delay_window_s: float = 2.0
    model_shape_prior_from_study: bool = True
    model_mtt_smoothing_voxels: float = 1.5
    temporal_components_min: int = 16
    processing_pixel_mm: float = 1.0
    worker_threads: int = 0
    motion_correction: bool = True
    motion_limit_mm: float = 3.0
    hemispheric_asymmetry: bool = False
    asymmetry_time_difference_s: float = 1.5
    asymmetry_flow_ratio: float = 0.8
    asymmetry_midline_margin_mm: float = 2.0
    permeability: bool = False
    large_vessel_hematocrit: float = 0.45
    enhancing_ktrans_min: float = 1.0
    enhancing_significance: float = 3.0
    enhancing_min_volume_ml: float = 0.1

    def __post_init__(self) -> None:
        positive = (
            "brain_density_g_ml",
            "hematocrit_factor",
            "core_rcbf_threshold",
            "oscillation_index_max",
            "svd_threshold_min",
            "svd_threshold_max",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"perfusion parameter {name} must be positive")
        if self.svd_threshold_min > self.svd_threshold_max:
            raise ValueError("svd_threshold_min must not exceed svd_threshold_max")
        if min(self.model_pool_radius_voxels, self.model_pool_iterations) < 0:
            raise ValueError("model_pool_radius_voxels and model_pool_iterations must be ≥ 0")
        if not self.model_pool_delay_sigma_s >= 0:
            raise ValueError("model_pool_delay_sigma_s must be ≥ 0 (0 = delays ignored)")
        if not self.model_mtt_smoothing_voxels >= 0:
            raise ValueError("model_mtt_smoothing_voxels must be ≥ 0 (0 = no smoothing)")
        if (
            min(
                self.core_bilateral_sigma_mm,
                self.core_bilateral_rcbf,
                self.core_bilateral_iterations,
            )
            < 0
        ):
            raise ValueError(
                "core_bilateral_sigma_mm, core_bilateral_rcbf and core_bilateral_iterations "
                "must be ≥ 0 (0 = no edge-preserving mean before the core threshold)"
            )
        if not self.lesion_majority_mm >= 0:
            raise ValueError("lesion_majority_mm must be ≥ 0 (0 = one pixel: no filter)")
        if not self.model_pool_baseline_sigma_hu >= 0:
            raise ValueError("model_pool_baseline_sigma_hu must be ≥ 0 (0 = baselines ignored)")
        if self.model_pool_iterations > 0 and not (
            self.model_pool_spatial_sigma_voxels > 0 and self.model_pool_profile_sigma_factor > 0
        ):
            raise ValueError(
                "model_pool_spatial_sigma_voxels and model_pool_profile_sigma_factor must be "
                "positive when model_pool_iterations > 0"
            )
        if self.core_tmax_window_mm < 0 or self.core_tmax_min_s < 0:
            raise ValueError("core_tmax_window_mm and core_tmax_min_s must be ≥ 0")
        if not 0 <= self.large_vessel_hematocrit < 1:
            raise ValueError("large_vessel_hematocrit must be at least 0 and below 1")
        if self.svd_threshold_steps < 1 or self.aif_voxels < 1 or self.vof_voxels < 1:
            raise ValueError("svd_threshold_steps, aif_voxels and vof_voxels must be at least 1")

    def as_report(self) -> dict[str, float]:
        """All parameters as ``name → float`` for the report (booleans as 0/1)."""
        return {name: float(value) for name, value in asdict(self).items()}
