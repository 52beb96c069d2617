"""A vasospasm phantom (issue 34): a head whose one hemisphere has a longer mean transit time,
optionally turned in-plane (yaw) and off the image centre, with the true midline.

The anatomy is the stroke phantom's (:mod:`ctp_node.phantom.anatomy`: scalp, skull, grey and
white matter, ventricles, the two partial-volume arteries and the superior sagittal sinus), the
same on every slice, drawn in the head's own frame and placed in the image by a rotation of
``yaw_deg`` about the head's centre and a shift of ``offset_mm``. Curves are the generator's
(:func:`ctp_node.phantom.generator.tissue_curve`, delay 0): grey matter CBF 55 mL/100 g/min,
MTT 4 s; white matter 22 and 5 s; the affected hemisphere's MTT is longer by
``mtt_increase_s`` and its CBF multiplied by ``cbf_factor`` (CBV = CBF · MTT / 60 follows).
Axis order ``(t, z, y, x)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ctp_node.perfusion.acquisition import Acquisition
from ctp_node.phantom.anatomy import GREY_MATTER, HU, WHITE_MATTER, head_at
from ctp_node.phantom.generator import (
    PhantomSpec,
    acquisition_of,
    fine_inputs,
    sinus_curve,
    tissue_curve,
)


@dataclass(frozen=True)
class VasospasmSpec:
    """How to build the vasospasm phantom.

    Attributes
    ----------
    base : the acquisition (matrix, slices, timing, noise, residue, arterial input) as for
        :func:`~ctp_node.phantom.generator.make_phantom`; its motion and grid settings are not
        used.
    mtt_increase_s : added to the MTT of every tissue voxel of the affected hemisphere, s
        (0 = symmetric).
    cbf_factor : the affected hemisphere's CBF multiplied by this (1 = unchanged, so the CBV
        rises with the MTT, as with autoregulated vasodilation).
    delay_s : the bolus reaches the affected hemisphere's tissue this much later than the
        arterial input, s (a narrowed or collateral supply: its Tmax and TTP rise by it).
    affected : ``"image right"`` or ``"image left"``, in the head's own frame.
    yaw_deg : in-plane rotation of the head, degrees; the true midline's ``angle_deg``
        (:class:`ctp_node.perfusion.asymmetry.Midline`).
    offset_mm : ``(y, x)`` position of the head's centre from the image centre, mm.
    """

    base: PhantomSpec = field(default_factory=lambda: PhantomSpec(slices=4))
    mtt_increase_s: float = 0.0
    cbf_factor: float = 1.0
    delay_s: float = 0.0
    affected: str = "image right"
    yaw_deg: float = 0.0
    offset_mm: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class VasospasmTruth:
    """The phantom's truth (maps float32 ``(z, y, x)``, 0 outside tissue).

    Attributes
    ----------
    cbf, cbv, mtt : mL/100 g/min, mL/100 g, s.
    tissue_mask : grey and white matter (no CSF, vessels).
    intracranial_mask : inside the skull.
    affected_mask : the tissue of the affected hemisphere.
    midline_angle_deg, midline_offset_mm : the true midline, as
        :class:`ctp_node.perfusion.asymmetry.Midline` defines them.
    pre_contrast_hu : ``(z, y, x)`` HU before the bolus.
    """

    cbf: np.ndarray
    cbv: np.ndarray
    mtt: np.ndarray
    tissue_mask: np.ndarray
    intracranial_mask: np.ndarray
    affected_mask: np.ndarray
    midline_angle_deg: float
    midline_offset_mm: float
    pre_contrast_hu: np.ndarray


@dataclass(frozen=True)
class VasospasmPhantom:
    acquisition: Acquisition
    truth: VasospasmTruth


def _head_frame(spec: VasospasmSpec) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel centre in the head's frame ``(along the midline, across it)``, mm."""
    n, dx = spec.base.matrix, spec.base.pixel_spacing_mm
    coords = (np.arange(n) - (n - 1) / 2) * dx
    y, x = np.meshgrid(coords, coords, indexing="ij")
    y, x = y - spec.offset_mm[0], x - spec.offset_mm[1]
    theta = np.deg2rad(spec.yaw_deg)
    along = np.cos(theta) * y + np.sin(theta) * x
    across = -np.sin(theta) * y + np.cos(theta) * x
    return along, across


def make_vasospasm_phantom(spec: VasospasmSpec = VasospasmSpec()) -> VasospasmPhantom:
    """Build the acquisition (HU ``(t, z, y, x)``) and its truth."""
    if spec.affected not in ("image right", "image left"):
        raise ValueError(f"affected must be 'image right' or 'image left', not {spec.affected!r}")
    base, nz = spec.base, spec.base.slices
    yy, xx = _head_frame(spec)
    head = head_at(yy, xx, base.pixel_spacing_mm, base.artery_fraction)
    brain, cortex, ventricles = head.brain, head.cortex, head.ventricles
    sinus, arteries = head.sinus, (head.artery_left, head.artery_right)
    tissue = brain & ~ventricles & ~head.vessel
    affected = tissue & ((xx > 0) if spec.affected == "image right" else (xx < 0))

    pre = head.outside_brain_hu()
    pre[brain] = HU["wm"]
    pre[cortex] = HU["gm"]
    pre[ventricles & brain] = HU["csf"]

    # (CBF, MTT, delay) per label: 1 WM, 2 GM, 3 WM affected, 4 GM affected; 0 = no enhancement
    params = [
        (*WHITE_MATTER, 0.0),
        (*GREY_MATTER, 0.0),
        (WHITE_MATTER[0] * spec.cbf_factor, WHITE_MATTER[1] + spec.mtt_increase_s, spec.delay_s),
        (GREY_MATTER[0] * spec.cbf_factor, GREY_MATTER[1] + spec.mtt_increase_s, spec.delay_s),
    ]
    labels = np.zeros(yy.shape, np.int32)
    labels[tissue] = 1
    labels[tissue & cortex] = 2
    labels[affected] += 2

    times, fine_t, aif_fine = fine_inputs(base)
    table = np.zeros((len(params) + 1, times.size), np.float32)
    for i, (cbf, mtt, delay) in enumerate(params, start=1):
        table[i] = np.interp(times, fine_t, tissue_curve(aif_fine, cbf, mtt, delay, base.residue))
    slice_hu = np.moveaxis(table[labels], -1, 0) + pre[None]
    aif = np.interp(times, fine_t, aif_fine).astype(np.float32)
    vein = np.interp(times, fine_t, sinus_curve(aif_fine)).astype(np.float32)
    for fraction, curve in ((sinus, vein), (arteries[0], aif), (arteries[1], aif)):
        f = fraction[None].astype(np.float32)
        slice_hu = slice_hu * (1.0 - f) + f * (HU["blood"] + curve[:, None, None])
    hu = np.repeat(slice_hu[:, None].astype(np.float32), nz, axis=1)
    if base.noise_hu > 0:
        rng = np.random.default_rng(base.seed)
        hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(base.noise_hu)

    cbf_map = np.zeros(yy.shape, np.float32)
    mtt_map = np.zeros(yy.shape, np.float32)
    for i, (cbf, mtt, _) in enumerate(params, start=1):
        cbf_map[labels == i] = cbf
        mtt_map[labels == i] = mtt
    stack = lambda a: np.repeat(a[None], nz, axis=0)  # noqa: E731
    theta = np.deg2rad(spec.yaw_deg)
    offset = -np.sin(theta) * spec.offset_mm[0] + np.cos(theta) * spec.offset_mm[1]
    truth = VasospasmTruth(
        cbf=stack(cbf_map),
        cbv=stack(cbf_map * mtt_map / 60.0),
        mtt=stack(mtt_map),
        tissue_mask=stack(tissue),
        intracranial_mask=stack(brain),
        affected_mask=stack(affected),
        midline_angle_deg=float(spec.yaw_deg),
        midline_offset_mm=float(offset),
        pre_contrast_hu=stack(pre),
    )
    acquisition = acquisition_of(
        hu, times, np.zeros(nz), base.pixel_spacing_mm, base.slice_thickness_mm
    )
    return VasospasmPhantom(acquisition, truth)
