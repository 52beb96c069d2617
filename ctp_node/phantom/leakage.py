"""A tumour phantom: contrast leaking out of the vessels at a known rate (issue 34, item 3).

Each tile of a grid holds one K^trans (rows) and one CBV (columns) in a background of normal
tissue that does not leak. Its tissue enhancement (HU) is the intravascular part the stroke
phantoms already model plus what has crossed into the extravascular extracellular space (EES):

``C_t(t) = (ρ / k_H) · CBF / 6000 · (C_a ⊗ R)(t)
         + ρ · K^trans / 6000 · ∫₀ᵗ C_p(τ) · exp(−(K^trans / v_e) · (t − τ) / 60) dτ``

* ``C_a``: the arterial (whole-blood) enhancement, HU; ``C_p = C_a / (1 − Hct_large)`` the
  plasma's, since iodine stays in the plasma (``Hct_large`` 0.45, the large vessels'
  haematocrit);
* the first term is the engine's own model (as in :mod:`ctp_node.phantom.families`): CBF in
  mL/100g/min, ``R`` the residue with ∫R = MTT, CBV = CBF · MTT / 60 mL/100 g of blood, so the
  plasma volume is ``v_p = CBV · (1 − Hct_small)`` (0.25, the capillaries' haematocrit;
  ``k_H = (1 − 0.45) / (1 − 0.25) = 0.73``, the engine's ``hematocrit_factor``);
* the second is the two-compartment (extended Tofts) exchange: K^trans in mL/100g/min (plasma
  cleared into the EES per 100 g of tissue), ``v_e`` the EES volume, mL/100 g, so
  ``K^trans / v_e`` is the back-flux rate per minute. ``model="patlak"`` is its limit
  ``v_e → ∞`` (no back-flux): the EES only accumulates.

Convolutions run on a 0.05 s grid with cell-averaged kernels
(:func:`~ctp_node.phantom.families.sampled_residue`) and are sampled at the frame times, which
are dense over the first pass and sparser after it, as tumour protocols acquire (90–150 s).
The arterial curve is the families' recirculating input with a slow washout after the
recirculation (:data:`WASHOUT_S`). Arteries are pure blood; no sinus. Axis order
``(t, z, y, x)``; every slice holds the same grid with its own noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctp_node.perfusion import Acquisition
from ctp_node.phantom.anatomy import HU, ellipse, head_of
from ctp_node.phantom.families import FamilySpec, arterial_curve, sampled_residue
from ctp_node.phantom.generator import acquisition_of

#: Step of the fine grid the convolutions run on, s (the families' continuous convolution).
FINE_DT_S = 0.05
#: Brain density ρ, g/mL, and k_H = (1 − Hct_large) / (1 − Hct_small): the engine's defaults
#: (``PerfusionParameters.brain_density_g_ml``, ``hematocrit_factor``), so values compare.
DENSITY_G_ML = 1.04
HEMATOCRIT_FACTOR = 0.73
#: Haematocrit of the large vessels the arterial curve is measured in, and of the capillaries
#: (their ratio of plasma fractions is ``HEMATOCRIT_FACTOR``): iodine stays in the plasma, so
#: the plasma's concentration is the blood's divided by 1 − 0.45, and v_p = CBV · (1 − 0.25).
LARGE_VESSEL_HEMATOCRIT = 0.45
SMALL_VESSEL_HEMATOCRIT = 0.25
#: e-folding time of the blood's iodine after the recirculation, s: the bolus spreads into the
#: body's extracellular space over minutes, so the late arterial curve falls slowly (a flat
#: late input would make the Patlak plot's x axis a plain clock).
WASHOUT_S = 240.0
#: When the washout starts, s after the bolus arrival: the families' recirculation is half-way
#: up 14 s after the arrival, when the first pass is nearly over.
WASHOUT_START_S = 14.0
#: K^trans of the grid's rows, mL/100g/min: 0 (intact barrier) to the 10–15 of high-grade
#: gliomas measured by CT perfusion.
KTRANS_ML_100G_MIN = (0.0, 1.0, 2.0, 4.0, 8.0, 15.0)
#: CBV of the grid's columns, mL/100 g: normal (2–4) to tumour neovasculature (6–8).
CBV_ML_100G = (2.0, 4.0, 6.0, 8.0)
#: The background's CBF (mL/100g/min) and MTT (s): normal tissue with an intact barrier.
BACKGROUND = (40.0, 4.0)
#: Tile side and gap between tiles, pixels.
_TILE, _GAP = 11, 3


@dataclass(frozen=True)
class LeakageSpec:
    """How to build one leakage phantom.

    Attributes
    ----------
    model : ``"patlak"`` (no back-flux, v_e → ∞) or ``"two_compartment"`` (extended Tofts with
        ``ve_ml_100g``).
    ve_ml_100g : the EES volume v_e, mL/100 g (20: enhancing tumour's 10–40 %).
    ktrans_ml_100g_min, cbv_ml_100g : the grid's rows and columns.
    mtt_s : the tiles' mean transit time, s (CBF = 60 · CBV / MTT).
    residue : the intravascular residue's shape (:func:`ctp_node.phantom.families.residue`).
    dense_interval_s, dense_until_s : frame spacing over the first pass, s, and until when, s.
    late_interval_s, duration_s : frame spacing after it, and the last frame's time, s.
    noise_hu : σ of white Gaussian noise per voxel and frame, HU.
    seed : random seed of the noise.
    slices : slices, each the same grid with its own noise.
    matrix, pixel_spacing_mm, slice_thickness_mm : in-plane size (voxels), pixel size and slice
        thickness, mm.
    aif_arrival_s, aif_peak_hu, recirculation_fraction : as in
        :class:`~ctp_node.phantom.families.FamilySpec` (the recirculating input).
    """

    model: str = "patlak"
    ve_ml_100g: float = 20.0
    ktrans_ml_100g_min: tuple[float, ...] = KTRANS_ML_100G_MIN
    cbv_ml_100g: tuple[float, ...] = CBV_ML_100G
    mtt_s: float = 5.0
    residue: str = "exponential"
    dense_interval_s: float = 1.2
    dense_until_s: float = 45.0
    late_interval_s: float = 4.0
    duration_s: float = 150.0
    noise_hu: float = 5.0
    seed: int = 0
    slices: int = 3
    matrix: int = 192
    pixel_spacing_mm: float = 1.1
    slice_thickness_mm: float = 5.0
    aif_arrival_s: float = 6.5
    aif_peak_hu: float = 485.0
    recirculation_fraction: float = 0.25


@dataclass(frozen=True)
class LeakageTruth:
    """The leakage phantom's truth (maps float32 ``(z, y, x)``, 0 outside tissue).

    Attributes
    ----------
    ktrans : K^trans, mL/100g/min.
    cbv : blood volume, mL/100 g (the intravascular part alone: what a leakage-corrected CBV
        should measure); ``vp = cbv · (1 − 0.25)`` the plasma volume.
    cbf : mL/100g/min.
    tissue_mask : brain tissue (tiles and background).
    region_labels : int32 ``(z, y, x)``, 1..n for the tiles, 0 elsewhere.
    region_values : float64 ``(n, 3)``: K^trans, CBV, CBF of each tile (row i = label i + 1).
    artery_mask : where the arteries were planted.
    aif_hu : the true arterial enhancement at the frame times, HU, ``(t,)``.
    """

    ktrans: np.ndarray
    cbv: np.ndarray
    cbf: np.ndarray
    tissue_mask: np.ndarray
    region_labels: np.ndarray
    region_values: np.ndarray
    artery_mask: np.ndarray
    aif_hu: np.ndarray

    @property
    def vp(self) -> np.ndarray:
        """The plasma volume, mL/100 g."""
        return self.cbv * (1.0 - SMALL_VESSEL_HEMATOCRIT)


@dataclass(frozen=True)
class LeakagePhantom:
    """A synthetic tumour acquisition and its truth."""

    acquisition: Acquisition
    truth: LeakageTruth


def frame_times(spec: LeakageSpec) -> np.ndarray:
    """Frame times, s: every ``dense_interval_s`` until ``dense_until_s``, then every
    ``late_interval_s`` up to ``duration_s``."""
    dense = np.arange(0.0, spec.dense_until_s + 1e-6, spec.dense_interval_s)
    late = np.arange(dense[-1] + spec.late_interval_s, spec.duration_s + 1e-6, spec.late_interval_s)
    return np.concatenate([dense, late])


def leaky_arterial_curve(t: np.ndarray, spec: LeakageSpec) -> np.ndarray:
    """The arterial enhancement at times ``t`` (s), HU: the families' recirculating input,
    falling with :data:`WASHOUT_S` from :data:`WASHOUT_START_S` after the arrival."""
    family = FamilySpec(
        arterial_input="recirculating",
        aif_arrival_s=spec.aif_arrival_s,
        aif_peak_hu=spec.aif_peak_hu,
        recirculation_fraction=spec.recirculation_fraction,
    )
    late = np.maximum(np.asarray(t, float) - spec.aif_arrival_s - WASHOUT_START_S, 0.0)
    return arterial_curve(t, family) * np.exp(-late / WASHOUT_S)


def leaky_tissue_curve(
    times: np.ndarray, spec: LeakageSpec, cbf: float, mtt_s: float, ktrans: float
) -> np.ndarray:
    """Tissue enhancement (HU) at ``times`` (s) for a CBF (mL/100g/min), MTT (s) and K^trans
    (mL/100g/min): the intravascular part plus the leaked part (module docstring)."""
    grid = np.arange(0.0, times[-1] + FINE_DT_S / 2, FINE_DT_S)
    n = grid.size
    arterial = leaky_arterial_curve(grid, spec)
    r = sampled_residue(n, FINE_DT_S, mtt_s, 0.0, spec.residue)
    blood = (DENSITY_G_ML / HEMATOCRIT_FACTOR) * cbf / 6000.0
    curve = blood * FINE_DT_S * np.convolve(arterial, r)[:n]
    if ktrans > 0:
        if spec.model == "patlak":
            kernel = sampled_residue(n, FINE_DT_S, np.inf, 0.0, "box")
        elif spec.model == "two_compartment":
            back_flux_s = 60.0 * spec.ve_ml_100g / ktrans  # 1 / k_ep, s
            kernel = sampled_residue(n, FINE_DT_S, back_flux_s, 0.0, "exponential")
        else:
            raise ValueError(f"model must be patlak or two_compartment, not {spec.model!r}")
        plasma = arterial / (1.0 - LARGE_VESSEL_HEMATOCRIT)
        leak = DENSITY_G_ML * ktrans / 6000.0
        curve = curve + leak * FINE_DT_S * np.convolve(plasma, kernel)[:n]
    return np.interp(times, grid, curve)


def make_leakage_phantom(spec: LeakageSpec = LeakageSpec()) -> LeakagePhantom:
    """Build one leakage phantom: its acquisition (HU ``(t, z, y, x)``) and its truth."""
    head = head_of(spec.matrix, spec.pixel_spacing_mm, 0.85)
    times = frame_times(spec)
    n, nz = spec.matrix, spec.slices
    rows, cols = len(spec.ktrans_ml_100g_min), len(spec.cbv_ml_100g)
    y0 = (n - (rows * _TILE + (rows - 1) * _GAP)) // 2
    x0 = (n - (cols * _TILE + (cols - 1) * _GAP)) // 2
    labels = np.where(head.brain, 1, 0).astype(np.int32)  # 1: background
    region_labels = np.zeros((n, n), np.int32)
    params = [(*BACKGROUND, 0.0)]  # CBF, MTT, K^trans of label 1, 2, ...
    region_values = []
    for i, ktrans in enumerate(spec.ktrans_ml_100g_min):
        for j, cbv in enumerate(spec.cbv_ml_100g):
            y, x = y0 + i * (_TILE + _GAP), x0 + j * (_TILE + _GAP)
            params.append((60.0 * cbv / spec.mtt_s, spec.mtt_s, float(ktrans)))
            region_values.append((float(ktrans), float(cbv), 60.0 * cbv / spec.mtt_s))
            labels[y : y + _TILE, x : x + _TILE] = len(params)
            region_labels[y : y + _TILE, x : x + _TILE] = len(region_values)
    table = np.zeros((len(params) + 1, times.size), np.float32)
    for k, (cbf, mtt, ktrans) in enumerate(params, start=1):
        table[k] = leaky_tissue_curve(times, spec, cbf, mtt, ktrans)
    base = head.outside_brain_hu()
    base[head.brain] = HU["grid"]
    hu = np.repeat((np.moveaxis(table[labels], -1, 0) + base)[:, None], nz, axis=1)
    arteries = ellipse(head.yy, head.xx, 0.0, -57.0, 2.0, 2.0) | ellipse(
        head.yy, head.xx, 0.0, 57.0, 2.0, 2.0
    )
    aif = leaky_arterial_curve(times, spec)
    hu[:, :, arteries] = (HU["blood"] + aif[:, None, None]).astype(np.float32)
    if spec.noise_hu > 0:
        rng = np.random.default_rng(spec.seed)
        hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(spec.noise_hu)
    acquisition = acquisition_of(
        hu, times, np.zeros(nz), spec.pixel_spacing_mm, spec.slice_thickness_mm
    )
    values = np.array([(0.0, 0.0, 0.0)] + [(k, c * m / 60.0, c) for c, m, k in params])
    tissue = np.broadcast_to((labels > 0) & ~arteries, (nz, n, n)).copy()

    def tmap(column: int) -> np.ndarray:
        return np.where(tissue, values[labels, column][None], 0.0).astype(np.float32)

    truth = LeakageTruth(
        ktrans=tmap(0),
        cbv=tmap(1),
        cbf=tmap(2),
        tissue_mask=tissue,
        region_labels=np.broadcast_to(np.where(arteries, 0, region_labels), (nz, n, n)).copy(),
        region_values=np.asarray(region_values, float).reshape(-1, 3),
        artery_mask=np.broadcast_to(arteries, (nz, n, n)).copy(),
        aif_hu=aif.astype(np.float32),
    )
    return LeakagePhantom(acquisition=acquisition, truth=truth)
