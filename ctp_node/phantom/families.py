"""Phantom families built independently of the engine's own phantom recipe (issue 33).

:mod:`ctp_node.phantom.generator` convolves an exponential (or linear, box) residue with its
arterial curve on a fine grid, as the engine's model assumes. The families here vary what a
third-party generator does differently, each after a published design:

* layout ``"kudo"``: the digital phantom of Kudo et al. (Radiology 2013): per slice one CBV
  (1–5 mL/100 g), a 7 × 7 grid of tiles with MTT = 24/k s (k = 1..7, so CBF = 2.5 · CBV · k,
  2.5–87.5 mL/100g/min) along x and the tracer delay along y (0–3 s in 0.5 s steps in the
  paper) in a tissue background, with two arteries and optionally the superior sagittal sinus;
* layout ``"stroke"``: grey and white matter with a delayed lesion (a reduced rim around a
  severe centre) with the tissue values of the third-party phantom of issue 33;
* residue ``"plateau_exp"``: R(t) = 1 up to ``plateau_fraction`` · MTT, then an exponential fall
  with time constant (1 − ``plateau_fraction``) · MTT, so that ∫R = MTT; besides Kudo's box,
  linear (R = 1 − t / (2 MTT)) and exponential residues;
* convolution ``"sampled"``: on the acquisition's own 1 s grid (discrete convolution, as Kudo and
  the third-party generator do): the residue sample j is R(t − delay) averaged over the cell
  [(j − ½) Δt, (j + ½) Δt], so the first sample of an undelayed residue is a partial step
  (½), and the arterial curve is sampled at the frame times; ``"continuous"``: the same on a
  0.05 s grid, then sampled at the frame times;
* arterial input ``"recirculating"``: a gamma-variate first pass peaking at 485 HU and a long
  recirculation at 25 % of the peak from about 27 s to the end; ``"gamma"``: the first pass
  alone (Kudo's gamma-variate input).

Tissue enhancement is ``C = (ρ / k_H) · CBF / 6000 · (AIF ⊗ R)(t − delay)`` (ρ 1.04 g/mL,
k_H 0.73, the engine's defaults, so that absolute values compare) and CBV = CBF · MTT / 60.
Arteries are pure blood (no partial volume). Axis order ``(t, z, y, x)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctp_node.phantom.anatomy import HU, ellipse, head_of
from ctp_node.phantom.generator import Phantom, PhantomTruth, acquisition_of

_FINE_DT_S = 0.05
_DENSITY_G_ML = 1.04
_HEMATOCRIT_FACTOR = 0.73

#: CBV of Kudo's slices, mL/100 g; MTT of the grid's columns, s (24 / k, k = 1..7).
KUDO_CBV_ML_100G = (1.0, 2.0, 3.0, 4.0, 5.0)
KUDO_MTT_S = tuple(24.0 / k for k in range(1, 8))
#: Kudo's tracer delays (rows of the grid), s.
KUDO_DELAYS_S = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
#: CBF (mL/100g/min), MTT (s) of the Kudo grid's background tissue.
_KUDO_BACKGROUND = (25.0, 5.0)
#: The stroke layout's compartments: name, CBF mL/100g/min, MTT s, delay s (issue 33's table).
STROKE_TISSUES = (
    ("grey", 54.0, 3.7, 0.0),
    ("white", 25.0, 4.6, 0.0),
    ("grey reduced", 15.0, 11.5, 7.0),
    ("white reduced", 5.9, 13.9, 7.0),
    ("grey severe", 5.3, 8.0, 7.0),
    ("white severe", 1.9, 10.5, 7.0),
)
#: The core is tissue with a true CBF below this fraction of the unaffected tissue's mean
#: (the definition the engine's ``core_rcbf_threshold`` measures).
CORE_RCBF = 0.30


@dataclass(frozen=True)
class FamilySpec:
    """How to build one phantom of a family.

    Attributes
    ----------
    layout : ``"kudo"`` (7 × 7 MTT × delay tiles per CBV slice) or ``"stroke"`` (grey and white
        matter with a delayed lesion).
    residue : ``"box"``, ``"linear"``, ``"exponential"`` or ``"plateau_exp"``.
    convolution : ``"sampled"`` (discrete, on the frame grid) or ``"continuous"`` (0.05 s grid).
    arterial_input : ``"gamma"`` (first pass only) or ``"recirculating"``.
    delays_s : the Kudo grid's row delays, s (7 values).
    plateau_fraction : the plateau's length as a fraction of the MTT (``"plateau_exp"``).
    frames, interval_s : number of frames and their spacing, s (50 at 1 s as the third-party
        phantom, so that long, delayed curves end barely complete).
    noise_hu : σ of white Gaussian noise per voxel and frame, HU.
    seed : random seed of the noise.
    matrix, pixel_spacing_mm, slice_thickness_mm : square in-plane size (voxels), pixel size
        and slice thickness, mm.
    stroke_slices : slices of the stroke layout (the Kudo layout has one per CBV).
    stroke_tissues : the stroke layout's compartments (name, CBF mL/100g/min, MTT s, delay
        s), in the order and with the names of ``STROKE_TISSUES``.
    sinus : plant the superior sagittal sinus (False: no large vein in the slices).
    aif_arrival_s, aif_peak_hu : bolus arrival (s from the first frame) and peak of the
        arterial curve (HU above blood); the peak comes 4.5 s after the arrival, on a frame
        when the arrival is 6.5 s and the frames 1 s apart.
    recirculation_fraction : the recirculating input's late level, fraction of the peak.
    """

    layout: str = "kudo"
    residue: str = "box"
    convolution: str = "sampled"
    arterial_input: str = "gamma"
    delays_s: tuple[float, ...] = KUDO_DELAYS_S
    plateau_fraction: float = 0.8
    frames: int = 50
    interval_s: float = 1.0
    noise_hu: float = 5.0
    seed: int = 0
    matrix: int = 192
    pixel_spacing_mm: float = 1.1
    slice_thickness_mm: float = 5.0
    stroke_slices: int = 4
    stroke_tissues: tuple[tuple[str, float, float, float], ...] = STROKE_TISSUES
    sinus: bool = True
    aif_arrival_s: float = 6.5
    aif_peak_hu: float = 485.0
    recirculation_fraction: float = 0.25


def residue(t: np.ndarray, mtt_s: float, shape: str, plateau_fraction: float = 0.8) -> np.ndarray:
    """R(t), 1 at t = 0 and 0 before, with ∫R dt = ``mtt_s``."""
    t = np.asarray(t, float)
    if shape == "box":
        r = (t < mtt_s).astype(float)
    elif shape == "linear":
        r = np.clip(1.0 - t / (2.0 * mtt_s), 0.0, None)
    elif shape == "exponential":
        r = np.exp(-np.maximum(t, 0.0) / mtt_s)
    elif shape == "plateau_exp":
        plateau, tau = plateau_fraction * mtt_s, (1.0 - plateau_fraction) * mtt_s
        r = np.where(t < plateau, 1.0, np.exp(-np.maximum(t - plateau, 0.0) / tau))
    else:
        raise ValueError(f"residue must be box, linear, exponential or plateau_exp, not {shape!r}")
    return np.where(t >= 0, r, 0.0)


def residue_integral(
    t: np.ndarray, mtt_s: float, shape: str, plateau_fraction: float = 0.8
) -> np.ndarray:
    """∫₀ᵗ R(s) ds in s (0 for t ≤ 0), in closed form."""
    t = np.maximum(np.asarray(t, float), 0.0)
    if shape == "box":
        return np.minimum(t, mtt_s)
    if shape == "linear":
        u = np.minimum(t, 2.0 * mtt_s)
        return u - u * u / (4.0 * mtt_s)
    if shape == "exponential":
        return mtt_s * -np.expm1(-t / mtt_s)
    if shape == "plateau_exp":
        plateau, tau = plateau_fraction * mtt_s, (1.0 - plateau_fraction) * mtt_s
        tail = tau * -np.expm1(-np.maximum(t - plateau, 0.0) / tau)
        return np.minimum(t, plateau) + tail
    raise ValueError(f"residue must be box, linear, exponential or plateau_exp, not {shape!r}")


def sampled_residue(
    n: int, dt_s: float, mtt_s: float, delay_s: float, shape: str, plateau_fraction: float = 0.8
) -> np.ndarray:
    """R(t − delay) on a grid of ``n`` samples ``dt_s`` apart, each sample the mean of R over
    its cell [(j − ½) dt, (j + ½) dt]: a discrete residue whose sum times ``dt_s`` is the MTT
    (when it ends within the grid) and whose first sample is a partial step."""
    edges = (np.arange(n + 1) - 0.5) * dt_s - delay_s
    return np.diff(residue_integral(edges, mtt_s, shape, plateau_fraction)) / dt_s


def arterial_curve(t: np.ndarray, spec: FamilySpec) -> np.ndarray:
    """The arterial concentration at times ``t`` (s), HU above blood."""
    s = np.maximum(np.asarray(t, float) - spec.aif_arrival_s, 0.0) / 4.5  # α β: α 3, β 1.5 s
    first = np.where(s > 0, s**3 * np.exp(3.0 * (1.0 - s)), 0.0)  # peak 1 at 4.5 s
    if spec.arterial_input == "gamma":
        return spec.aif_peak_hu * first
    if spec.arterial_input == "recirculating":
        # a logistic rise half-way 14 s after arrival (2 s wide): ≥ 97 % of its level by 27 s
        rise = 1.0 / (1.0 + np.exp(-(np.asarray(t, float) - spec.aif_arrival_s - 14.0) / 2.0))
        curve = first + spec.recirculation_fraction * rise
        return spec.aif_peak_hu * curve / _peak_of(spec)
    raise ValueError(f"arterial_input must be gamma or recirculating, not {spec.arterial_input!r}")


def _peak_of(spec: FamilySpec) -> float:
    """Maximum of the unscaled recirculating curve (so that its peak is ``aif_peak_hu``)."""
    t = spec.aif_arrival_s + np.linspace(0.0, 15.0, 3001)
    s = (t - spec.aif_arrival_s) / 4.5
    rise = 1.0 / (1.0 + np.exp(-(t - spec.aif_arrival_s - 14.0) / 2.0))
    return float(np.max(s**3 * np.exp(3.0 * (1.0 - s)) + spec.recirculation_fraction * rise))


def tissue_curve(
    times: np.ndarray, spec: FamilySpec, cbf: float, mtt_s: float, delay_s: float
) -> np.ndarray:
    """Tissue enhancement (HU) at the uniform frame ``times`` (s) for one CBF (mL/100g/min),
    MTT and delay (s), convolved as ``spec.convolution`` says."""
    scale = (_DENSITY_G_ML / _HEMATOCRIT_FACTOR) * cbf / 6000.0
    if spec.convolution == "sampled":
        dt = float(times[1] - times[0])
        grid = times
    elif spec.convolution == "continuous":
        dt = _FINE_DT_S
        grid = np.arange(0.0, times[-1] + dt / 2, dt)
    else:
        raise ValueError(f"convolution must be sampled or continuous, not {spec.convolution!r}")
    r = sampled_residue(grid.size, dt, mtt_s, delay_s, spec.residue, spec.plateau_fraction)
    conv = scale * dt * np.convolve(arterial_curve(grid, spec), r)[: grid.size]
    return conv if grid is times else np.interp(times, grid, conv)


def _venous_curve(times: np.ndarray, spec: FamilySpec) -> np.ndarray:
    """The sinus: the arterial curve 4 s later, dispersed (exponential, 2.5 s), area kept."""
    fine = np.arange(0.0, times[-1] + _FINE_DT_S / 2, _FINE_DT_S)
    kernel = np.where(fine >= 4.0, np.exp(-(fine - 4.0) / 2.5), 0.0)
    vein = np.convolve(arterial_curve(fine, spec), kernel / kernel.sum())[: fine.size]
    return np.interp(times, fine, vein)


@dataclass
class _Plan:
    """What each voxel holds: a label into ``params`` (CBF, MTT, delay) or 0, the pre-contrast
    HU, the evaluated regions (label into ``region_values`` rows CBF, CBV, MTT, delay)."""

    labels: np.ndarray
    base: np.ndarray
    region_labels: np.ndarray
    csf: np.ndarray
    params: list
    region_values: list

    def label_of(self, p: tuple[float, float, float]) -> int:
        if p not in self.params:
            self.params.append(p)
        return self.params.index(p) + 1

    def add_region(self, z: int, where: np.ndarray, cbf: float, mtt: float, delay: float) -> None:
        self.labels[z][where] = self.label_of((cbf, mtt, delay))
        self.region_values.append((cbf, cbf * mtt / 60.0, mtt, delay))
        self.region_labels[z][where] = len(self.region_values)


def _plan(spec: FamilySpec, head, nz: int) -> _Plan:
    shape = (nz, spec.matrix, spec.matrix)
    plan = _Plan(
        labels=np.zeros(shape, np.int32),
        base=np.full(shape, HU["air"], np.float32),
        region_labels=np.zeros(shape, np.int32),
        csf=np.zeros(shape, bool),
        params=[],
        region_values=[],
    )
    plan.base[:] = head.outside_brain_hu()
    return plan


def _kudo_plan(spec: FamilySpec, head) -> _Plan:
    """One slice per CBV: a 7 × 7 grid of tiles (11 pixels, 2 apart), MTT along x, delay
    along y, in background tissue."""
    if len(spec.delays_s) != len(KUDO_MTT_S):
        raise ValueError(f"delays_s must hold {len(KUDO_MTT_S)} delays, not {spec.delays_s!r}")
    plan = _plan(spec, head, len(KUDO_CBV_ML_100G))
    tile, gap, n = 11, 2, spec.matrix
    first = (n - (7 * tile + 6 * gap)) // 2
    starts = first + np.arange(7) * (tile + gap)
    for z, cbv in enumerate(KUDO_CBV_ML_100G):
        plan.base[z][head.brain] = HU["grid"]
        plan.labels[z][head.brain] = plan.label_of((*_KUDO_BACKGROUND, 0.0))
        for i, delay in enumerate(spec.delays_s):
            for j, mtt in enumerate(KUDO_MTT_S):
                where = np.zeros((n, n), bool)
                where[starts[i] : starts[i] + tile, starts[j] : starts[j] + tile] = True
                plan.add_region(z, where, 60.0 * cbv / mtt, mtt, float(delay))
    return plan


def _stroke_plan(spec: FamilySpec, head) -> _Plan:
    """Grey (cortex) and white matter with the ventricles; in the image-right hemisphere a
    lesion delayed 7 s: a reduced rim around a severe centre, each grey or white."""
    plan = _plan(spec, head, spec.stroke_slices)
    values = {name: (cbf, mtt, delay) for name, cbf, mtt, delay in spec.stroke_tissues}
    right = head.brain & (head.xx > 3.0)
    rim = right & ellipse(head.yy, head.xx, -5, 42, 36, 30)
    centre = right & ellipse(head.yy, head.xx, -5, 46, 20, 22)
    grey = head.cortex
    white = head.brain & ~head.cortex
    keep = ~head.ventricles
    for z in range(spec.stroke_slices):
        plan.base[z][white] = HU["wm"]
        plan.base[z][grey] = HU["gm"]
        for kind, mask in (("grey", grey), ("white", white)):
            plan.add_region(z, mask & ~rim & keep, *values[kind])
            plan.add_region(z, mask & rim & ~centre & keep, *values[f"{kind} reduced"])
            plan.add_region(z, mask & centre & keep, *values[f"{kind} severe"])
        plan.base[z][head.ventricles] = HU["csf"]
        plan.csf[z] = head.ventricles
    return plan


def make_family_phantom(spec: FamilySpec = FamilySpec()) -> Phantom:
    """Build one family phantom: its acquisition (HU ``(t, z, y, x)``) and its truth."""
    head = head_of(spec.matrix, spec.pixel_spacing_mm, 0.85)
    if spec.layout == "kudo":
        plan = _kudo_plan(spec, head)
    elif spec.layout == "stroke":
        plan = _stroke_plan(spec, head)
    else:
        raise ValueError(f"layout must be kudo or stroke, not {spec.layout!r}")
    times = np.arange(spec.frames) * spec.interval_s
    arteries = ellipse(head.yy, head.xx, 0.0, -57.0, 2.0, 2.0) | ellipse(
        head.yy, head.xx, 0.0, 57.0, 2.0, 2.0
    )
    sinus = head.sinus if spec.sinus else np.zeros_like(head.sinus)
    table = np.zeros((len(plan.params) + 1, times.size), np.float32)
    for i, (cbf, mtt, delay) in enumerate(plan.params, start=1):
        table[i] = tissue_curve(times, spec, cbf, mtt, delay)
    hu = np.moveaxis(table[plan.labels], -1, 0) + plan.base[None]
    aif = arterial_curve(times, spec)
    blood = HU["blood"]
    for frac, curve in ((sinus, _venous_curve(times, spec)), (arteries.astype(float), aif)):
        f = frac[None, None].astype(np.float32)
        hu *= 1.0 - f
        hu += f * (blood + curve[:, None, None, None].astype(np.float32))
    if spec.noise_hu > 0:
        rng = np.random.default_rng(spec.seed)
        hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(spec.noise_hu)
    offsets = np.zeros(hu.shape[1])
    acquisition = acquisition_of(hu, times, offsets, spec.pixel_spacing_mm, spec.slice_thickness_mm)
    return Phantom(acquisition=acquisition, truth=_truth(spec, plan, arteries, sinus > 0, aif))


def _truth(
    spec: FamilySpec, plan: _Plan, arteries: np.ndarray, sinus: np.ndarray, aif: np.ndarray
) -> PhantomTruth:
    vessel = arteries | sinus
    tissue = (plan.labels > 0) & ~vessel[None]
    values = np.zeros((len(plan.params) + 1, 4))
    for i, (cbf, mtt, delay) in enumerate(plan.params, start=1):
        values[i] = (cbf, cbf * mtt / 60.0, mtt, delay)

    def tmap(column: int) -> np.ndarray:
        return np.where(tissue, values[plan.labels, column], 0.0).astype(np.float32)

    cbf, delay = tmap(0), tmap(3)
    unaffected = tissue & (delay == 0)
    lesion = tissue & (delay > 0) if spec.layout == "stroke" else np.zeros_like(tissue)
    core = lesion & (cbf < CORE_RCBF * cbf[unaffected].mean())
    tmax6 = tissue & (delay > 6.0)
    tmax10 = tissue & (delay > 10.0)
    voxel_ml = spec.pixel_spacing_mm**2 * spec.slice_thickness_mm / 1000.0
    shape = plan.labels.shape
    region_labels = np.where(vessel[None], 0, plan.region_labels).astype(np.int32)
    return PhantomTruth(
        cbf=cbf,
        cbv=tmap(1),
        mtt=tmap(2),
        delay=delay,
        tissue_mask=tissue,
        core_mask=core,
        tmax6_mask=tmax6,
        tmax10_mask=tmax10,
        core_ml=float(core.sum()) * voxel_ml,
        tmax6_ml=float(tmax6.sum()) * voxel_ml,
        tmax10_ml=float(tmax10.sum()) * voxel_ml,
        region_labels=region_labels,
        region_values=np.asarray(plan.region_values, float).reshape(-1, 4),
        artery_mask=np.broadcast_to(arteries, shape).copy(),
        sinus_mask=np.broadcast_to(sinus, shape).copy(),
        csf_mask=plan.csf,
        aif_hu=aif.astype(np.float32),
    )
