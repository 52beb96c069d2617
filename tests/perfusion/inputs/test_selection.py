"""The automatic inputs: the AIF finder finds the planted artery (and avoids the flagged side);
the VOF is chosen without favouring a low baseline."""

import numpy as np
from scipy import ndimage

from ctp_node.perfusion.inputs.selection import select_arterial, select_venous
from ctp_node.perfusion.prepare.features import curve_features, noise_sigma_hu, vessel_features
from ctp_node.perfusion.prepare.masks import intracranial_mask
from ctp_node.phantom import PhantomSpec, make_phantom


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


def test_the_venous_voxels_are_chosen_without_favouring_a_low_baseline() -> None:
    """A sinus of identical voxels in noise: chosen by their area (or their peak above the
    baseline), the VOF is made of the voxels whose baseline noise happened to be low, and its
    area — the partial-volume scale of every flow — reads high. Chosen by the attenuation at
    the peak, which no baseline frame enters, its area is unbiased."""
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
