"""Masks exclude planted CSF, bone and vessels; the AIF finder finds the planted artery."""

import numpy as np
import pytest
from scipy import ndimage

from ctp_node.perfusion import PhantomSpec, make_phantom
from ctp_node.perfusion.inputs import curve_features, noise_sigma_hu, select_arterial
from ctp_node.perfusion.masks import intracranial_mask, parenchyma_mask


def test_parenchyma_excludes_csf_bone_and_air() -> None:
    ph = make_phantom(PhantomSpec(slices=4))
    base = ph.acquisition.hu[:3].mean(axis=0)
    mask = parenchyma_mask(base, 15.0, 70.0)
    truth = ph.truth
    # CSF is excluded except at most a partial-volume rim where it touches tissue.
    assert not (mask & ndimage.binary_erosion(truth.csf_mask)).any()
    assert (mask & truth.csf_mask).sum() < 0.1 * truth.csf_mask.sum()
    assert not mask[base > 300].any()
    assert mask[truth.tissue_mask].mean() > 0.9


def test_aif_finder_finds_planted_artery() -> None:
    ph = make_phantom(PhantomSpec(slices=4, noise_hu=8.0, seed=3))
    hu = ph.acquisition.hu
    conc = hu - hu[:3].mean(axis=0)
    feats = curve_features(conc, 1.5)
    base = hu[:3].mean(axis=0)
    candidates = intracranial_mask(base) & (base > 5) & (base < 150)
    noise = noise_sigma_hu(conc, ph.truth.tissue_mask)
    assert 5.0 < noise < 12.0
    voxels = select_arterial(feats, candidates, noise, 4)
    hit = ph.truth.artery_mask[voxels[:, 0], voxels[:, 1], voxels[:, 2]]
    assert hit.all()
    # The stroke-side artery (delayed, dispersed) is avoided when its side is flagged.
    x = np.arange(hu.shape[3])
    avoid = np.broadcast_to(x > hu.shape[3] / 2, base.shape)
    voxels = select_arterial(feats, candidates, noise, 4, avoid)
    assert np.all(voxels[:, 2] < hu.shape[3] / 2)


def _skull_slice(n: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A slice of white matter (28 HU) in a bone ring, and the disc inside the ring."""
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    radius = np.hypot(yy, xx)
    image = np.full((n, n), -1000.0)
    image[radius < 44] = 1200.0
    image[radius < 40] = 28.0
    return image, radius < 36


def test_a_one_voxel_sulcus_stays_csf_when_the_baseline_is_quiet() -> None:
    image, inner = _skull_slice()
    sulcus = np.zeros_like(inner)
    sulcus[20:76, 48] = True
    image[sulcus] = 5.0
    rng = np.random.default_rng(0)
    baseline = (image + rng.normal(0.0, 2.0, image.shape))[None]
    quiet = parenchyma_mask(baseline, 15.0, 70.0, baseline_noise_hu=2.0)[0]
    smoothed = parenchyma_mask(baseline, 15.0, 70.0)[0]
    # Its 3 × 3 mean (≈ 20 HU) reads as tissue; its own attenuation does not.
    assert smoothed[sulcus].mean() > 0.5
    assert quiet[sulcus].mean() < 0.05
    assert quiet[inner & ~ndimage.binary_dilation(sulcus, iterations=2)].mean() > 0.99
    # A noisy baseline is still judged on 3 × 3 means (no holes punched by noise).
    noisy = (image + rng.normal(0.0, 8.0, image.shape))[None]
    tissue = inner & ~ndimage.binary_dilation(sulcus, iterations=2)
    assert parenchyma_mask(noisy, 15.0, 70.0, baseline_noise_hu=8.0)[0][tissue].mean() > 0.98


def test_noise_of_window_means_reveals_spatially_correlated_noise() -> None:
    rng = np.random.default_rng(1)
    white = rng.normal(0.0, 6.0, (30, 80, 80))
    blurred = ndimage.gaussian_filter(rng.normal(size=(30, 80, 80)), (0, 0.7, 0.7))
    correlated = 6.0 * blurred / blurred.std()
    mask = np.zeros((80, 80), bool)
    mask[10:70, 10:70] = True
    for noise in (white, correlated):
        assert noise_sigma_hu(noise, mask) == pytest.approx(6.0, rel=0.05)
    # Means of 3 × 3 independent voxels have σ/3; correlated neighbours average out less.
    assert 3 * noise_sigma_hu(white, mask, window=3) == pytest.approx(6.0, rel=0.08)
    assert 3 * noise_sigma_hu(correlated, mask, window=3) > 1.6 * 6.0
