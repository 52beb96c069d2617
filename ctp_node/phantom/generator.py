"""A digital CT perfusion phantom with known truth (after Kudo et al., Radiology 2013).

The arterial input is a gamma variate with recirculation; tissue curves are
``C(t) = (ρ / k_H) · CBF / 6000 · (AIF ⊗ R)(t − delay)`` with an exponential, linear or box
residue R of mean transit time MTT (so that CBV = CBF · MTT / 60). The head has scalp, skull,
grey and white matter, ventricles with CSF, partial-volume arteries and a superior sagittal sinus
carrying the venous outflow (delayed, dispersed, area-preserving), so that absolute CBF and CBV
need the venous partial-volume correction.

Slices: the first ones hold a 4 × 4 grid of CBF × MTT blocks, each slice at one delay (0–5 s);
the last two hold an anatomical stroke (core, penumbra, benign oligaemia) in the image-right
hemisphere with an occluded, delayed artery on that side. Axis order ``(t, z, y, x)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctp_node.perfusion.acquisition import Acquisition, AcquisitionFacts

_FINE_DT_S = 0.05
#: Pre-contrast attenuation in HU.
_HU = {
    "air": -1000.0,
    "scalp": 40.0,
    "bone": 1000.0,
    "csf": 5.0,
    "gm": 38.0,
    "wm": 28.0,
    "grid": 33.0,
    "blood": 42.0,
}
#: CBF (ml/100g/min) and MTT (s) of the grid; of normal tissue; of the stroke compartments
#: (CBF, MTT, delay s).
GRID_CBF = (20.0, 35.0, 50.0, 65.0)
GRID_MTT_S = (3.0, 4.5, 6.0, 8.0)
_GM = (55.0, 4.0)
_WM = (22.0, 5.0)
_BACKGROUND = (25.0, 5.0)
_CORE = (6.0, 10.0, 12.0)
_PENUMBRA = (25.0, 8.0, 8.0)
_OLIGAEMIA = (38.0, 6.0, 4.5)


@dataclass(frozen=True)
class PhantomSpec:
    """How to build the phantom.

    Attributes
    ----------
    matrix : in-plane size (square), voxels.
    slices : number of slices (the last two hold the stroke when there are at least four).
    duration_s : acquisition length in s.
    interval_s : sampling interval in s (uniform sampling; the mean scale for non-uniform).
    noise_hu : standard deviation of the Gaussian image noise, HU.
    seed : random seed of the noise.
    slice_thickness_mm : slice spacing and thickness, mm.
    pixel_spacing_mm : in-plane voxel size, mm (128 × 1.72 mm = 220 mm field of view).
    residue : ``"exponential"``, ``"linear"`` or ``"box"``.
    max_grid_delay_s : the grid slices' delays run from 0 to this, in s.
    sampling : ``"uniform"`` or ``"nonuniform"`` (dense ``interval_s / 1.5`` during the first
        half, sparse ``2 · interval_s`` after).
    aif_arrival_s : bolus arrival in the feeding arteries, s from the first image.
    aif_peak_hu : first-pass peak enhancement of pure arterial blood, HU.
    artery_fraction : fraction of the artery voxel that is blood at the centre (partial volume).
    motion_mm : in-plane translation (along x) applied to the moved frames, mm (0 = none).
    motion_deg : in-plane rotation about the image centre applied to the moved frames, degrees.
    motion_start_fraction : frames from this fraction of the duration on have moved.
    slice_offset_s : odd slices are acquired this much later than even ones (a shuttle or
        toggling-table acquisition alternating two positions), s; 0 = all slices together.
    """

    matrix: int = 128
    slices: int = 8
    duration_s: float = 60.0
    interval_s: float = 1.5
    noise_hu: float = 5.0
    seed: int = 0
    slice_thickness_mm: float = 5.0
    pixel_spacing_mm: float = 1.72
    residue: str = "exponential"
    max_grid_delay_s: float = 5.0
    sampling: str = "uniform"
    aif_arrival_s: float = 6.0
    aif_peak_hu: float = 450.0
    artery_fraction: float = 0.7
    motion_mm: float = 0.0
    motion_deg: float = 0.0
    motion_start_fraction: float = 0.75
    slice_offset_s: float = 0.0


@dataclass(frozen=True)
class PhantomTruth:
    """The known perfusion of the phantom (maps float32 ``(z, y, x)``, 0 outside tissue).

    Attributes
    ----------
    cbf, cbv, mtt, delay : ml/100g/min, ml/100g, s, s (delay = true Tmax, relative to the AIF).
    tissue_mask : brain parenchyma (no CSF, vessels, bone).
    core_mask, tmax6_mask, tmax10_mask : the planted stroke compartments.
    core_ml, tmax6_ml, tmax10_ml : their volumes in mL.
    region_labels : int32 ``(z, y, x)``, 1..n for the grid blocks, 0 elsewhere.
    region_values : float64 ``(n, 4)``: CBF, CBV, MTT, delay of each block (row i = label i+1).
    artery_mask, sinus_mask, csf_mask : where arteries, the sinus and CSF were planted.
    aif_hu : true arterial concentration (pure blood), HU above baseline, ``(t,)``.
    """

    cbf: np.ndarray
    cbv: np.ndarray
    mtt: np.ndarray
    delay: np.ndarray
    tissue_mask: np.ndarray
    core_mask: np.ndarray
    tmax6_mask: np.ndarray
    tmax10_mask: np.ndarray
    core_ml: float
    tmax6_ml: float
    tmax10_ml: float
    region_labels: np.ndarray
    region_values: np.ndarray
    artery_mask: np.ndarray
    sinus_mask: np.ndarray
    csf_mask: np.ndarray
    aif_hu: np.ndarray

    def to_dict(self) -> dict[str, float | None]:
        """Scalar truths (mL; ratios unitless) for a JSON ground-truth file."""
        core, t6, t10 = self.core_ml, self.tmax6_ml, self.tmax10_ml
        return {
            "core_ml": core,
            "tmax6_ml": t6,
            "tmax10_ml": t10,
            "mismatch_ml": t6 - core,
            "mismatch_ratio": t6 / core if core > 0 else None,
            "hypoperfusion_intensity_ratio": t10 / t6 if t6 > 0 else None,
        }


@dataclass(frozen=True)
class Phantom:
    """A synthetic acquisition and its truth."""

    acquisition: Acquisition
    truth: PhantomTruth


def _times(spec: PhantomSpec) -> np.ndarray:
    if spec.sampling == "uniform":
        return np.arange(0.0, spec.duration_s + 1e-6, spec.interval_s)
    if spec.sampling == "nonuniform":
        dense = np.arange(0.0, spec.duration_s / 2, spec.interval_s / 1.5)
        sparse = np.arange(
            dense[-1] + 2 * spec.interval_s, spec.duration_s + 1e-6, 2 * spec.interval_s
        )
        return np.concatenate([dense, sparse])
    raise ValueError(f"sampling must be 'uniform' or 'nonuniform', not {spec.sampling!r}")


def _gamma(t: np.ndarray, alpha: float, beta_s: float) -> np.ndarray:
    g = np.where(t > 0, np.maximum(t, 0) ** alpha * np.exp(-np.maximum(t, 0) / beta_s), 0.0)
    return g / g.max()


def _disperse(curve: np.ndarray, shift_s: float, tau_s: float) -> np.ndarray:
    """Area-preserving delay plus exponential dispersion on the fine grid."""
    t = np.arange(curve.size) * _FINE_DT_S
    kernel = np.where(t >= shift_s, np.exp(-(t - shift_s) / tau_s), 0.0)
    kernel /= kernel.sum()
    return np.convolve(curve, kernel)[: curve.size]


def _arterial_input(spec: PhantomSpec, fine_t: np.ndarray) -> np.ndarray:
    first_pass = spec.aif_peak_hu * _gamma(fine_t - spec.aif_arrival_s, 3.0, 1.5)
    return first_pass + 0.25 * _disperse(first_pass, 12.0, 6.0)


def _residue(t: np.ndarray, mtt_s: float, shape: str) -> np.ndarray:
    if shape == "exponential":
        return np.exp(-t / mtt_s)
    if shape == "linear":
        return np.clip(1.0 - t / (2.0 * mtt_s), 0.0, None)
    if shape == "box":
        return (t < mtt_s).astype(float)
    raise ValueError(f"residue must be exponential, linear or box, not {shape!r}")


def tissue_curve(
    aif_fine: np.ndarray,
    cbf: float,
    mtt_s: float,
    delay_s: float,
    residue: str,
    density_g_ml: float = 1.04,
    hematocrit_factor: float = 0.73,
) -> np.ndarray:
    """Tissue enhancement (HU) on the fine grid for one CBF, MTT and delay."""
    t = np.arange(aif_fine.size) * _FINE_DT_S
    r = _residue(t, mtt_s, residue)
    r = r[: max(int(np.flatnonzero(r > 1e-6)[-1]) + 2, 2)] if np.any(r > 1e-6) else r[:2]
    conv = np.convolve(aif_fine, r)[: aif_fine.size] * _FINE_DT_S
    shifted = np.interp(t - delay_s, t, conv, left=0.0)
    return (density_g_ml / hematocrit_factor) * cbf / 6000.0 * shifted


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float):
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _disc_fraction(
    yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float, spacing: float
) -> np.ndarray:
    """Fraction of each pixel inside a disc (4 × 4 supersampling), all in mm."""
    offsets = (np.arange(4) + 0.5) / 4 - 0.5
    frac = np.zeros(yy.shape)
    for oy in offsets:
        for ox in offsets:
            frac += (yy + oy * spacing - cy) ** 2 + (xx + ox * spacing - cx) ** 2 <= r * r
    return frac / 16.0


def make_phantom(spec: PhantomSpec = PhantomSpec()) -> Phantom:
    """Build the phantom acquisition (HU, ``(t, z, y, x)``) and its truth."""
    times = _times(spec)
    fine_t = np.arange(0.0, spec.duration_s + 40.0, _FINE_DT_S)
    aif_fine = _arterial_input(spec, fine_t)
    n, nz = spec.matrix, spec.slices
    dx = spec.pixel_spacing_mm
    coords = (np.arange(n) - (n - 1) / 2) * dx
    yy, xx = np.meshgrid(coords, coords, indexing="ij")

    head = _ellipse(yy, xx, 0, 0, 96, 78)
    skull_outer = _ellipse(yy, xx, 0, 0, 92, 74)
    brain = _ellipse(yy, xx, 0, 0, 85, 67)
    cortex = brain & ~_ellipse(yy, xx, 0, 0, 77, 59)
    ventricles = _ellipse(yy, xx, -5, -12, 18, 6) | _ellipse(yy, xx, -5, 12, 18, 6)
    sinus = _disc_fraction(yy, xx, 78.0, 0.0, 4.5, dx)
    artery_left = _disc_fraction(yy, xx, 0.0, -57.0, 1.6, dx) * spec.artery_fraction / 0.85
    artery_right = _disc_fraction(yy, xx, 0.0, 57.0, 1.6, dx) * spec.artery_fraction / 0.85
    artery_left, artery_right = np.clip(artery_left, 0, 1), np.clip(artery_right, 0, 1)
    vessel = (sinus > 0) | (artery_left > 0) | (artery_right > 0)

    n_stroke = 2 if nz >= 4 else 0
    n_grid = nz - n_stroke
    delays = np.linspace(0.0, spec.max_grid_delay_s, n_grid) if n_grid > 1 else np.zeros(n_grid)

    params: list[tuple[float, float, float]] = []  # (cbf, mtt, delay) per tissue label

    def label_of(p: tuple[float, float, float]) -> int:
        if p not in params:
            params.append(p)
        return params.index(p) + 1

    shape = (nz, n, n)
    labels = np.zeros(shape, np.int32)
    base = np.full(shape, _HU["air"], np.float32)
    region_labels = np.zeros(shape, np.int32)
    region_values: list[tuple[float, float, float, float]] = []
    core = np.zeros(shape, bool)
    tmax6 = np.zeros(shape, bool)
    csf = np.zeros(shape, bool)
    block_mm, gap_mm = 20.0, 3.0
    starts = -(4 * block_mm + 3 * gap_mm) / 2 + np.arange(4) * (block_mm + gap_mm)
    for z in range(nz):
        b = base[z]
        b[head] = _HU["scalp"]
        b[skull_outer] = _HU["bone"]
        b[brain] = _HU["wm"]
        lab = labels[z]
        if z < n_grid:
            d = float(delays[z])
            b[brain] = _HU["grid"]
            lab[brain] = label_of((*_BACKGROUND, d))
            for i, cbf in enumerate(GRID_CBF):
                for j, mtt in enumerate(GRID_MTT_S):
                    block = (
                        (yy >= starts[i])
                        & (yy < starts[i] + block_mm)
                        & (xx >= starts[j])
                        & (xx < starts[j] + block_mm)
                    )
                    lab[block] = label_of((cbf, mtt, d))
                    region_values.append((cbf, cbf * mtt / 60.0, mtt, d))
                    region_labels[z][block] = len(region_values)
        else:
            b[cortex] = _HU["gm"]
            lab[brain] = label_of((*_WM, 0.0))
            lab[cortex] = label_of((*_GM, 0.0))
            right = brain & (xx > 3.0)
            olig = right & _ellipse(yy, xx, -5, 32, 42, 31)
            pen = right & _ellipse(yy, xx, -5, 32, 33, 25)
            cor = right & _ellipse(yy, xx, -5, 32, 20, 15)
            lab[olig] = label_of(_OLIGAEMIA)
            lab[pen] = label_of(_PENUMBRA)
            lab[cor] = label_of(_CORE)
            b[ventricles] = _HU["csf"]
            lab[ventricles] = 0
            csf[z] = ventricles
            core[z] = cor & ~ventricles & ~vessel
            tmax6[z] = pen & ~ventricles & ~vessel
    tissue = (labels > 0) & ~vessel[None]
    tmax10 = core.copy()

    # Curves for every tissue label on each slice's acquisition times.
    offsets = np.where(np.arange(nz) % 2 == 1, spec.slice_offset_s, 0.0)
    hu = np.empty((times.size, nz, n, n), np.float32)
    blood = _HU["blood"]
    for offset in np.unique(offsets):
        zs = np.flatnonzero(offsets == offset)
        when = times + offset
        table = np.zeros((len(params) + 1, times.size), np.float32)
        for i, (cbf, mtt, d) in enumerate(params, start=1):
            table[i] = np.interp(when, fine_t, tissue_curve(aif_fine, cbf, mtt, d, spec.residue))
        aif = np.interp(when, fine_t, aif_fine)
        vein = np.interp(when, fine_t, _disperse(aif_fine, 4.0, 2.5))
        occluded = np.interp(when, fine_t, _disperse(aif_fine, 2.0, 2.0))
        part = np.moveaxis(table[labels[zs]], -1, 0) + base[zs][None]
        grid_z = zs < n_grid
        for frac, curve, sel_z in (
            (sinus, vein, np.ones(zs.size, bool)),
            (artery_left, aif, np.ones(zs.size, bool)),
            (artery_right, aif, grid_z),
            (artery_right, occluded, ~grid_z),
        ):
            if not sel_z.any():
                continue
            f = frac[None, None].astype(np.float32)
            sub = part[:, sel_z]
            sub *= 1.0 - f
            sub += f * (blood + curve[:, None, None, None].astype(np.float32))
            part[:, sel_z] = sub
        hu[:, zs] = part
    aif = np.interp(times, fine_t, aif_fine)
    if spec.motion_mm or spec.motion_deg:
        from scipy.ndimage import affine_transform

        theta = np.deg2rad(spec.motion_deg)
        rot = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
        matrix = np.eye(3)
        matrix[1:, 1:] = rot
        centre = np.full(2, (n - 1) / 2)
        offset = np.zeros(3)
        offset[1:] = centre - rot @ centre - np.array([0.0, spec.motion_mm / dx])
        moved = times >= spec.motion_start_fraction * spec.duration_s
        for ti in np.flatnonzero(moved):
            hu[ti] = affine_transform(hu[ti], matrix, offset=offset, order=1, mode="nearest")
    rng = np.random.default_rng(spec.seed)
    if spec.noise_hu > 0:
        hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(spec.noise_hu)

    def tmap(column: int) -> np.ndarray:
        values = np.zeros(len(params) + 1)
        for i, p in enumerate(params, start=1):
            cbf, mtt, d = p
            values[i] = (cbf, cbf * mtt / 60.0, mtt, d)[column]
        return np.where(tissue, values[labels], 0.0).astype(np.float32)

    voxel_ml = dx * dx * spec.slice_thickness_mm / 1000.0
    positions = np.zeros((nz, 3))
    positions[:, 0] = -(n - 1) / 2 * dx
    positions[:, 1] = -(n - 1) / 2 * dx
    positions[:, 2] = np.arange(nz) * spec.slice_thickness_mm
    acquisition = Acquisition(
        hu=hu.astype(np.float32, copy=False),
        times_s=(times + offsets.mean()).astype(np.float64),
        pixel_spacing_mm=(dx, dx),
        slice_spacing_mm=spec.slice_thickness_mm,
        slice_positions_mm=positions,
        orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        slice_times_s=times[:, None] + offsets[None, :],
        facts=AcquisitionFacts(
            kvp=80.0,
            exposure_mas=150.0,
            ctdivol_mgy=200.0,
            contrast_agent="Iohexol 350",
            contrast_volume_ml=40.0,
            contrast_rate_ml_s=5.0,
            patient_age_years=67.0,
            manufacturer="ctp-node",
            model="digital phantom (Kudo 2013 style)",
        ),
    )
    truth = PhantomTruth(
        cbf=tmap(0),
        cbv=tmap(1),
        mtt=tmap(2),
        delay=tmap(3),
        tissue_mask=tissue,
        core_mask=core & tissue,
        tmax6_mask=(core | tmax6) & tissue,
        tmax10_mask=tmax10 & tissue,
        core_ml=float((core & tissue).sum()) * voxel_ml,
        tmax6_ml=float(((core | tmax6) & tissue).sum()) * voxel_ml,
        tmax10_ml=float((tmax10 & tissue).sum()) * voxel_ml,
        region_labels=region_labels,
        region_values=np.asarray(region_values).reshape(-1, 4),
        artery_mask=np.broadcast_to((artery_left > 0) | (artery_right > 0), shape).copy(),
        sinus_mask=np.broadcast_to(sinus > 0, shape).copy(),
        csf_mask=csf,
        aif_hu=aif.astype(np.float32),
    )
    return Phantom(acquisition=acquisition, truth=truth)
