"""Deconvolving a known residue recovers CBF and Tmax."""

import numpy as np
import pytest

from ctp_node.perfusion.residues.deconvolution import (
    correct_peak,
    deconvolve,
    exponential_peak_ratio,
    thresholds,
)

DT = 1.0


def _aif(n: int) -> np.ndarray:
    t = np.arange(n) * DT - 5.0
    g = np.where(t > 0, np.maximum(t, 0) ** 3 * np.exp(-np.maximum(t, 0) / 1.5), 0.0)
    return 400.0 * g / g.max()


def _tissue(aif: np.ndarray, flow: float, mtt: float, delay: float) -> np.ndarray:
    """Continuous convolution (fine grid) of the AIF with flow·exp(−(t−delay)/mtt)."""
    n = aif.size
    fine = np.arange(n * 20) * DT / 20
    aif_fine = np.interp(fine, np.arange(n) * DT, aif)
    residue = np.where(fine >= delay, flow * np.exp(-(fine - delay) / mtt), 0.0)
    conv = np.convolve(aif_fine, residue)[: fine.size] * DT / 20
    return conv[::20]


@pytest.mark.parametrize(("mtt", "delay"), [(3.0, 0.0), (6.0, 2.5), (8.0, 5.0)])
def test_noiseless_residue_gives_flow_and_delay(mtt: float, delay: float) -> None:
    aif = _aif(60)
    flow = 0.01  # 1/s
    tissue = _tissue(aif, flow, mtt, delay)[None]
    levels = thresholds(0.02, 0.5, 10)
    res = deconvolve(tissue, aif, DT, levels, 0.095)
    mtt_grid = np.geomspace(0.5, 40, 40)
    ratios = exponential_peak_ratio(aif, DT, levels, mtt_grid)
    area = tissue.sum(axis=1) / aif.sum()
    peak = correct_peak(res.peak, area, res.level, ratios, mtt_grid)
    assert peak[0] == pytest.approx(flow, rel=0.05)
    assert res.onset_s[0] == pytest.approx(delay, abs=0.5)


def test_plain_svd_underestimates_short_mtt() -> None:
    """The bias the engine corrects is real: plain bSVD lowers the peak for short MTT."""
    aif = _aif(60)
    tissue = _tissue(aif, 0.01, 3.0, 0.0)[None]
    res = deconvolve(tissue, aif, DT, np.array([0.2]), None)
    assert res.peak[0] < 0.85 * 0.01
    assert res.peak_time_s[0] > 0.5


def test_noisy_voxels_are_deconvolved_together() -> None:
    rng = np.random.default_rng(0)
    aif = _aif(60)
    clean = _tissue(aif, 0.01, 5.0, 2.0)
    tissue = clean[None] + rng.normal(0, 0.5, (2000, clean.size))
    res = deconvolve(tissue.astype(np.float32), aif, DT, thresholds(0.02, 0.5, 10), 0.095)
    assert res.peak.shape == (2000,)
    assert np.median(res.onset_s) == pytest.approx(2.0, abs=1.0)
    assert np.all(res.threshold >= 0.02)


def test_projected_deconvolution_equals_deconvolution_of_the_curves() -> None:
    """Deconvolving basis coefficients with composed operators is the same linear operation."""
    from ctp_node.perfusion.residues.deconvolution import deconvolve_projected, residue_operators

    rng = np.random.default_rng(3)
    aif = _aif(50)
    curves = np.stack([_tissue(aif, 0.01, m, d) for m, d in [(3, 0), (5, 2), (8, 4), (4, 1)]])
    curves = curves + rng.normal(0, 0.2, curves.shape)
    basis = np.linalg.qr(curves.T)[0]  # (t, 4): the curves lie in its span
    levels = thresholds(0.02, 0.5, 10)
    direct = deconvolve(curves.astype(np.float32), aif, DT, levels, 0.05)
    operators = residue_operators(aif, DT, levels)
    bank = np.einsum("tr,ktl->krl", basis, operators)
    coefficients = (curves @ basis).astype(np.float32)
    projected = deconvolve_projected(coefficients, bank, DT, levels, 0.05, chunk=2, workers=2)
    assert np.array_equal(projected.level, direct.level)
    assert np.allclose(projected.peak, direct.peak, rtol=1e-3)
    assert np.allclose(projected.onset_s, direct.onset_s, atol=1e-2)


def test_bisection_finds_the_smallest_smooth_threshold() -> None:
    """Noisier curves need a higher truncation threshold than clean ones."""
    rng = np.random.default_rng(4)
    aif = _aif(60)
    clean = _tissue(aif, 0.01, 5.0, 2.0)
    levels = thresholds(0.02, 0.5, 10)
    quiet = deconvolve(clean[None].astype(np.float32), aif, DT, levels, 0.05)
    noisy = clean[None] + rng.normal(0, 1.0, (200, clean.size))
    loud = deconvolve(noisy.astype(np.float32), aif, DT, levels, 0.05)
    assert np.median(loud.level) > quiet.level[0]
