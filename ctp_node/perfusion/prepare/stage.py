"""Stage 1 of the engine: the time grid, baseline and bolus arrival, the image noise, the
intracranial and parenchyma masks, and the vessel candidates with their curve features.

Axis order ``(t, z, y, x)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ctp_node.perfusion.acquisition import Acquisition
from ctp_node.perfusion.errors import NoBrainTissueError
from ctp_node.perfusion.parameters import PerfusionParameters
from ctp_node.perfusion.prepare import features, masks, timing
from ctp_node.perfusion.prepare.features import CurveFeatures
from ctp_node.perfusion.prepare.grid import TimeGrid

#: The whole-brain curve must rise at least this much for contrast to count as arrived, HU.
_MIN_BRAIN_RISE_HU = 1.5
#: Baseline attenuation accepted for arterial/venous candidates (blood, partial volume), HU.
_VESSEL_BASELINE_MAX_HU = 150.0


@dataclass(frozen=True)
class Prepared:
    """What every later stage reads: the time grid, noise, baseline and masks.

    Attributes
    ----------
    grid : the uniform time grid the curves are resampled onto.
    shape : ``(z, y, x)`` of the acquisition.
    workers : threads for the chunked stages.
    noise : image noise σ, HU.
    area_noise : σ of white noise that gives the noise of 3 × 3 means, HU.
    baseline_frames : images before contrast arrival.
    baseline : their mean, HU ``(z, y, x)``.
    baseline_noise : its noise σ, HU.
    intracranial, parenchyma : masks ``(z, y, x)``.
    candidates : voxels that may be arterial or venous selection.
    features : the candidates' curve features.
    warnings : for the report.
    """

    grid: TimeGrid
    shape: tuple[int, int, int]
    workers: int
    noise: float
    area_noise: float
    baseline_frames: int
    baseline: np.ndarray
    baseline_noise: float
    intracranial: np.ndarray
    parenchyma: np.ndarray
    candidates: np.ndarray
    features: CurveFeatures
    warnings: tuple[str, ...]


def prepare(acq: Acquisition, p: PerfusionParameters) -> Prepared:
    """Timing, noise, baseline and masks; raises when there is no brain or no usable timing."""
    timing.check_duration(acq.times_s)
    grid = TimeGrid(acq, p.resample_interval_s)
    nt = acq.hu.shape[0]
    # Parenchyma from the first image (pre-contrast unless NoBaselineError below).
    brain0 = masks.parenchyma_mask(acq.hu[0], p.tissue_min_hu, p.tissue_max_hu)
    if brain0.sum() < 50:
        raise NoBrainTissueError(
            "No brain tissue was found in the images (no voxels of 15–70 HU inside the skull); "
            "check that the series is a head CT perfusion acquisition."
        )
    brain_idx = np.flatnonzero(brain0)
    brain_idx = brain_idx[:: max(1, brain_idx.size // 100_000)]
    brain_curve = acq.hu.reshape(nt, -1)[:, brain_idx].mean(axis=1, dtype=np.float64)
    baseline_frames, _ = timing.bolus_arrival(
        brain_curve, acq.times_s, min_rise_hu=_MIN_BRAIN_RISE_HU
    )
    noise = features.image_noise_hu(acq.hu, brain0)
    # The noise of 3 × 3 means, as the σ of white noise that would give it: CT noise is
    # spatially correlated (the reconstruction kernel), so averaging neighbours removes less
    # of it than it would of independent noise, and the filters must allow for that.
    area_noise = max(noise, 3.0 * features.image_noise_hu(acq.hu, brain0, window=3))
    baseline = acq.hu[:baseline_frames].mean(axis=0)
    baseline_noise = noise / np.sqrt(max(baseline_frames, 1))
    intracranial = masks.intracranial_mask(baseline)
    parenchyma = masks.parenchyma_mask(
        baseline,
        p.tissue_min_hu,
        p.tissue_max_hu,
        intracranial,
        baseline_noise_hu=baseline_noise,
    )
    smooth_base = masks.smoothed_baseline(baseline)
    candidates = (
        intracranial
        & (smooth_base >= p.tissue_min_hu - 10)
        & (smooth_base <= _VESSEL_BASELINE_MAX_HU)
    )
    return Prepared(
        grid=grid,
        shape=acq.hu.shape[1:],
        workers=p.worker_threads if p.worker_threads > 0 else (os.cpu_count() or 1),
        noise=noise,
        area_noise=area_noise,
        baseline_frames=baseline_frames,
        baseline=baseline,
        baseline_noise=baseline_noise,
        intracranial=intracranial,
        parenchyma=parenchyma,
        candidates=candidates,
        features=features.vessel_features(
            acq.hu, baseline, candidates, grid.slice_times_s, grid.times_s
        ),
        warnings=timing_warnings(acq.times_s, baseline_frames),
    )


def timing_warnings(times_s: np.ndarray, baseline_frames: int) -> tuple[str, ...]:
    warnings = []
    if baseline_frames < 2:
        warnings.append(
            f"Only {baseline_frames} image(s) before contrast arrival; at least 2 "
            "baseline images are recommended."
        )
    if times_s[-1] - times_s[0] < 50.0:
        warnings.append(
            f"The acquisition lasts {times_s[-1] - times_s[0]:.0f} s; 50–70 s are recommended."
        )
    return tuple(warnings)
