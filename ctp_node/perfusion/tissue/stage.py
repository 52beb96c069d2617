"""Stage 2 of the engine: the parenchyma's curves projected onto a temporal basis and denoised
(:mod:`ctp_node.perfusion.tissue.profiles`), and their time to peak."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctp_node.perfusion.acquisition import Acquisition
from ctp_node.perfusion.parameters import PerfusionParameters
from ctp_node.perfusion.prepare.stage import Prepared
from ctp_node.perfusion.tissue.profiles import Profiles, build_profiles


@dataclass(frozen=True)
class TissueCurves:
    """The parenchyma's curves, compressed and denoised on the uniform grid, and their time
    to peak (s, ``(z, y, x)``; 0 outside the parenchyma)."""

    profiles: Profiles
    ttp_s: np.ndarray


def tissue_curves(acq: Acquisition, prepared: Prepared, p: PerfusionParameters) -> TissueCurves:
    grid, noise = prepared.grid, prepared.area_noise
    profiles = build_profiles(
        acq.hu,
        prepared.baseline,
        prepared.parenchyma,
        grid.slice_times_s,
        grid.times_s,
        noise,
        radius=p.denoise_radius_voxels,
        spatial_sigma_voxels=p.denoise_spatial_sigma_mm / min(acq.pixel_spacing_mm),
        profile_sigma_hu=p.denoise_profile_sigma_factor * noise / 3.0,
        workers=prepared.workers,
        min_components=p.temporal_components_min,
    )
    ttp = np.zeros(prepared.shape, np.float32)
    ttp[prepared.parenchyma] = grid.times_s[0] + grid.dt_s * profiles.peak_index()
    return TissueCurves(profiles, ttp)
