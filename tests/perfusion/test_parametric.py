"""Model-based deconvolution recovers F for every residue family; vessel clusters stay pure."""

import numpy as np
import pytest

from ctp_node.perfusion import inputs, parametric


def _aif(t: np.ndarray) -> np.ndarray:
    lag = np.maximum(t - 6.0, 0.0)
    return 450.0 * (lag / 4.5) ** 3 * np.exp(-(lag - 4.5) / 1.5)


def _tissue(times: np.ndarray, flow: float, mtt: float, delay: float, shape: str) -> np.ndarray:
    fine = np.arange(0.0, times[-1] + 1e-9, 0.01)
    residue = parametric.residue(fine, mtt, shape)
    conv = np.convolve(_aif(fine), residue)[: fine.size] * 0.01
    return flow * np.interp(times - delay, fine, conv, left=0.0)


@pytest.mark.parametrize(
    ("shape", "mtt", "delay"),
    [("exponential", 3.0, 0.0), ("exponential", 8.0, 4.3), ("linear", 5.0, 2.0), ("box", 6.0, 1.0)],
)
def test_noiseless_fit_recovers_flow_for_each_residue(shape: str, mtt: float, delay: float):
    times = np.arange(0.0, 60.0, 1.5)
    basis = np.linalg.qr(np.random.default_rng(0).normal(size=(times.size, times.size)))[0]
    bank = parametric.build_dictionary(_aif, 0.0, times, basis.astype(np.float32))
    curve = _tissue(times, 0.01, mtt, delay, shape)
    fit = parametric.fit((curve @ basis)[None].astype(np.float32), bank)
    assert fit.flow[0] == pytest.approx(0.01, rel=0.08)
    assert fit.delay_s[0] == pytest.approx(delay, abs=0.6)
    assert parametric.SHAPES[int(fit.shape[0])] == shape or mtt < 4


def test_amplitude_for_a_fixed_model_is_unbiased_by_noise() -> None:
    """Best-of-many raises F on noisy low flows; the amplitude of a fixed model does not."""
    rng = np.random.default_rng(1)
    times = np.arange(0.0, 60.0, 1.5)
    basis = np.eye(times.size, dtype=np.float32)
    bank = parametric.build_dictionary(_aif, 0.0, times, basis)
    clean = _tissue(times, 0.002, 5.0, 2.0, "exponential")
    noisy = (clean + rng.normal(0, 3.0, (3000, times.size))).astype(np.float32)
    model = parametric.fit(clean[None].astype(np.float32), bank).atom
    fixed = parametric.amplitude(noisy, bank, np.repeat(model, noisy.shape[0]))
    best = parametric.fit(noisy, bank).flow
    assert np.mean(fixed) == pytest.approx(0.002, rel=0.1)
    assert np.mean(best) > 1.2 * np.mean(fixed)


def test_matching_curves_keeps_partial_volume_copies_and_rejects_mixtures() -> None:
    rng = np.random.default_rng(2)
    t = np.arange(0.0, 60.0, 1.0)
    artery = _aif(t)
    tissue = 40.0 * np.exp(-0.5 * ((t - 20.0) / 5.0) ** 2)
    late = _aif(t - 3.0)
    seeds = [artery for _ in range(4)]
    copies = [0.8 * artery for _ in range(10)]
    mixed = [0.6 * artery + 0.4 * tissue * 3 for _ in range(10)]
    delayed = [0.9 * late for _ in range(10)]
    curves = np.column_stack(seeds + copies + mixed + delayed) + 100.0
    curves += rng.normal(0, 5.0, curves.shape)
    keep = inputs.matching_curves(curves, np.ones(curves.shape[1]), 4, 5.0, 48)
    assert set(range(14)) <= set(keep.tolist())
    assert not set(range(14, 34)) & set(keep.tolist())


def test_arterial_model_is_continuous_between_frames() -> None:
    """Between 1.5 s frames the gamma-variate fit restores the bolus peak that interpolation
    flattens."""
    times = np.arange(0.0, 60.0, 1.5)
    model = inputs.arterial_model(times, _aif(times), 0.0)
    fine = np.arange(0.0, 60.0, 0.05)
    assert model(fine).max() == pytest.approx(_aif(fine).max(), rel=0.01)
    assert np.allclose(inputs.denoise_arterial(times, _aif(times), 0.0), model(times))
