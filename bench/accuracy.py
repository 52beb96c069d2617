"""Accuracy of the perfusion engine against the digital phantom's truth.

Prints one table: phantom variants × quantities, for the engine (oSVD) and a plain
fixed-threshold block-circulant SVD baseline side by side. Run: ``python bench/accuracy.py``;
``python bench/accuracy.py --seeds`` prints the stroke volumes' spread over ten noise seeds.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
from scipy import ndimage

from ctp_node.perfusion import PerfusionParameters, compute_perfusion
from ctp_node.phantom import PhantomSpec, make_phantom

ENGINE = PerfusionParameters()
#: Plain bSVD: one fixed 20 % threshold, no denoising, no venous correction of the AIF, the
#: AIF from the best few voxels only.
BASELINE = replace(
    ENGINE,
    exponential_peak_correction=False,
    model_based_flow=False,
    aif_max_voxels=ENGINE.aif_voxels,
    tmax_from_onset=False,
    svd_threshold_min=0.2,
    svd_threshold_max=0.2,
    svd_threshold_steps=1,
    oscillation_index_max=1.0,
    denoise_radius_voxels=0,
    venous_correction=False,
)

VARIANTS = {
    "σ0 exp": PhantomSpec(noise_hu=0.0),
    "σ5 exp": PhantomSpec(noise_hu=5.0),
    "σ5 exp seed7": PhantomSpec(noise_hu=5.0, seed=7),
    "σ10 exp": PhantomSpec(noise_hu=10.0),
    "σ5 linear": PhantomSpec(residue="linear"),
    "σ5 box": PhantomSpec(residue="box"),
    "σ5 nonuniform": PhantomSpec(sampling="nonuniform", seed=1),
    "σ5 dt1 50s": PhantomSpec(interval_s=1.0, duration_s=50.0, seed=2),
    "σ5 aif late": PhantomSpec(aif_arrival_s=9.0, seed=3),
    "σ5 motion": PhantomSpec(motion_mm=3.0, motion_deg=3.0, motion_start_fraction=0.8, seed=4),
    "σ5 shuttle 1s": PhantomSpec(slice_offset_s=1.0, seed=5),
}


def region_errors(result, truth) -> dict[str, float]:
    """Median errors over the grid blocks (block means inside a 2-voxel margin)."""
    labels = truth.region_labels
    eroded = np.zeros_like(labels)
    for z in range(labels.shape[0]):
        for lab in np.unique(labels[z])[1:]:
            inner = ndimage.binary_erosion(labels[z] == lab, iterations=2)
            eroded[z][inner] = lab
    n = truth.region_values.shape[0]
    idx = np.arange(1, n + 1)

    def means(m):
        return ndimage.mean(m, eroded, idx)

    cbf, cbv, mtt, tmax = (means(result.maps[k]) for k in ("CBF", "CBV", "MTT", "Tmax"))
    tv = truth.region_values
    delays = tv[:, 3]
    d0, d5 = delays == delays.min(), delays == delays.max()
    slope5 = float(np.mean(cbf[d5] / cbf[d0])) if d5.any() and d0.any() else float("nan")
    fit = np.polyfit(tv[:, 0], cbf, 1)[0]
    return {
        "CBF %": 100 * float(np.median(np.abs(cbf / tv[:, 0] - 1))),
        "CBF slope": float(fit),
        "CBV %": 100 * float(np.median(np.abs(cbv / tv[:, 1] - 1))),
        "MTT %": 100 * float(np.median(np.abs(mtt / tv[:, 2] - 1))),
        "Tmax s": float(np.median(np.abs(tmax - delays))),
        "CBF d5/d0": slope5,
        "core %": 100 * (result.volumes.core_ml / truth.core_ml - 1),
        "Tmax6 %": 100 * (result.volumes.tmax6_ml / truth.tmax6_ml - 1),
    }


def main(variants: dict[str, PhantomSpec] = VARIANTS) -> None:
    columns = ["CBF %", "CBF slope", "CBV %", "MTT %", "Tmax s", "CBF d5/d0", "core %", "Tmax6 %"]
    print(f"{'variant':<15}{'method':<8}" + "".join(f"{c:>11}" for c in columns))
    for name, spec in variants.items():
        phantom = make_phantom(spec)
        for method, params in (("engine", ENGINE), ("bSVD", BASELINE)):
            result = compute_perfusion(phantom.acquisition, params)
            err = region_errors(result, phantom.truth)
            print(f"{name:<15}{method:<8}" + "".join(f"{err[c]:>11.2f}" for c in columns))
        sys.stdout.flush()
    print(
        "CBF/CBV/MTT %: median |relative error| of block means; Tmax s: median |Tmax − true "
        "delay|;\nCBF d5/d0: block CBF at 5 s delay / at 0 s; core/Tmax6 %: signed volume "
        "error vs truth."
    )


def core_misses(result, truth) -> tuple[float, float, float]:
    """Where the core volume is lost or gained, as % of the true core: true core missed on
    its rim (voxels with an in-plane neighbour outside the core) and inside it, and core
    found outside the true core."""
    true, found = truth.core_mask, result.core_mask
    inner = np.stack([ndimage.binary_erosion(plane) for plane in true])
    rim = true & ~inner
    n = max(int(true.sum()), 1)
    return tuple(100.0 * float(m.sum()) / n for m in (rim & ~found, inner & ~found, found & ~true))


def seed_spread(seeds: range = range(10)) -> None:
    """Core and Tmax > 6 s volume errors of the engine over noise seeds (σ = 5 HU): the
    phantom's core (CBF 6 vs a normal reference of 31 ml/100g/min, rCBF 19 %) lies close to
    the 30 % threshold, so the noise realisation moves its volume; one seed says little.
    The last three columns say where the core error comes from (:func:`core_misses`)."""
    columns = ["core %", "Tmax6 %", "CBF %", "CBV %", "rim miss", "in miss", "outside"]
    print(f"{'seed':<6}" + "".join(f"{c:>9}" for c in columns))
    rows = []
    for seed in seeds:
        phantom = make_phantom(PhantomSpec(noise_hu=5.0, seed=seed))
        result = compute_perfusion(phantom.acquisition, ENGINE)
        err = region_errors(result, phantom.truth)
        rows.append([err[c] for c in columns[:4]] + list(core_misses(result, phantom.truth)))
        print(f"{seed:<6}" + "".join(f"{v:>9.1f}" for v in rows[-1]), flush=True)
    values = np.array(rows)
    for label, stat in (("mean", np.mean), ("median", np.median)):
        print(f"{label:<6}" + "".join(f"{v:>9.1f}" for v in stat(values, axis=0)))
    print(f"|core| ≤ 15 %: {int(np.sum(np.abs(values[:, 0]) <= 15))} of {len(rows)} seeds")
    print(
        "rim miss / in miss: true core not found on its rim (in-plane edge voxels) / inside "
        "it; outside: core found outside the true core; all % of the true core volume."
    )


if __name__ == "__main__":
    if "--seeds" in sys.argv:
        seed_spread()
    else:
        main()
