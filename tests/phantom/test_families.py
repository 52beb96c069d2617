"""The phantom families' truth is what their generator says it is (issue 33)."""

import numpy as np
import pytest

from ctp_node.phantom.anatomy import HU
from ctp_node.phantom.families import (
    KUDO_CBV_ML_100G,
    KUDO_MTT_S,
    STROKE_TISSUES,
    FamilySpec,
    arterial_curve,
    make_family_phantom,
    residue,
    residue_integral,
    sampled_residue,
    tissue_curve,
)

SHAPES = ("box", "linear", "exponential", "plateau_exp")
#: (ρ / k_H) / 6000: HU of tissue per HU·s of arterial curve per mL/100g/min.
SCALE = 1.04 / 0.73 / 6000.0


@pytest.mark.parametrize("shape", SHAPES)
def test_residues_integrate_to_the_mtt(shape: str) -> None:
    mtt = 7.0
    t = np.arange(0.0, 40 * mtt, 0.001)
    numeric = np.sum(residue(t + 0.0005, mtt, shape)) * 0.001  # midpoint rule
    assert numeric == pytest.approx(mtt, rel=1e-3)
    assert residue_integral(np.array([40 * mtt]), mtt, shape)[0] == pytest.approx(mtt, rel=1e-9)
    assert residue(np.array([0.0]), mtt, shape)[0] == 1.0


def test_plateau_residue_stays_up_then_falls_steeply() -> None:
    mtt = 10.0
    r = residue(np.array([0.0, 7.9, 8.0 + 2.0 * 3, 15.0]), mtt, "plateau_exp", 0.8)
    assert r[0] == r[1] == 1.0  # the plateau lasts 0.8 · MTT
    assert r[2] == pytest.approx(np.exp(-3.0))  # then e-folds every 0.2 · MTT
    exponential = residue(np.array([15.0]), mtt, "exponential")[0]
    assert r[3] < 0.2 * exponential  # at 1.5 MTT, the exponential is still above a fifth


@pytest.mark.parametrize("shape", SHAPES)
def test_sampled_residue_starts_with_a_partial_step(shape: str) -> None:
    mtt, dt = 4.0, 1.0
    r = sampled_residue(80, dt, mtt, 0.0, shape)
    assert r[0] == pytest.approx(residue_integral(np.array([0.5]), mtt, shape)[0])
    assert r[0] <= 0.5
    assert r.sum() * dt == pytest.approx(mtt, rel=1e-6)
    delayed = sampled_residue(80, dt, mtt, 0.3, shape)
    assert delayed[0] == pytest.approx(residue_integral(np.array([0.2]), mtt, shape)[0])
    assert delayed.sum() * dt == pytest.approx(mtt, rel=1e-6)


def test_box_curve_area_and_peak_follow_cbf_and_the_arterial_area() -> None:
    spec = FamilySpec(residue="box", frames=120, noise_hu=0.0)
    times = np.arange(spec.frames) * spec.interval_s
    aif_area = arterial_curve(times, spec).sum() * spec.interval_s
    cbf, mtt = 40.0, 24.0
    curve = tissue_curve(times, spec, cbf, mtt, 0.0)
    # the whole curve lies in the window: area = scale · CBF · ∫AIF · MTT
    assert curve.sum() * spec.interval_s == pytest.approx(SCALE * cbf * aif_area * mtt, rel=1e-6)
    # a box longer than the bolus holds all of it at once: peak = scale · CBF · ∫AIF
    assert curve.max() == pytest.approx(SCALE * cbf * aif_area, rel=2e-3)


def test_sampled_and_continuous_convolution_differ_at_the_first_sample() -> None:
    sampled = FamilySpec(residue="box", noise_hu=0.0)
    continuous = FamilySpec(residue="box", noise_hu=0.0, convolution="continuous")
    times = np.arange(sampled.frames) * sampled.interval_s
    aif = arterial_curve(times, sampled)
    first = int(np.flatnonzero(aif > 0)[0])
    cbf, mtt = 50.0, 6.0
    by_grid = tissue_curve(times, sampled, cbf, mtt, 0.0)
    by_time = tissue_curve(times, continuous, cbf, mtt, 0.0)
    # discrete: only the first arterial sample counts, with the residue's half step
    assert by_grid[first] == pytest.approx(SCALE * cbf * 0.5 * aif[first] * sampled.interval_s)
    # continuous: the area of the arterial curve since the arrival (box residue = 1)
    fine = np.linspace(sampled.aif_arrival_s, times[first], 2001)
    area = np.trapezoid(arterial_curve(fine, sampled), fine)
    assert by_time[first] == pytest.approx(SCALE * cbf * area, rel=2e-2)  # 0.05 s steps
    assert abs(by_grid[first] / by_time[first] - 1) > 0.2
    # later on, both are the same convolution to within a few per cent of the peak
    assert np.max(np.abs(by_grid - by_time)) < 0.1 * by_time.max()


def test_recirculating_input_peaks_at_485_hu_and_stays_at_a_quarter() -> None:
    spec = FamilySpec(arterial_input="recirculating")
    times = np.arange(spec.frames) * spec.interval_s
    aif = arterial_curve(times, spec)
    assert aif.max() == pytest.approx(spec.aif_peak_hu, rel=1e-3)
    late = aif[times >= 27.0]
    assert late.min() > 0.22 * spec.aif_peak_hu and late.max() < 0.28 * spec.aif_peak_hu


def test_kudo_phantom_holds_its_grid_and_pure_arteries() -> None:
    spec = FamilySpec(residue="linear", noise_hu=0.0, matrix=160)
    phantom = make_family_phantom(spec)
    acq, truth = phantom.acquisition, phantom.truth
    assert acq.hu.shape == (spec.frames, len(KUDO_CBV_ML_100G), 160, 160)
    assert np.allclose(np.diff(acq.times_s), 1.0)
    values = truth.region_values
    assert values.shape == (len(KUDO_CBV_ML_100G) * 49, 4)
    assert np.allclose(values[:, 0], 60.0 * values[:, 1] / values[:, 2])
    assert values[:, 0].min() == pytest.approx(2.5) and values[:, 0].max() == pytest.approx(87.5)
    assert set(np.round(values[:, 2], 6)) == set(np.round(KUDO_MTT_S, 6))
    # each tile's voxels carry the generator's curve for its truth
    for label in (1, 100, 245):
        z, y, x = np.argwhere(truth.region_labels == label)[0]
        cbf, _, mtt, delay = values[label - 1]
        expected = tissue_curve(acq.times_s, spec, cbf, mtt, delay)
        assert np.allclose(acq.hu[:, z, y, x] - acq.hu[0, z, y, x], expected, atol=1e-3)
    artery = acq.hu[:, truth.artery_mask]
    assert np.allclose(artery - HU["blood"], truth.aif_hu[:, None], atol=1e-3)
    assert truth.sinus_mask.any() and truth.core_ml == 0


def test_stroke_phantom_core_is_the_relative_flow_definition() -> None:
    spec = FamilySpec(layout="stroke", residue="plateau_exp", sinus=False, noise_hu=0.0)
    truth = make_family_phantom(spec).truth
    assert not truth.sinus_mask.any()
    present = np.unique(truth.region_labels)[1:]
    assert len(present) == len(STROKE_TISSUES) * spec.stroke_slices
    normal = truth.tissue_mask & (truth.delay == 0)
    lesion = truth.tissue_mask & (truth.delay > 0)
    threshold = 0.3 * truth.cbf[normal].mean()
    assert np.array_equal(truth.core_mask, lesion & (truth.cbf < threshold))
    assert 0 < truth.core_ml < truth.tmax6_ml
    assert np.array_equal(truth.tmax6_mask, lesion)
