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
from ctp_node.phantom.anatomy import HU, Head, Layout, head_of, layout_of

_FINE_DT_S = 0.05


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


def fine_inputs(spec: PhantomSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The acquisition's frame times (s), the fine grid the curves are convolved on (s, every
    :data:`_FINE_DT_S`, 40 s past the acquisition so that the convolutions' tails are whole)
    and the arterial input on it (HU above blood)."""
    fine_t = np.arange(0.0, spec.duration_s + 40.0, _FINE_DT_S)
    return _times(spec), fine_t, _arterial_input(spec, fine_t)


def sinus_curve(aif_fine: np.ndarray) -> np.ndarray:
    """The venous sinus' curve on the fine grid: the arterial input 4 s later, dispersed over
    2.5 s, its area kept."""
    return _disperse(aif_fine, 4.0, 2.5)


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


def make_phantom(spec: PhantomSpec = PhantomSpec()) -> Phantom:
    """Build the phantom acquisition (HU, ``(t, z, y, x)``) and its truth."""
    times, fine_t, aif_fine = fine_inputs(spec)
    head = head_of(spec.matrix, spec.pixel_spacing_mm, spec.artery_fraction)
    layout = layout_of(spec.slices, spec.max_grid_delay_s, head)
    offsets = np.where(np.arange(spec.slices) % 2 == 1, spec.slice_offset_s, 0.0)
    hu = _enhanced_hu(spec, head, layout, times, offsets, fine_t, aif_fine)
    if spec.motion_mm or spec.motion_deg:
        _move(spec, hu, times)
    rng = np.random.default_rng(spec.seed)
    if spec.noise_hu > 0:
        hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(spec.noise_hu)
    aif = np.interp(times, fine_t, aif_fine)
    return Phantom(
        acquisition=_acquisition(spec, hu, times, offsets),
        truth=_truth(spec, head, layout, aif),
    )


def _enhanced_hu(
    spec: PhantomSpec,
    head: Head,
    layout: Layout,
    times: np.ndarray,
    offsets: np.ndarray,
    fine_t: np.ndarray,
    aif_fine: np.ndarray,
) -> np.ndarray:
    """HU ``(t, z, y, x)``: every tissue label's curve on its slice's acquisition times, and the
    vessels' partial volumes (the occluded right artery delayed on the stroke slices)."""
    hu = np.empty((times.size, spec.slices, spec.matrix, spec.matrix), np.float32)
    blood = HU["blood"]
    for offset in np.unique(offsets):
        zs = np.flatnonzero(offsets == offset)
        when = times + offset
        table = np.zeros((len(layout.params) + 1, times.size), np.float32)
        for i, (cbf, mtt, d) in enumerate(layout.params, start=1):
            table[i] = np.interp(when, fine_t, tissue_curve(aif_fine, cbf, mtt, d, spec.residue))
        aif = np.interp(when, fine_t, aif_fine)
        vein = np.interp(when, fine_t, sinus_curve(aif_fine))
        occluded = np.interp(when, fine_t, _disperse(aif_fine, 2.0, 2.0))
        part = np.moveaxis(table[layout.labels[zs]], -1, 0) + layout.base[zs][None]
        grid_z = zs < layout.n_grid
        for frac, curve, sel_z in (
            (head.sinus, vein, np.ones(zs.size, bool)),
            (head.artery_left, aif, np.ones(zs.size, bool)),
            (head.artery_right, aif, grid_z),
            (head.artery_right, occluded, ~grid_z),
        ):
            if not sel_z.any():
                continue
            f = frac[None, None].astype(np.float32)
            sub = part[:, sel_z]
            sub *= 1.0 - f
            sub += f * (blood + curve[:, None, None, None].astype(np.float32))
            part[:, sel_z] = sub
        hu[:, zs] = part
    return hu


def _move(spec: PhantomSpec, hu: np.ndarray, times: np.ndarray) -> None:
    """Rotate and shift (in place) the frames from ``motion_start_fraction`` of the scan on."""
    from scipy.ndimage import affine_transform

    n, dx = spec.matrix, spec.pixel_spacing_mm
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


def _acquisition(
    spec: PhantomSpec, hu: np.ndarray, times: np.ndarray, offsets: np.ndarray
) -> Acquisition:
    return acquisition_of(hu, times, offsets, spec.pixel_spacing_mm, spec.slice_thickness_mm)


def acquisition_of(
    hu: np.ndarray,
    times: np.ndarray,
    offsets: np.ndarray,
    pixel_spacing_mm: float,
    slice_thickness_mm: float,
) -> Acquisition:
    """The phantom's HU ``(t, z, y, x)`` as an axial acquisition centred on the image: frames at
    ``times`` (s), slice ``z`` acquired ``offsets[z]`` s later, square pixels of
    ``pixel_spacing_mm``, contiguous slices ``slice_thickness_mm`` thick."""
    nz, n, dx = hu.shape[1], hu.shape[-1], pixel_spacing_mm
    positions = np.zeros((nz, 3))
    positions[:, 0] = -(n - 1) / 2 * dx
    positions[:, 1] = -(n - 1) / 2 * dx
    positions[:, 2] = np.arange(nz) * slice_thickness_mm
    return Acquisition(
        hu=hu.astype(np.float32, copy=False),
        times_s=(times + offsets.mean()).astype(np.float64),
        pixel_spacing_mm=(dx, dx),
        slice_spacing_mm=slice_thickness_mm,
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


def _truth(spec: PhantomSpec, head: Head, layout: Layout, aif: np.ndarray) -> PhantomTruth:
    shape = layout.labels.shape
    tissue = (layout.labels > 0) & ~head.vessel[None]
    core, tmax6, tmax10 = layout.core, layout.tmax6, layout.core.copy()

    def tmap(column: int) -> np.ndarray:
        values = np.zeros(len(layout.params) + 1)
        for i, p in enumerate(layout.params, start=1):
            cbf, mtt, d = p
            values[i] = (cbf, cbf * mtt / 60.0, mtt, d)[column]
        return np.where(tissue, values[layout.labels], 0.0).astype(np.float32)

    dx = spec.pixel_spacing_mm
    voxel_ml = dx * dx * spec.slice_thickness_mm / 1000.0
    return PhantomTruth(
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
        region_labels=layout.region_labels,
        region_values=np.asarray(layout.region_values).reshape(-1, 4),
        artery_mask=np.broadcast_to((head.artery_left > 0) | (head.artery_right > 0), shape).copy(),
        sinus_mask=np.broadcast_to(head.sinus > 0, shape).copy(),
        csf_mask=layout.csf,
        aif_hu=aif.astype(np.float32),
    )
