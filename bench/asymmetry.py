"""Hemispheric asymmetry (issue 34, vasospasm, first step) on the vasospasm phantom.

Prints one table: per phantom variant (symmetric; the image-right hemisphere's MTT + 2 s; each
with the head turned 10° or 20° and off the image centre; and with the CBF of the affected
side × 0.7) at σ 5 HU, the engine's maps
(:func:`ctp_node.perfusion.compute_perfusion`, default parameters) split at the midline that
:func:`ctp_node.perfusion.asymmetry.estimate_midline` finds and, beside it, at the engine's
present mean column of the intracranial region; the midline's error against the truth (angle
°, offset mm), the per-hemisphere MTT and CBF means (patient sides: the phantom is axial LPS,
so image right is the patient's left) and the asymmetry indices with their flags (default
thresholds: |ΔMTT| > 1.5 s, CBF ratio < 0.8). The truth row splits the true maps at the true
midline. Run: ``OPENBLAS_NUM_THREADS=1 python bench/asymmetry.py``; with ``--matrix``, the
midline search's time and error on finer matrices (its grid is in mm, not pixels).
"""

from __future__ import annotations

import sys
import time

import numpy as np
from scipy import ndimage

from ctp_node.perfusion import compute_perfusion
from ctp_node.perfusion.asymmetry import (
    Midline,
    estimate_midline,
    hemispheric_asymmetry,
    mean_column_hemispheres,
    split_hemispheres,
)
from ctp_node.phantom.generator import PhantomSpec
from ctp_node.phantom.vasospasm import VasospasmSpec, make_vasospasm_phantom

NOISE_HU = 5.0
#: name: (MTT increase s, CBF factor, yaw °, head centre (y, x) mm from the image centre,
#: the bolus's delay to the affected side s)
VARIANTS = {
    "symmetric": (0.0, 1.0, 0.0, (0.0, 0.0), 0.0),
    "MTT +2 s": (2.0, 1.0, 0.0, (0.0, 0.0), 0.0),
    "symmetric, yaw 10°, off-centre": (0.0, 1.0, 10.0, (6.0, -12.0), 0.0),
    "MTT +2 s, yaw 10°, off-centre": (2.0, 1.0, 10.0, (6.0, -12.0), 0.0),
    "MTT +2 s, yaw 20°, off-centre": (2.0, 1.0, 20.0, (-8.0, 10.0), 0.0),
    "MTT +2, CBF ×0.7, yaw 10°": (2.0, 0.7, 10.0, (6.0, -12.0), 0.0),
    "delay 3 s, yaw 10°, off-centre": (0.0, 1.0, 10.0, (6.0, -12.0), 3.0),
}
#: Frames before the bolus arrives (6 s at 1.5 s intervals): the pre-contrast image.
BASELINE_FRAMES = 3
BONE_HU = 300.0


def intracranial(pre_contrast_hu: np.ndarray) -> np.ndarray:
    """Inside the skull: the holes of the bone, slice by slice."""
    bone = pre_contrast_hu > BONE_HU
    filled = np.stack([ndimage.binary_fill_holes(b) for b in bone])
    return filled & ~bone


def row(variant: str, split: str, line: Midline | None, truth_line: Midline, result) -> str:
    if line is None:
        errors = "   —      —  "
    else:
        errors = (
            f"{line.angle_deg - truth_line.angle_deg:+6.1f} "
            f"{line.offset_mm - truth_line.offset_mm:+6.1f}"
        )
    mtt, cbf = result["MTT"], result["CBF"]
    flags = ",".join(n for n, r in result.items() if r.flagged) or "—"
    tmax = f"{result['Tmax'].difference:+5.2f}" if "Tmax" in result else "  —  "
    return (
        f"| {variant:31s} | {split:9s} | {errors} | {mtt.mean['left']:5.2f} "
        f"{mtt.mean['right']:5.2f} | {mtt.difference:+5.2f} | {tmax} | {cbf.mean['left']:5.1f} "
        f"{cbf.mean['right']:5.1f} | {cbf.ratio:4.2f} {cbf.lower_side[0].upper()} | {flags:9s} |"
    )


def main() -> None:
    base = PhantomSpec(slices=4, noise_hu=NOISE_HU)
    print(
        "| variant                         | split     | Δθ °  Δd mm   | MTT L  R    |"
        " ΔMTT  | ΔTmax | CBF L  R    | ratio  | flagged   |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for variant, (increase, cbf_factor, yaw, offset, delay) in VARIANTS.items():
        spec = VasospasmSpec(
            base, increase, cbf_factor, delay_s=delay, yaw_deg=yaw, offset_mm=offset
        )
        phantom = make_vasospasm_phantom(spec)
        acq, truth = phantom.acquisition, phantom.truth
        spacing = acq.pixel_spacing_mm
        true_line = Midline(truth.midline_angle_deg, truth.midline_offset_mm, 1.0)
        true_maps = {"MTT": truth.mtt, "CBF": truth.cbf, "CBV": truth.cbv}
        halves = split_hemispheres(truth.tissue_mask, true_line, spacing, acq.orientation)
        print(row(variant, "truth", None, true_line, hemispheric_asymmetry(true_maps, halves)))

        result = compute_perfusion(acq)
        maps = {k: result.maps[k] for k in ("MTT", "CBF", "CBV", "TTP", "Tmax")}
        pre = acq.hu[:BASELINE_FRAMES].mean(axis=0)
        region = intracranial(pre)
        line = estimate_midline(pre, region, spacing)
        halves = split_hemispheres(result.tissue_mask, line, spacing, acq.orientation)
        print(row(variant, "midline", line, true_line, hemispheric_asymmetry(maps, halves)))
        naive = mean_column_hemispheres(result.tissue_mask, region, spacing, acq.orientation)
        print(
            row(variant, "mean col", naive.midline, true_line, hemispheric_asymmetry(maps, naive))
        )


def midline_cost(cases=((128, 4, 10.0), (256, 8, 7.6), (512, 8, 10.0), (512, 16, 17.3))) -> None:
    """Per (matrix, slices, yaw °) on a 220 mm field of view: the seconds
    :func:`estimate_midline` takes and its angle (°) and offset (mm) errors."""
    print("| matrix | slices | yaw ° | midline s | Δθ ° | Δd mm |")
    print("|---|---|---|---|---|---|")
    for matrix, slices, yaw in cases:
        base = PhantomSpec(
            matrix=matrix, slices=slices, pixel_spacing_mm=220.0 / matrix, noise_hu=NOISE_HU
        )
        spec = VasospasmSpec(base, 2.0, yaw_deg=yaw, offset_mm=(3.0, -4.0))
        phantom = make_vasospasm_phantom(spec)
        pre = phantom.acquisition.hu[:BASELINE_FRAMES].mean(axis=0)
        started = time.perf_counter()
        line = estimate_midline(pre, intracranial(pre), phantom.acquisition.pixel_spacing_mm)
        took = time.perf_counter() - started
        truth = phantom.truth
        print(
            f"| {matrix} | {slices} | {yaw:g} | {took:.2f} | "
            f"{line.angle_deg - truth.midline_angle_deg:+.2f} | "
            f"{line.offset_mm - truth.midline_offset_mm:+.2f} |"
        )


if __name__ == "__main__":
    if "--matrix" in sys.argv:
        midline_cost()
    else:
        main()
