"""The dictionary of model tissue curves ``(AIF ⊗ R)(t − δ)`` the model fit searches
(:mod:`ctp_node.perfusion.residues.parametric`): every residue shape R of :data:`SHAPES`, mean
transit time and delay δ on a fine grid, sampled at a slice group's acquisition times and
projected once onto the temporal basis (:mod:`ctp_node.perfusion.tissue.compress`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import fft, special

from ctp_node.perfusion.prepare.grid import interpolation_matrix

#: The residue shapes R(t), by the spread of their transit times (coefficient of variation
#: CV = σ / MTT of the transit-time distribution h = −dR/dt): the exponential (a well-mixed
#: compartment, CV 1), the linear (h uniform on 0–2 MTT, CV 0.58), gamma-distributed transit
#: times of shape α 9 and 25 (Mouridsen et al. 2006's family; CV 1/√α = 0.33 and 0.2) and the
#: box (plug flow, CV 0). A tissue curve, the input smoothed by R, tells the residue's first
#: moments apart, not its exact form: a residue between two shapes of the family is fitted with
#: a wrong MTT and a wrong flow (F · MTT, the area, stays right). With only the exponential,
#: linear and box, residues that stay on a plateau for 0.8 × MTT and then fall (CV 0.2) read
#: CBF +23…+38 % (issue 33, docs/measurements.md).
SHAPES = ("exponential", "linear", "box", "gamma9", "gamma25")
#: Delay and MTT ranges of the dictionary (s): delays up to the longest clinically seen.
_DELAY_RANGE_S = (-3.0, 18.0)
_MTT_RANGE_S = (1.0, 24.0)
#: The fine grid's delay step (s) and number of MTTs.
FINE_DELAY_S = 0.25
_FINE_MTT_STEPS = 34


def residue(lag_s: np.ndarray, mtt_s: float, shape: str) -> np.ndarray:
    """``R(t)`` of mean transit time ``mtt_s`` (``R(0) = 1``), 0 before the onset; ``shape``
    one of :data:`SHAPES` (``gamma<α>``: 1 − the gamma distribution's CDF, shape α, mean
    ``mtt_s``)."""
    lag = np.asarray(lag_s, np.float64)
    if shape == "exponential":
        r = np.exp(-np.maximum(lag, 0.0) / mtt_s)
    elif shape == "linear":
        r = np.clip(1.0 - lag / (2.0 * mtt_s), 0.0, None)
    elif shape == "box":
        r = (lag < mtt_s).astype(np.float64)
    elif shape.startswith("gamma"):
        alpha = float(shape.removeprefix("gamma"))
        r = special.gammaincc(alpha, np.maximum(lag, 0.0) * (alpha / mtt_s))
    else:
        raise ValueError(f"unknown residue shape {shape!r}")
    return np.where(lag >= 0, r, 0.0)


@dataclass(frozen=True)
class Dictionary:
    """Model curves for F = 1 on one set of sampling times, projected onto a basis.

    atoms : float32 ``(k, r)``, unit-norm projections; norms : ``(k,)`` their norms.
    shape, mtt_index, delay_index : ``(k,)`` the model of each atom on the fine grid.
    passage_seen : ``(k,)`` the share of each model curve's whole area (∫AIF · MTT, the input
        as acquired) that lies within the acquisition: below 1 where the acquisition ends
        before the contrast that entered the tissue has left it.
    """

    atoms: np.ndarray
    norms: np.ndarray
    shape: np.ndarray
    mtt_index: np.ndarray
    delay_index: np.ndarray
    passage_seen: np.ndarray


def fine_axes() -> tuple[np.ndarray, np.ndarray]:
    """The fine grid: delays (s) and MTTs (s) every atom lies on."""
    delays = np.arange(_DELAY_RANGE_S[0], _DELAY_RANGE_S[1] + 1e-9, FINE_DELAY_S)
    mtts = np.geomspace(*_MTT_RANGE_S, _FINE_MTT_STEPS)
    return delays, mtts


def build_dictionary(
    arterial: Callable[[np.ndarray], np.ndarray],
    start_s: float,
    tissue_times_s: np.ndarray,
    basis: np.ndarray,
    shapes: tuple[str, ...] = SHAPES,
) -> Dictionary:
    """All fine-grid models sampled at ``tissue_times_s`` ``(t,)`` and projected on ``basis``
    ``(t, r)``. ``arterial`` maps times (s) to the arterial concentration (HU above baseline,
    partial-volume corrected; e.g. :func:`ctp_node.perfusion.inputs.selection.arterial_model`),
    0 before ``start_s``."""
    delays, mtts = fine_axes()
    interval = float(np.median(np.diff(tissue_times_s)))
    fine_dt = min(FINE_DELAY_S, interval) / 4
    t0 = float(min(start_s, tissue_times_s[0]))
    fine_t = t0 + np.arange(int((tissue_times_s[-1] - t0) / fine_dt) + 2) * fine_dt
    aif_fine = np.nan_to_num(np.asarray(arterial(fine_t), np.float64))
    n = fine_t.size
    length = fft.next_fast_len(2 * n, real=True)
    spectrum = fft.rfft(aif_fine, length)
    lag = fine_t - t0
    # ∫ (AIF ⊗ R) over all time = ∫AIF · ∫R = ∫AIF · MTT (the input as acquired).
    whole = np.maximum(aif_fine.sum() * fine_dt * mtts, 1e-12)
    atoms, shape_of, mtt_of, delay_of, seen = [], [], [], [], []
    for name in shapes:
        residues = np.stack([residue(lag, m, name) for m in mtts])
        conv = fft.irfft(spectrum * fft.rfft(residues, length, axis=1), length, axis=1)[:, :n]
        conv *= fine_dt
        inside = np.cumsum(conv, axis=1) * fine_dt
        for j, delay in enumerate(delays):
            # C(t) = (AIF ⊗ R)(t − δ), sampled at the tissue times.
            to_tissue = interpolation_matrix(fine_t, tissue_times_s - delay)
            atoms.append(conv @ (to_tissue.T @ basis))
            shape_of.append(np.full(mtts.size, SHAPES.index(name)))
            mtt_of.append(np.arange(mtts.size))
            delay_of.append(np.full(mtts.size, j))
            last = int(np.floor((tissue_times_s[-1] - delay - t0) / fine_dt))
            area = inside[:, min(last, n - 1)] if last >= 0 else np.zeros(mtts.size)
            seen.append(np.clip(area / whole, 0.0, 1.0))
    projected = np.concatenate(atoms).astype(np.float64)
    norms = np.linalg.norm(projected, axis=1)
    return Dictionary(
        atoms=(projected / np.maximum(norms, 1e-12)[:, None]).astype(np.float32),
        norms=norms,
        shape=np.concatenate(shape_of),
        mtt_index=np.concatenate(mtt_of),
        delay_index=np.concatenate(delay_of),
        passage_seen=np.concatenate(seen).astype(np.float32),
    )
