"""The phantom looks like a real scan and its truth is self-consistent."""

import numpy as np

from ctp_node.phantom import PhantomSpec, make_phantom


def test_default_phantom_is_realistic() -> None:
    ph = make_phantom()
    acq, truth = ph.acquisition, ph.truth
    assert acq.hu.dtype == np.float32 and acq.hu.shape == (41, 8, 128, 128)
    base = acq.hu[0]
    assert base[truth.csf_mask].mean() < 15
    assert 25 < base[truth.tissue_mask].mean() < 45
    assert base[0, 0, 0] < -900  # air
    enhancement = acq.hu.max(axis=0) - base
    assert 5 < np.median(enhancement[truth.tissue_mask]) < 60
    assert enhancement[truth.artery_mask].max() > 200
    assert acq.facts.kvp == 80 and acq.facts.contrast_volume_ml == 40
    assert np.all(np.diff(acq.slice_positions_mm[:, 2]) > 0)
    # CBV = CBF · MTT / 60 in the truth maps.
    m = truth.tissue_mask
    assert np.allclose(truth.cbv[m], truth.cbf[m] * truth.mtt[m] / 60, rtol=1e-5)
    assert 0 < truth.core_ml < truth.tmax6_ml
    assert set(truth.to_dict()) >= {"core_ml", "tmax6_ml", "tmax10_ml", "mismatch_ml"}


def test_nonuniform_sampling_and_noise_option() -> None:
    ph = make_phantom(PhantomSpec(sampling="nonuniform", noise_hu=0.0, matrix=64, slices=4))
    steps = np.diff(ph.acquisition.times_s)
    assert steps.min() < steps.max() - 0.5
    assert ph.acquisition.hu.shape[1:] == (4, 64, 64)
