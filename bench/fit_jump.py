"""Issue 33 diagnosis: the engine's grey-matter CBF error (%) on the noiseless "plateau
stroke" family with a box residue, at a few grey-matter MTTs, under engine settings switched
one at a time (which stage makes the +180 % jump). Run with
``OPENBLAS_NUM_THREADS=1 PYTHONPATH=. python bench/fit_jump.py`` (~1 min per row)."""

from __future__ import annotations

from dataclasses import replace

from bench import accuracy as A

#: Grey-matter MTTs (s) probed: 3.5 read right and 3.7/3.8 jumped with engine 0.18 (fixed in
#: 0.19: docs/measurements.md, "Issue 33, session 29").
MTTS_S = (3.5, 3.7, 3.8)
#: Settings switched, one row each (the empty one is the engine's default).
VARIANTS = (
    {},
    {"model_mtt_smoothing_voxels": 0.0},
    {"model_delay_window_s": 0.0},
    {"model_shape_prior_from_study": False},
    {"model_pool_radius_voxels": 0},
    {"exponential_peak_correction": False},
    {"model_based_flow": False},
    {"model_based_flow": False, "exponential_peak_correction": False},
)


def main() -> None:
    base = replace(A.FAMILIES["plateau stroke"], noise_hu=0.0)
    default = A.ENGINE
    for variant in VARIANTS:
        A.ENGINE = replace(default, **variant)
        cells = []
        for mtt in MTTS_S:
            tissues = (("grey", 54.0, mtt, 0.0), *A.STROKE_TISSUES[1:])
            spec = replace(base, residue="box", plateau_fraction=0.99, stroke_tissues=tissues)
            phantom = A.make_family_phantom(spec)
            maps = A.engine_maps(phantom.acquisition)
            cells.append(A.compartment_errors(maps, phantom.truth, tissues)[0])
        print(f"{variant or 'default'}: " + ", ".join(f"{c:+.1f}" for c in cells), flush=True)
    A.ENGINE = default


if __name__ == "__main__":
    main()
