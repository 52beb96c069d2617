"""Patlak analysis of the post-first-pass phase: K^trans and the leakage-corrected CBV.

After the first pass, the intravascular part of a tissue curve follows the arterial curve
(``(C_a ⊗ R)(t) ≈ MTT · C_a(t)`` once ``C_a`` changes little over an MTT), and tracer that has
left the vessels through a leaky barrier accumulates as the integral of the plasma's curve
(no back-flux: the Patlak limit of the two-compartment model). Then, per voxel,

``C_t(t) = a · ∫₀ᵗ C_a + b · C_a(t)``,  t after the first pass,

which is Patlak's plot ``C_t / C_a = a · ∫C_a / C_a + b`` multiplied through by ``C_a``. Fitting
this form (ordinary least squares on ``C_t``) rather than the ratios is the maximum-likelihood
fit under the CT's white noise in ``C_t``: the plot's ratios carry noise ``σ / C_a(t)``, largest
on the late frames where ``C_a`` is lowest. All voxels share the two regressors, so one
``lstsq`` fits them all at once.

Units. ``C_a`` is the whole-blood enhancement of a large artery (HU), ``C_t`` the tissue's (HU
per mL of tissue). With ρ the brain density (g/mL), ``Hct_large`` the large vessels'
haematocrit and ``k_H`` the engine's haematocrit factor:

* ``K^trans = a · 6000 · (1 − Hct_large) / ρ`` mL/100g/min: the leak is driven by the
  *plasma* concentration ``C_a / (1 − Hct_large)`` (iodine does not enter the red cells), and
  6000 / ρ turns 1/s per mL of tissue into mL/min per 100 g;
* ``CBV = (·) · 100 · k_H / ρ`` mL/100 g of blood, the engine's conversion (``k_H`` corrects
  the large vessels' haematocrit to the capillaries').

The leakage-corrected CBV is the area of the tissue curve with the fitted leak removed, over
the whole acquisition, divided by the arterial curve's area:
``CBV = (100 k_H / ρ) · ∫(C_t − a ∫C_a) dt / ∫C_a dt``. It is the engine's own definition of CBV
(the ratio of areas its deconvolution measures) applied to the intravascular part alone, in
the spirit of Boxerman–Weisskoff's correction (subtract the fitted leak, then integrate), and
uses the dense first-pass frames where the intravascular signal is largest. Patlak's intercept
``b`` is also returned: it extrapolates the sparse late frames to ``∫C_a / C_a = 0`` and, when
the tissue's intravascular curve lags the artery's, measures ``MTT`` weighted by the late
curve's slope as well as the volume.

Back-flux. Where the leaked tracer flows back (the two-compartment model with a finite EES
volume v_e, k_ep = K^trans / v_e), Patlak's slope falls short of K^trans: by about a quarter
for k_ep 0.2/min over a two-minute late phase. :func:`back_flux_rates` fits k_ep in Murase's
linear form, on denoised or averaged curves (a per-voxel rate from raw curves is biased by
their noise), and :func:`patlak_maps` then takes it as known, which keeps the per-voxel fit
linear and shared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.integrate import cumulative_trapezoid, trapezoid

from ctp_node.perfusion.errors import LatePhaseTooShortError
from ctp_node.perfusion.parameters import PerfusionParameters

#: The engine's settings, whose brain density and haematocrit factor the fit shares (one
#: definition of each, in :class:`PerfusionParameters`).
_ENGINE = PerfusionParameters()


@dataclass(frozen=True)
class PatlakSettings:
    """The Patlak analysis' constants.

    Attributes
    ----------
    first_pass_end_fraction : the first pass is over once the arterial curve, after its peak,
        has fallen below this fraction of the peak's enhancement and stays there (0.35: the
        recirculation of a bolus settles at 20–30 % of the peak, so the curve crosses 35 %
        only once its first-pass fall is nearly complete).
    first_pass_margin_s : a further wait after that crossing, s, for the tissue's
        intravascular curve, which lags the artery's by about an MTT (4–8 s in tumours), to
        follow it (so that ``(C_a ⊗ R)(t) ≈ MTT · C_a(t)``).
    min_late_frames : fewest frames after the first pass a fit may use (two unknowns; fewer
        than 6 leave K^trans at the noise's mercy).
    min_late_phase_s : the shortest time the frames after the first pass may span, s: the leak
        is told from the intravascular tail by its steady rise (the slope on ∫C_a), and the
        slope's noise falls with the span to the power 1.5; over less than 30 s it is of the
        order of the K^trans of a tumour.
    brain_density_g_ml : ρ, g/mL (the engine's ``brain_density_g_ml``).
    hematocrit_factor : k_H = (1 − 0.45) / (1 − 0.25), unitless (the engine's).
    large_vessel_hematocrit : the haematocrit of the artery the input is measured in, the
        blood-to-plasma conversion of K^trans (the engine's, 0.45).
    min_ees_ml_100g : the smallest extravascular extracellular volume v_e a back-flux rate
        fitted by :func:`back_flux_rates` may imply, mL/100 g: k_ep = K^trans / v_e is capped
        at the Patlak K^trans of the same curves (a lower bound of the true one) over this
        volume. The brain's extracellular space is about 20 mL/100 g and tumours' larger; 5
        leaves room, and keeps tissue that does not leak (K^trans ≈ 0), where the rate is
        undetermined, at no back-flux.
    """

    first_pass_end_fraction: float = 0.35
    first_pass_margin_s: float = 12.0
    min_late_frames: int = 6
    min_late_phase_s: float = 30.0
    brain_density_g_ml: float = _ENGINE.brain_density_g_ml
    hematocrit_factor: float = _ENGINE.hematocrit_factor
    large_vessel_hematocrit: float = _ENGINE.large_vessel_hematocrit
    min_ees_ml_100g: float = 5.0


@dataclass(frozen=True)
class PatlakMaps:
    """The fit's results, each shaped as the tissue curves without their time axis.

    Attributes
    ----------
    ktrans : K^trans, mL/100g/min.
    cbv : the leakage-corrected CBV (area of the curve minus the fitted leak), mL/100 g.
    intercept_cbv : Patlak's intercept as a blood volume, mL/100 g.
    first_pass_end_s : the time from which frames enter the fit, s.
    late_frames : how many frames the fit used.
    ktrans_se : the standard error of K^trans, mL/100g/min: from the fit's residuals over the
        late frames (the CT's noise and what the model does not explain) and from the noise of
        the pre-contrast baseline the curve was measured against (``baseline_var``), for
        judging whether a voxel leaks at all.
    leak_hu : the fitted leak at every frame, HU, ``(t, ...)`` as ``tissue``: the tracer
        outside the vessels (``a ∫C_a − k_ep ∫C_t``), which the tissue curve minus it leaves
        the intravascular curve.
    """

    ktrans: np.ndarray
    cbv: np.ndarray
    intercept_cbv: np.ndarray
    first_pass_end_s: float
    late_frames: int
    ktrans_se: np.ndarray
    leak_hu: np.ndarray


def first_pass_end(
    times_s: np.ndarray, arterial: np.ndarray, settings: PatlakSettings = PatlakSettings()
) -> int:
    """Index of the first frame of the post-first-pass phase.

    The arterial curve (HU above baseline, at ``times_s``) must have fallen after its peak below
    ``first_pass_end_fraction`` of the peak for good (the last frame above it is the first
    pass's), then ``first_pass_margin_s`` more. Raises :class:`LatePhaseTooShortError` when
    the curve never falls that far, or fewer than ``min_late_frames`` frames follow.
    """
    arterial = np.asarray(arterial, float)
    peak = int(np.argmax(arterial))
    above = np.flatnonzero(arterial[peak:] >= settings.first_pass_end_fraction * arterial[peak])
    last_above = peak + int(above[-1])
    if last_above == arterial.size - 1:
        raise LatePhaseTooShortError(
            "The arterial curve has not fallen after the bolus's first pass by the last image "
            f"(it stays above {settings.first_pass_end_fraction:.0%} of its peak), so "
            "permeability cannot be measured: acquire longer (90 s or more) after injection."
        )
    start = times_s[last_above + 1] + settings.first_pass_margin_s
    first = int(np.searchsorted(times_s, start - 1e-9))
    late = times_s.size - first
    span = float(times_s[-1] - times_s[first]) if late else 0.0
    if late < settings.min_late_frames or span < settings.min_late_phase_s:
        raise LatePhaseTooShortError(
            f"Only {late} image(s) over {span:.0f} s follow the bolus's first pass (after "
            f"{times_s[first - 1] if first else times_s[0]:.0f} s); a permeability (Patlak) fit "
            f"needs at least {settings.min_late_frames} over {settings.min_late_phase_s:g} s: "
            "acquire longer (90 s or more) after injection, with images every few seconds "
            "after the first pass."
        )
    return first


def _regressors(times_s: np.ndarray, arterial: np.ndarray, first: int):
    """``∫C_a`` at every frame, and the late frames' design ``[∫C_a, C_a]`` with its
    pseudo-inverse."""
    integral = cumulative_trapezoid(arterial, times_s, initial=0.0)
    design = np.stack([integral[first:], arterial[first:]], axis=1)
    return integral, design, np.linalg.pinv(design)


def _ktrans_of(slope_per_s: np.ndarray, settings: PatlakSettings) -> np.ndarray:
    """K^trans, mL/100g/min, from the leak's coefficient on ``∫C_a`` (1/s, whole blood)."""
    plasma_fraction = 1.0 - settings.large_vessel_hematocrit
    return slope_per_s * 6000.0 * plasma_fraction / settings.brain_density_g_ml


def back_flux_rates(
    times_s: np.ndarray,
    arterial: np.ndarray,
    tissue: np.ndarray,
    settings: PatlakSettings = PatlakSettings(),
) -> np.ndarray:
    """The back-flux rate k_ep = K^trans / v_e (1/min) of every tissue curve, for
    :func:`patlak_maps`' ``back_flux_per_min``.

    The two-compartment model in Murase's linear form (Magn Reson Med 2004), after the first
    pass: ``C_t = a ∫C_a + b C_a − k_ep ∫C_t``. With the two shared regressors projected out
    (Frisch–Waugh–Lovell), k_ep is one ratio per voxel. ``∫C_t`` is nearly ``b ∫C_a`` in tissue
    that barely leaks, so k_ep is ill-determined there and noise in ``∫C_t`` biases it: give
    spatially denoised or averaged curves (``(t, ...)``, HU above baseline), not raw voxels.
    Rates are clipped to ``[0, K_Patlak / min_ees_ml_100g]``.
    """
    times_s = np.asarray(times_s, float)
    arterial = np.asarray(arterial, float)
    first = first_pass_end(times_s, arterial, settings)
    curves = np.asarray(tissue, float).reshape(times_s.size, -1)
    _, design, pinv = _regressors(times_s, arterial, first)
    patlak_ktrans = _ktrans_of((pinv @ curves[first:])[0], settings)
    residual = np.eye(design.shape[0]) - design @ pinv
    tissue_integral = residual @ cumulative_trapezoid(curves, times_s, axis=0, initial=0.0)[first:]
    late = residual @ curves[first:]
    rate_s = -np.sum(tissue_integral * late, axis=0) / np.maximum(
        np.sum(tissue_integral**2, axis=0), np.finfo(float).tiny
    )
    rate = np.clip(60.0 * rate_s, 0.0, np.maximum(patlak_ktrans, 0.0) / settings.min_ees_ml_100g)
    return rate.reshape(np.shape(tissue)[1:])


def patlak_maps(
    times_s: np.ndarray,
    arterial: np.ndarray,
    tissue: np.ndarray,
    settings: PatlakSettings = PatlakSettings(),
    back_flux_per_min: np.ndarray | float | None = None,
    baseline_var: np.ndarray | float = 0.0,
) -> PatlakMaps:
    """K^trans and the leakage-corrected CBV of every tissue curve.

    Parameters
    ----------
    times_s : frame times, s, increasing (need not be uniform), ``(t,)``.
    arterial : the arterial input, HU above its baseline, ``(t,)``.
    tissue : tissue enhancement, HU above baseline, ``(t, ...)`` (e.g. ``(t, z, y, x)``).
    settings : the constants.
    back_flux_per_min : None for Patlak's model (no back-flux); else k_ep per voxel, 1/min,
        shaped as ``tissue[0]`` (:func:`back_flux_rates`): the fit becomes Murase's
        ``C_t + k_ep ∫C_t = a ∫C_a + b C_a`` with k_ep known, K^trans comes from
        ``a − k_ep · b`` and the leak removed from the area is ``a ∫C_a − k_ep ∫C_t``.
    baseline_var : the variance of the pre-contrast baseline each tissue curve was measured
        against, HU² (σ² / the number of baseline images). Its error is one offset on every
        frame, which the residuals do not show: over a late phase where ``∫C_a`` barely grows
        (an arterial curve that falls back to 0) the offset and the leak look alike, and the
        slope takes it in full. It enters ``ktrans_se``, not the fit.
    """
    times_s = np.asarray(times_s, float)
    arterial = np.asarray(arterial, float)
    first = first_pass_end(times_s, arterial, settings)
    curves = np.asarray(tissue, float).reshape(times_s.size, -1)
    integral, design, pinv = _regressors(times_s, arterial, first)
    rate_s = np.zeros(curves.shape[1])
    if back_flux_per_min is not None:
        rate_s = np.broadcast_to(back_flux_per_min, np.shape(tissue)[1:]).reshape(-1) / 60.0
    tissue_integral = cumulative_trapezoid(curves, times_s, axis=0, initial=0.0)
    late = curves[first:] + rate_s * tissue_integral[first:]
    slope, intercept = pinv @ late
    residual_var = np.sum((late - design @ np.stack([slope, intercept])) ** 2, axis=0) / max(
        design.shape[0] - 2, 1
    )
    offset_gain = float(pinv[0].sum())  # the slope's change per HU of baseline offset
    baseline_var = np.broadcast_to(baseline_var, np.shape(tissue)[1:]).reshape(-1)
    slope_se = np.sqrt(residual_var * (pinv @ pinv.T)[0, 0] + baseline_var * offset_gain**2)
    leak = slope * integral[:, None] - rate_s * tissue_integral
    area = trapezoid(curves - leak, times_s, axis=0) / trapezoid(arterial, times_s)
    rho, k_h = settings.brain_density_g_ml, settings.hematocrit_factor
    ktrans = _ktrans_of(slope - rate_s * intercept, settings)
    shape = np.shape(tissue)[1:]
    return PatlakMaps(
        ktrans=ktrans.reshape(shape),
        cbv=(area * 100.0 * k_h / rho).reshape(shape),
        intercept_cbv=(intercept * 100.0 * k_h / rho).reshape(shape),
        first_pass_end_s=float(times_s[first]),
        late_frames=times_s.size - first,
        ktrans_se=_ktrans_of(slope_se, settings).reshape(shape),
        leak_hu=leak.reshape(np.shape(tissue)),
    )
