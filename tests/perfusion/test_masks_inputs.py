"""Masks exclude planted CSF, bone and vessels; the AIF finder finds the planted artery."""

import numpy as np
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
