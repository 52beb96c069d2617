"""Masks exclude planted CSF, bone and vessels; the AIF finder finds the planted artery."""

import numpy as np
import pytest
from scipy import ndimage

from ctp_node.perfusion.inputs.selection import select_arterial
from ctp_node.perfusion.prepare.features import curve_features, noise_sigma_hu
from ctp_node.perfusion.prepare.masks import intracranial_mask, parenchyma_mask
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


def test_the_venous_voxels_are_chosen_without_favouring_a_low_baseline() -> None:
    """A sinus of identical voxels in noise: chosen by their area (or their peak above the
    baseline), the VOF is made of the voxels whose baseline noise happened to be low, and its
    area — the partial-volume scale of every flow — reads high. Chosen by the attenuation at
    the peak, which no baseline frame enters, its area is unbiased."""
    from ctp_node.perfusion.inputs.selection import select_venous
    from ctp_node.perfusion.prepare.features import vessel_features

    times = np.arange(0.0, 60.0, 1.5)
    lag = np.clip(times - 14.0, 0.0, None)
    venous = 300.0 * (lag / 6.0) ** 3 * np.exp(3.0 * (1.0 - lag / 6.0))  # peaks at 20 s
    artery_ttp = 14.0
    baseline_frames = 5
    errors: dict[str, list[float]] = {"area": [], "attenuation": []}
    for seed in range(8):
        rng = np.random.default_rng(seed)
        hu = 40.0 + venous[:, None, None, None] + rng.normal(0, 8.0, (times.size, 1, 24, 24))
        hu = hu.astype(np.float32)
        baseline = hu[:baseline_frames].mean(axis=0)
        candidates = np.ones((1, 24, 24), bool)
        feats = vessel_features(hu, baseline, candidates, times[:, None], times)
        chosen = {
            "attenuation": select_venous(feats, candidates, 8.0, artery_ttp, 6, baseline),
            "area": np.column_stack(
                np.unravel_index(
                    np.argsort(ndimage.uniform_filter(feats.area_hu_s, (1, 3, 3)).ravel())[-6:],
                    feats.area_hu_s.shape,
                )
            ),
        }
        for name, voxels in chosen.items():
            z, y, x = voxels.T
            curve = (hu[:, z, y, x] - baseline[z, y, x]).mean(axis=1)
            errors[name].append(np.trapezoid(curve, times) / np.trapezoid(venous, times) - 1)
    assert np.mean(errors["area"]) > 0.02  # the bias this is about
    assert abs(np.mean(errors["attenuation"])) < 0.3 * np.mean(errors["area"])
