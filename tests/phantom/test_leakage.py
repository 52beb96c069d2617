"""The leakage phantom's curves are the two-compartment model its docstring states (issue 34)."""

import numpy as np
import pytest
from scipy.integrate import cumulative_trapezoid, trapezoid

from ctp_node.phantom.leakage import (
    DENSITY_G_ML,
    FINE_DT_S,
    HEMATOCRIT_FACTOR,
    LARGE_VESSEL_HEMATOCRIT,
    LeakageSpec,
    frame_times,
    leaky_arterial_curve,
    leaky_tissue_curve,
    make_leakage_phantom,
)

SPEC = LeakageSpec(noise_hu=0.0)
#: HU of leaked tracer per HU·s of arterial (blood) curve per mL/100g/min of K^trans: the leak
#: is driven by the plasma, ρ / 6000 / (1 − Hct_large).
LEAK_SCALE = DENSITY_G_ML / 6000.0 / (1.0 - LARGE_VESSEL_HEMATOCRIT)


def test_frames_are_dense_over_the_first_pass_then_sparse() -> None:
    times = frame_times(SPEC)
    steps = np.diff(times)
    assert times[0] == 0.0 and times[-1] <= SPEC.duration_s
    assert times[-1] > SPEC.duration_s - SPEC.late_interval_s
    assert np.allclose(steps[times[1:] <= SPEC.dense_until_s], SPEC.dense_interval_s)
    assert np.allclose(steps[times[:-1] >= SPEC.dense_until_s], SPEC.late_interval_s)


def test_patlak_leak_is_the_integral_of_the_plasma_curve() -> None:
    times = np.arange(0.0, 150.0, 2.0)
    ktrans = 5.0
    leaked = leaky_tissue_curve(times, SPEC, 30.0, 5.0, ktrans) - leaky_tissue_curve(
        times, SPEC, 30.0, 5.0, 0.0
    )
    fine = np.arange(0.0, times[-1] + FINE_DT_S / 2, FINE_DT_S)
    integral = cumulative_trapezoid(leaky_arterial_curve(fine, SPEC), fine, initial=0.0)
    expected = LEAK_SCALE * ktrans * np.interp(times, fine, integral)
    # the kernel's half-cell start shifts the integral by at most half a fine step of the curve
    tolerance = LEAK_SCALE * ktrans * SPEC.aif_peak_hu * FINE_DT_S
    assert np.max(np.abs(leaked - expected)) <= tolerance
    assert leaked[-1] > 10.0  # a visible leak, HU


def test_back_flux_lowers_the_leak_and_vanishes_for_a_large_ees() -> None:
    times = np.arange(0.0, 150.0, 2.0)
    patlak = leaky_tissue_curve(times, SPEC, 30.0, 5.0, 8.0)
    tofts = LeakageSpec(noise_hu=0.0, model="two_compartment", ve_ml_100g=20.0)
    finite = leaky_tissue_curve(times, tofts, 30.0, 5.0, 8.0)
    huge = LeakageSpec(noise_hu=0.0, model="two_compartment", ve_ml_100g=1e9)
    assert np.all(finite <= patlak + 1e-9) and finite[-1] < 0.9 * patlak[-1]
    assert np.allclose(leaky_tissue_curve(times, huge, 30.0, 5.0, 8.0), patlak, atol=1e-6)


def test_truth_and_intravascular_volume() -> None:
    phantom = make_leakage_phantom(LeakageSpec(noise_hu=0.0, slices=1, matrix=160))
    truth, acq = phantom.truth, phantom.acquisition
    values = truth.region_values
    assert sorted(set(values[:, 0])) == sorted(SPEC.ktrans_ml_100g_min)
    assert np.allclose(values[:, 2], 60.0 * values[:, 1] / SPEC.mtt_s)
    tissue = acq.hu - acq.hu[0]
    arterial_area = trapezoid(truth.aif_hu, acq.times_s)
    for label, (ktrans, cbv, _) in enumerate(values, start=1):
        where = truth.region_labels == label
        assert np.all(truth.ktrans[where] == ktrans) and np.all(truth.cbv[where] == cbv)
        if ktrans == 0:  # the area ratio is the blood volume, less the tail after the last frame
            area = trapezoid(tissue[:, where][:, 0], acq.times_s)
            measured = area / arterial_area * 100.0 * HEMATOCRIT_FACTOR / DENSITY_G_ML
            tail = SPEC.mtt_s * truth.aif_hu[-1] / arterial_area
            assert measured == pytest.approx(cbv * (1 - tail), rel=0.01)
    assert not truth.tissue_mask[truth.artery_mask].any()
    assert np.allclose(truth.vp, truth.cbv * 0.75)


def test_noise_has_the_asked_sigma() -> None:
    quiet = make_leakage_phantom(LeakageSpec(noise_hu=0.0, slices=1, matrix=128))
    noisy = make_leakage_phantom(LeakageSpec(noise_hu=10.0, slices=1, matrix=128))
    diff = noisy.acquisition.hu - quiet.acquisition.hu
    assert np.std(diff) == pytest.approx(10.0, rel=0.02)
