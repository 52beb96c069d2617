"""The tumour profile's stage: the engine measures the leak, removes it before deconvolution,
and finds the enhancing region (issue 34). Scored against the leakage phantom's truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ctp_node.perfusion import PerfusionParameters, compute_perfusion
from ctp_node.perfusion.permeability.stage import Leakage, enhancing_region
from ctp_node.phantom import PhantomSpec, make_phantom
from ctp_node.phantom.leakage import LeakageSpec, make_leakage_phantom

#: Issue 34's targets at σ 5 HU: median |relative error| of the tile means, K^trans and the
#: leakage-corrected CBV.
KTRANS_TARGET, CBV_TARGET = 0.15, 0.10
#: Tile margin left out of the tile means, voxels (as bench/permeability.py).
ERODE = 2


def tile_means(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean of ``image`` in every tile of the phantom, its margin left out."""
    eroded = np.stack([ndimage.grey_erosion(z, size=2 * ERODE + 1) * (z > 0) for z in labels])
    return np.asarray(ndimage.mean(image, eroded, np.arange(1, labels.max() + 1)))


@pytest.fixture(scope="module")
def tumour():
    """The two-compartment phantom (v_e 20 mL/100 g: back-flux), σ 5, 150 s, computed with
    and without the permeability stage."""
    phantom = make_leakage_phantom(
        LeakageSpec(model="two_compartment", noise_hu=5.0, matrix=128, slices=2)
    )
    with_leak = compute_perfusion(phantom.acquisition, PerfusionParameters(permeability=True))
    plain = compute_perfusion(phantom.acquisition, PerfusionParameters())
    return phantom, with_leak, plain


def test_ktrans_and_corrected_cbv_meet_the_targets(tumour) -> None:
    phantom, result, _ = tumour
    truth = phantom.truth
    k_true, cbv_true = truth.region_values[:, 0], truth.region_values[:, 1]
    leaking = k_true > 0
    k_error = tile_means(result.maps["Ktrans"], truth.region_labels)[leaking] / k_true[leaking]
    cbv_error = tile_means(result.maps["CBV"], truth.region_labels) / cbv_true
    assert np.median(np.abs(k_error - 1)) <= KTRANS_TARGET
    assert np.median(np.abs(cbv_error - 1)) <= CBV_TARGET
    # Every tile stays tissue: the leak no longer makes a tumour look like a vessel.
    assert result.tissue_mask[truth.region_labels > 0].mean() > 0.95


def test_ktrans_follows_the_configured_constants(tumour) -> None:
    """A source without haematocrit (its arterial curve is the plasma's) and a density of 1:
    K^trans = slope · 6000 · (1 − Hct) / ρ scales by (1.04 / 1) / (1 − 0.45) against the
    defaults, the fit itself unchanged."""
    phantom, result, _ = tumour
    plain = PerfusionParameters(
        permeability=True,
        brain_density_g_ml=1.0,
        hematocrit_factor=1.0,
        large_vessel_hematocrit=0.0,
    )
    other = compute_perfusion(phantom.acquisition, plain)
    leaking = phantom.truth.ktrans >= 4.0
    ratio = np.median(other.maps["Ktrans"][leaking] / result.maps["Ktrans"][leaking])
    assert ratio == pytest.approx(1.04 / (1 - 0.45), rel=0.01)
    with pytest.raises(ValueError, match="large_vessel_hematocrit"):
        PerfusionParameters(large_vessel_hematocrit=1.0)


def test_without_the_stage_the_leak_reads_as_blood(tumour) -> None:
    """The same study computed as a stroke: the leaking tiles' CBV is far off (or the tiles
    are dropped as vessels), which is what the stage corrects."""
    phantom, result, plain = tumour
    truth = phantom.truth
    strong = truth.region_values[:, 0] >= 4.0
    cbv_true = truth.region_values[strong, 1]
    corrected = tile_means(result.maps["CBV"], truth.region_labels)[strong] / cbv_true - 1
    uncorrected = tile_means(plain.maps["CBV"], truth.region_labels)[strong] / cbv_true - 1
    assert np.median(np.abs(uncorrected)) > 4 * np.median(np.abs(corrected))
    assert plain.permeability is None and "Ktrans" not in plain.maps


def test_the_enhancing_region_is_the_leaking_tissue(tumour) -> None:
    """Tiles leaking 4 mL/100g/min or more are in the region; tissue that does not leak
    (background and K^trans 0 tiles) almost never is."""
    phantom, result, _ = tumour
    truth = phantom.truth
    region = result.permeability.enhancing_mask
    assert region[truth.ktrans >= 4.0].mean() > 0.95
    assert region[truth.tissue_mask & (truth.ktrans == 0)].mean() < 0.005
    assert result.permeability.enhancing_ml == pytest.approx(
        region.sum() * phantom.acquisition.voxel_volume_ml
    )


def test_a_short_acquisition_gets_no_ktrans_and_says_why() -> None:
    """A 36 s stroke acquisition has too few images after the first pass: no K^trans, a
    warning, and the maps of the stroke profile."""
    spec = PhantomSpec(slices=1, noise_hu=0.0, matrix=96, duration_s=36.0)
    acquisition = make_phantom(spec).acquisition
    asked = compute_perfusion(acquisition, PerfusionParameters(permeability=True))
    plain = compute_perfusion(acquisition)
    assert asked.permeability is None and "Ktrans" not in asked.maps
    assert any(w.startswith("No permeability (K^trans) map:") for w in asked.warnings)
    np.testing.assert_array_equal(asked.maps["CBF"], plain.maps["CBF"])


def test_enhancing_region_needs_significance_size_and_the_minimum() -> None:
    ktrans = np.zeros((1, 12, 12), np.float32)
    se = np.full_like(ktrans, 0.5)
    ktrans[0, 1:5, 1:5] = 3.0  # 16 voxels, 6 standard errors: in
    ktrans[0, 8:11, 8:11] = 1.2  # 9 voxels, 2.4 standard errors: out
    ktrans[0, 1, 10] = 5.0  # one voxel: too small a group
    leakage = Leakage(ktrans, se, 30.0, 20)
    tissue = np.ones_like(ktrans, bool)
    p = PerfusionParameters(enhancing_min_volume_ml=0.05)
    region = enhancing_region(leakage, tissue, voxel_volume_ml=0.005, p=p)
    assert region[0, 1:5, 1:5].all() and region.sum() == 16
    lenient = PerfusionParameters(enhancing_significance=2.0, enhancing_min_volume_ml=0.0)
    assert enhancing_region(leakage, tissue, 0.005, lenient).sum() == 16 + 9 + 1


@pytest.fixture(scope="module")
def no_leak():
    """The stroke phantom (its arterial curve falls back to 0, it has a sinus) over 120 s at
    σ 5: nothing leaks, and the late phase cannot measure a leak well."""
    phantom = make_phantom(PhantomSpec(noise_hu=5.0, duration_s=120.0, slices=4))
    asked = compute_perfusion(phantom.acquisition, PerfusionParameters(permeability=True))
    return phantom, asked, compute_perfusion(phantom.acquisition)


def test_the_standard_error_holds_where_the_late_phase_says_little(no_leak) -> None:
    """K^trans / SE over tissue that does not leak is a standard normal: the baseline's noise,
    which a flat late ∫C_a cannot tell from a leak, is in the SE (without it |z| > 3 in 16 % of
    the voxels); the enhancing region is empty."""
    phantom, asked, _ = no_leak
    tissue = asked.tissue_mask & phantom.truth.tissue_mask
    ktrans = asked.maps["Ktrans"][tissue]
    assert np.percentile(np.abs(ktrans), 99) > 1.0  # the K^trans map is noisy here
    assert asked.permeability.enhancing_ml == 0.0


def test_without_a_leak_the_stage_leaves_the_maps_alone(no_leak) -> None:
    """The leak is removed only where it is clearly there: the maps, the venous scaling of the
    arterial input and the stroke volumes are those of the stroke profile, to the noise."""
    _, asked, plain = no_leak
    both = asked.tissue_mask & plain.tissue_mask
    for name in ("CBF", "CBV", "MTT"):
        ratio = np.median(asked.maps[name][both] / np.maximum(plain.maps[name][both], 1e-6))
        assert abs(ratio - 1) < 0.02, name
    scale = "aif_partial_volume_scale"
    assert asked.parameters[scale] == pytest.approx(plain.parameters[scale], rel=0.01)
    assert asked.volumes.core_ml == pytest.approx(plain.volumes.core_ml, rel=0.05)
