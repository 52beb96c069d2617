"""End to end on the default phantom, against its truth (REQUIREMENTS units)."""

import numpy as np
import pytest
from scipy import ndimage

from ctp_node.perfusion import (
    MAP_UNITS,
    Acquisition,
    AcquisitionTooShortError,
    NoContrastError,
    PerfusionError,
    PerfusionParameters,
    compute_perfusion,
)
from ctp_node.phantom import make_phantom
from ctp_node.phantom.families import FamilySpec, make_family_phantom


@pytest.fixture(scope="module")
def phantom_and_result():
    ph = make_phantom()
    return ph, compute_perfusion(ph.acquisition)


def _block_means(result, truth, name):
    labels = truth.region_labels
    eroded = np.zeros_like(labels)
    for z in range(labels.shape[0]):
        for lab in np.unique(labels[z])[1:]:
            eroded[z][ndimage.binary_erosion(labels[z] == lab, iterations=2)] = lab
    idx = np.arange(1, truth.region_values.shape[0] + 1)
    return ndimage.mean(result.maps[name], eroded, idx)


def test_maps_and_contract(phantom_and_result) -> None:
    ph, res = phantom_and_result
    for name in MAP_UNITS:
        m = res.maps[name]
        assert m.dtype == np.float32 and m.shape == ph.acquisition.hu.shape[1:]
        assert np.all(m[~res.tissue_mask] == 0)
    assert res.aif.selection == "automatic" and res.vof is not None
    assert res.algorithm.startswith("ctp-node")
    assert all(isinstance(v, float) for v in res.parameters.values())
    assert res.parameters["processing_block_voxels"] == 1.0  # 1.72 mm pixels are not merged


def test_every_map_is_physical_tmax_included(phantom_and_result) -> None:
    """No negative value in any output map: Tmax, the time of the residue's maximum after the
    bolus reaches the AIF's artery, is not below 0 (the fit's delay may be, down to −3 s,
    for noise around 0 or tissue reached before that artery)."""
    _, res = phantom_and_result
    for name in MAP_UNITS:
        assert res.maps[name].min() >= 0, name


def test_accuracy_against_truth(phantom_and_result) -> None:
    ph, res = phantom_and_result
    tv = ph.truth.region_values
    cbf = _block_means(res, ph.truth, "CBF")
    cbv = _block_means(res, ph.truth, "CBV")
    tmax = _block_means(res, ph.truth, "Tmax")
    mtt = _block_means(res, ph.truth, "MTT")
    # Issue 3 targets at σ = 5 HU.
    assert np.median(np.abs(cbf / tv[:, 0] - 1)) < 0.10
    assert np.median(np.abs(mtt / tv[:, 2] - 1)) < 0.10
    assert np.median(np.abs(cbv / tv[:, 1] - 1)) < 0.10
    assert np.median(np.abs(tmax - tv[:, 3])) < 1.0
    d0, d5 = tv[:, 3] == 0, tv[:, 3] == tv[:, 3].max()
    assert 0.9 < np.mean(cbf[d5] / cbf[d0]) < 1.1
    assert res.volumes.tmax6_ml == pytest.approx(ph.truth.tmax6_ml, rel=0.25)


def test_tmax_from_the_pooled_model_fit_is_nearer_the_truth_than_the_residue_onset(
    phantom_and_result,
) -> None:
    """Tmax is the delay of the model fitted to the voxel's pool of like curves; the
    deconvolved residue's own onset, from one noisy curve, scatters twice as far or more."""
    from ctp_node.perfusion import PerfusionParameters

    ph, res = phantom_and_result
    onset = compute_perfusion(ph.acquisition, PerfusionParameters(tmax_from_model=False))
    inside = (ph.truth.region_labels > 0) & res.tissue_mask
    error = {
        name: np.abs(r.maps["Tmax"] - ph.truth.delay)[inside]
        for name, r in (("model", res), ("onset", onset))
    }
    assert np.percentile(error["model"], 90) < 0.5 * np.percentile(error["onset"], 90)
    assert np.median(error["model"]) < np.median(error["onset"])


def test_manual_aif_is_used(phantom_and_result) -> None:
    ph, _res = phantom_and_result
    z, y, x = (int(v) for v in np.argwhere(ph.truth.artery_mask)[0])
    manual = compute_perfusion(ph.acquisition, aif_zyx=(z, y, x))
    assert manual.aif.selection == "manual"
    assert (manual.aif.voxels_zyx == [z, y, x]).all(axis=1).any()


def test_manual_vof_at_the_sinus_gives_the_automatic_scale(phantom_and_result) -> None:
    """A person's VOF placed on the voxel the automatic selection found: it is used, and the
    partial-volume scale agrees with the automatic one (same vein, same measure); placed
    beside the vein, it does not (the test can tell a wrong location)."""
    ph, res = phantom_and_result
    z, y, x = (int(v) for v in res.vof.voxels_zyx[0])
    manual = compute_perfusion(ph.acquisition, vof_zyx=(z, y, x))
    assert manual.vof.selection == "manual"
    assert (manual.vof.voxels_zyx == [z, y, x]).all(axis=1).any()
    automatic = res.parameters["aif_partial_volume_scale"]
    assert manual.parameters["aif_partial_volume_scale"] == pytest.approx(automatic, rel=0.03)
    beside = compute_perfusion(ph.acquisition, vof_zyx=(z, y, x + 3))
    assert beside.parameters["aif_partial_volume_scale"] < 0.9 * automatic


def test_no_contrast_and_short_scan_are_explained() -> None:
    ph = make_phantom()
    acq = ph.acquisition
    flat = Acquisition(
        hu=np.repeat(acq.hu[:1], acq.hu.shape[0], axis=0),
        times_s=acq.times_s,
        pixel_spacing_mm=acq.pixel_spacing_mm,
        slice_spacing_mm=acq.slice_spacing_mm,
    )
    with pytest.raises(NoContrastError, match="No contrast"):
        compute_perfusion(flat)
    short = Acquisition(
        hu=acq.hu[:6],
        times_s=acq.times_s[:6],
        pixel_spacing_mm=acq.pixel_spacing_mm,
        slice_spacing_mm=acq.slice_spacing_mm,
    )
    with pytest.raises(AcquisitionTooShortError) as err:
        compute_perfusion(short)
    assert isinstance(err.value, PerfusionError) and "time points" in str(err.value)


def test_input_is_not_modified_when_already_on_the_grid() -> None:
    from ctp_node.phantom import PhantomSpec

    ph = make_phantom(
        PhantomSpec(interval_s=1.0, duration_s=50.0, slices=4, matrix=96, pixel_spacing_mm=2.3)
    )
    before = ph.acquisition.hu.copy()
    res = compute_perfusion(ph.acquisition)
    assert np.array_equal(before, ph.acquisition.hu)
    assert res.volumes.tmax6_ml == pytest.approx(ph.truth.tmax6_ml, rel=0.3)


def test_the_peaks_truncation_correction_runs_only_where_the_peak_is_the_flow(
    monkeypatch,
) -> None:
    """The oSVD peak's truncation-bias correction (a simulation with the study's input) is
    computed only without the model fit, whose amplitude replaces the peak as the flow."""
    from ctp_node.perfusion.residues import stage
    from ctp_node.phantom import PhantomSpec

    ph = make_phantom(PhantomSpec(slices=2, matrix=64, pixel_spacing_mm=3.4))
    calls = []
    simulate = stage.sampled_peak_ratio
    monkeypatch.setattr(
        stage, "sampled_peak_ratio", lambda *a, **k: calls.append(1) or simulate(*a, **k)
    )
    compute_perfusion(ph.acquisition)
    assert calls == []
    compute_perfusion(ph.acquisition, PerfusionParameters(model_based_flow=False))
    assert calls == [1]


def test_shuttle_slices_use_their_own_times() -> None:
    """Odd slices acquired 1 s after even ones (toggling table): maps still match the truth."""
    from dataclasses import replace

    from ctp_node.phantom import PhantomSpec

    ph = make_phantom(PhantomSpec(slice_offset_s=1.0, noise_hu=0.0))
    st = ph.acquisition.slice_times_s
    assert np.allclose(st[:, 1] - st[:, 0], 1.0)
    res = compute_perfusion(ph.acquisition)
    tv = ph.truth.region_values
    cbf = _block_means(res, ph.truth, "CBF")
    tmax = _block_means(res, ph.truth, "Tmax")
    assert np.median(np.abs(cbf / tv[:, 0] - 1)) < 0.10
    assert np.median(np.abs(tmax - tv[:, 3])) < 0.5
    # Ignoring the slice times puts half the slices' delays 1 s off (the even or the odd ones,
    # as the AIF's slice falls): 0.5 s on average.
    blind = compute_perfusion(replace(ph.acquisition, slice_times_s=None))
    inside = ph.truth.region_labels > 0
    err_own = np.abs(res.maps["Tmax"][inside] - ph.truth.delay[inside]).mean()
    err_blind = np.abs(blind.maps["Tmax"][inside] - ph.truth.delay[inside]).mean()
    assert err_blind > err_own + 0.3


def test_linear_residue_flow_within_target() -> None:
    """The flow is not tied to an exponential residue (issue 3: linear within 15 %)."""
    from ctp_node.phantom import PhantomSpec

    ph = make_phantom(PhantomSpec(residue="linear"))
    res = compute_perfusion(ph.acquisition)
    cbf = _block_means(res, ph.truth, "CBF")
    assert np.median(np.abs(cbf / ph.truth.region_values[:, 0] - 1)) < 0.15


@pytest.mark.parametrize("seed", [0, 7])
def test_core_volume_against_truth(seed: int) -> None:
    """Core (rCBF < 30 %) at σ = 5 HU against the phantom's planted core, within the ±15 % of
    issue 3, on the two seeds this test has always used. Over ten seeds 9 of 10 are within
    (``bench/accuracy.py --seeds``), so a change that breaks this is a real loss."""
    from ctp_node.phantom import PhantomSpec

    ph = make_phantom(PhantomSpec(noise_hu=5.0, seed=seed))
    res = compute_perfusion(ph.acquisition)
    assert res.volumes.core_ml == pytest.approx(ph.truth.core_ml, rel=0.15)
    assert res.volumes.tmax6_ml == pytest.approx(ph.truth.tmax6_ml, rel=0.10)


@pytest.mark.parametrize("seed", [1, 4])
def test_the_cores_flow_does_not_follow_its_baselines_error(seed: int) -> None:
    """Each curve is its frames minus the mean of the frames before contrast; that mean's noise
    (σ 5 / √N_b HU, as high as the core's whole enhancement) shifts the curve. With each
    voxel's baseline a parameter of the model fit (``model_free_baseline``, off by default),
    the core voxels' CBF is independent of their baseline frames' noise (measured against the
    noiseless phantom), and on these two seeds, where taking the baseline as known (the
    default) reads the core −18 % and −11 %, the core is within ±15 %."""
    from dataclasses import replace

    from ctp_node.perfusion.prepare.stage import prepare
    from ctp_node.phantom import PhantomSpec

    noisy = make_phantom(PhantomSpec(noise_hu=5.0, seed=seed))
    clean = make_phantom(PhantomSpec(noise_hu=0.0, seed=seed))
    frames = prepare(noisy.acquisition, PerfusionParameters()).baseline_frames
    error = (noisy.acquisition.hu[:frames] - clean.acquisition.hu[:frames]).mean(axis=0)
    core = noisy.truth.core_mask
    correlation = {}
    for free in (True, False):
        params = replace(PerfusionParameters(), model_free_baseline=free)
        res = compute_perfusion(noisy.acquisition, params)
        correlation[free] = np.corrcoef(-error[core], res.maps["CBF"][core])[0, 1]
        if free:
            assert res.volumes.core_ml == pytest.approx(noisy.truth.core_ml, rel=0.15)
    assert correlation[False] > 0.2 and abs(correlation[True]) < 0.1


def test_a_lesion_cut_short_by_the_end_of_the_acquisition_is_mapped_and_warned(
    phantom_and_result,
) -> None:
    """The share of each voxel's bolus passage the acquisition saw (``passage_seen``): on the
    default phantom (60 s) no warning; on 50 s at 1 s with a lesion delayed 7 s and MTTs of
    8–14 s (the third-party phantom's design, issue 33), most of the Tmax > 6 s region saw
    less than 80 % of its passage and the result warns, naming the volume."""
    _, res = phantom_and_result
    seen = res.maps["passage_seen"][res.tissue_mask]
    assert 0 <= seen.min() and seen.max() <= 1 and np.median(seen) > 0.95
    assert not any("passage" in w for w in res.warnings)
    spec = FamilySpec(layout="stroke", residue="plateau_exp", arterial_input="recirculating")
    short = make_family_phantom(spec)
    cut = compute_perfusion(short.acquisition)
    lesion = short.truth.tmax6_mask & cut.tissue_mask
    assert np.mean(cut.maps["passage_seen"][lesion] < 0.8) > 0.5
    assert np.median(cut.maps["passage_seen"][cut.tissue_mask & ~lesion]) > 0.9
    (warning,) = [w for w in cut.warnings if "passage" in w]
    assert "Tmax > 6 s region" in warning and " ml (" in warning


def test_values_the_acquisition_cannot_support_are_marked(phantom_and_result) -> None:
    """CBV and MTT of voxels that saw less than half their bolus passage, and TTP where the
    curve peaks on the last image, are ``unsupported`` (NaN in :meth:`reported`); the rest keep
    their values. The third-party design cut to 25 s, without noise (so that only the
    truncation errs): the marked voxels are those whose CBV the model misses most (measured
    against the phantom's truth; session 30 measured 40 % against 7 % for the lesion's other
    voxels), and the normal tissue is not marked. The default phantom (60 s) has none."""
    _, res = phantom_and_result
    assert not any(mask.any() for mask in res.unsupported.values())
    spec = FamilySpec(
        layout="stroke",
        residue="plateau_exp",
        arterial_input="recirculating",
        frames=25,
        noise_hu=0.0,
    )
    short = make_family_phantom(spec)
    cut = compute_perfusion(short.acquisition)
    marked = cut.unsupported["CBV"]
    assert np.array_equal(marked, cut.unsupported["MTT"]) and "CBF" not in cut.unsupported
    assert not (marked & ~cut.tissue_mask).any()
    lesion = short.truth.tmax6_mask & cut.tissue_mask
    assert marked[lesion].mean() > 0.3 and marked[cut.tissue_mask & ~lesion].mean() < 0.01
    labels = short.truth.region_labels
    true_cbv = np.zeros(labels.shape)
    true_cbv[labels > 0] = short.truth.region_values[labels[labels > 0] - 1, 1]
    error = np.abs(cut.maps["CBV"] / np.where(true_cbv > 0, true_cbv, np.nan) - 1)
    assert np.nanmedian(error[marked]) > 3 * np.nanmedian(error[lesion & ~marked])
    (warning,) = [w for w in cut.warnings if "passage" in w]
    assert "not reported (NaN in the Parametric Maps" in warning
    reported = cut.reported("CBV")
    assert np.isnan(reported[marked]).all() and np.isfinite(reported[~marked]).all()
    ttp_marked = cut.unsupported["TTP"]
    assert ttp_marked.any()
    last_s = float(cut.maps["TTP"][cut.tissue_mask].max())
    assert np.array_equal(ttp_marked, cut.tissue_mask & (cut.maps["TTP"] >= last_s - 1e-3))
