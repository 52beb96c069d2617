"""Masks exclude planted CSF, bone and vessels; the noise of window means reveals correlated
noise."""

import numpy as np
import pytest
from scipy import ndimage

from ctp_node.perfusion.prepare.features import noise_sigma_hu
from ctp_node.perfusion.prepare.masks import parenchyma_mask
from ctp_node.phantom import PhantomSpec, make_phantom


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
