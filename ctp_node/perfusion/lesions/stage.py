"""Stage 6 of the engine: the normal reference CBF, CBF relative to it, the core and Tmax > 6 s /
> 10 s masks and their volumes (:mod:`ctp_node.perfusion.lesions.stroke`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctp_node.perfusion.acquisition import Acquisition
from ctp_node.perfusion.lesions import stroke
from ctp_node.perfusion.parameters import PerfusionParameters
from ctp_node.perfusion.result import StrokeVolumes


@dataclass(frozen=True)
class Lesions:
    """The normal reference CBF (mL/100 g/min), CBF relative to it, the core and Tmax
    masks and their volumes."""

    normal_cbf: float
    relative_cbf: np.ndarray
    core: np.ndarray
    tmax6: np.ndarray
    tmax10: np.ndarray
    volumes: StrokeVolumes


def stroke_lesions(
    acq: Acquisition, maps: dict[str, np.ndarray], tissue: np.ndarray, p: PerfusionParameters
) -> Lesions:
    normal = stroke.normal_reference_cbf(
        maps["CBF"], maps["Tmax"], tissue, p.core_reference_tmax_s, p.core_reference_mean
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(tissue, maps["CBF"] / max(normal, 1e-6), 0).astype(np.float32)
    voxel_ml = acq.voxel_volume_ml
    core, tmax6, tmax10 = stroke.lesion_masks(
        maps["CBF"], maps["Tmax"], tissue, normal, voxel_ml, p, min(acq.pixel_spacing_mm)
    )
    volumes = stroke.stroke_volumes(core, tmax6, tmax10, voxel_ml, p)
    return Lesions(normal, relative, core, tmax6, tmax10, volumes)
