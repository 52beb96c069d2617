"""What ``results.json`` holds (and ``ctp-node status``, the console and the notifications
read): a computed series' results as plain JSON-able values."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctp_node.assemble.loader import LoadedSeries
from ctp_node.perfusion import PerfusionResult
from ctp_node.perfusion.asymmetry import HemisphericComparison
from ctp_node.perfusion.permeability.region import (
    RegionStatistics,
    enhancing_statistics,
    user_region_statistics,
)
from ctp_node.profiles import DEFAULT_CHOICE, ProfileChoice
from ctp_node.qc import QualityFinding


@dataclass(frozen=True)
class WrittenOutput:
    """One DICOM output written to disk."""

    sop_instance_uid: str
    output_kind: str  # "parametric_maps" | "secondary_captures" | "structured_report"
    path: Path
    series_description: str


def summarise(
    loaded: LoadedSeries,
    result: PerfusionResult,
    outputs: Iterable[WrittenOutput],
    quality: Sequence[QualityFinding] = (),
    profile: ProfileChoice | None = None,
) -> dict[str, Any]:
    """The results as plain JSON-able values (what ``results.json`` and ``status`` show);
    ``quality`` lists the acquisition quality findings, one dict per check; ``profile`` the
    protocol profile and what chose it (``profile``), with the hemispheric comparison
    (``asymmetry``), the permeability measurement (``permeability``) and the statistics of a
    region a person gave (``user_region``) when the result has them."""
    acq = loaded.acquisition
    header = loaded.header
    choice = profile or DEFAULT_CHOICE
    tissue = result.tissue_mask
    maps = {}
    for name in result.maps:
        inside = result.reported(name)[tissue]
        measured = inside[np.isfinite(inside)]
        maps[name] = {
            "median_in_tissue": _round(np.median(measured)) if measured.size else None,
            "p95_in_tissue": _round(np.percentile(measured, 95)) if measured.size else None,
            # Brain voxels left NaN in the Parametric Map: the acquisition cannot support them.
            "unsupported_voxels": int(inside.size - measured.size),
        }
    return {
        "study_instance_uid": str(header.StudyInstanceUID),
        "series_instance_uid": str(header.SeriesInstanceUID),
        "accession_number": str(header.get("AccessionNumber", "") or ""),
        "algorithm": result.algorithm,
        "acquisition": {
            "time_points": int(acq.hu.shape[0]),
            "slices": int(acq.hu.shape[1]),
            "matrix": [int(acq.hu.shape[2]), int(acq.hu.shape[3])],
            "duration_s": _round(float(acq.times_s[-1] - acq.times_s[0])),
            "pixel_spacing_mm": [_round(v) for v in acq.pixel_spacing_mm],
            "slice_spacing_mm": _round(acq.slice_spacing_mm),
            "notes": loaded.notes,
            "facts": {k: v for k, v in vars(acq.facts).items()},
        },
        # The stroke volumes, for a profile that reports them (else null: not computed for it).
        "volumes": _volumes(result) if choice.profile.stroke_volumes else None,
        "profile": choice.to_dict(),
        "asymmetry": _asymmetry(result.asymmetry) if result.asymmetry is not None else None,
        "permeability": _permeability(result) if result.permeability is not None else None,
        "user_region": _user_region(result),
        "normal_cbf_ml_100g_min": _round(result.normal_cbf),
        "maps": maps,
        "aif": _curve(result.aif),
        "vof": _curve(result.vof) if result.vof is not None else None,
        "parameters": dict(result.parameters),
        "warnings": list(result.warnings),
        "quality": [finding.to_dict() for finding in quality],
        "outputs": [
            {
                "kind": o.output_kind,
                "sop_instance_uid": o.sop_instance_uid,
                "series_description": o.series_description,
                "file": o.path.name,
            }
            for o in outputs
        ],
    }


def _volumes(result: PerfusionResult) -> dict[str, Any]:
    volumes = result.volumes
    return {
        "core_ml": _round(volumes.core_ml),
        "tmax6_ml": _round(volumes.tmax6_ml),
        "tmax10_ml": _round(volumes.tmax10_ml),
        "mismatch_ml": _round(volumes.mismatch_ml),
        "mismatch_ratio": _round(volumes.mismatch_ratio),
        "hypoperfusion_intensity_ratio": _round(volumes.hypoperfusion_intensity_ratio),
        "target_mismatch": bool(volumes.target_mismatch),
    }


def _permeability(result: PerfusionResult) -> dict[str, Any]:
    """The permeability measurement as JSON: the model, the images it was fitted on, and the
    enhancing region (null when none was found, :func:`_region`)."""
    permeability = result.permeability
    statistics = enhancing_statistics(result)
    return {
        "model": permeability.model,
        "first_pass_end_s": _round(permeability.first_pass_end_s),
        "late_images": permeability.late_frames,
        "enhancing_region": _region(statistics) if statistics is not None else None,
    }


def _user_region(result: PerfusionResult) -> dict[str, Any] | None:
    """The region a person gave: how, in words, and (if it holds tissue) :func:`_region`."""
    region = result.user_region
    if region is None:
        return None
    statistics = user_region_statistics(result)
    summary = {"given": region.text, "description": region.description}
    return summary | (_region(statistics) if statistics is not None else {"volume_ml": 0.0})


def _region(statistics: RegionStatistics) -> dict[str, Any]:
    """A region's volume and, per map, its mean and median, the mean of the tissue outside it
    and (CBF, CBV) their ratio."""
    return {
        "volume_ml": _round(statistics.volume_ml),
        "maps": {
            name: {
                "mean": _round(statistics.mean[name]),
                "median": _round(statistics.median[name]),
                "outside_mean": _round(statistics.outside_mean[name]),
                "ratio": _round(statistics.relative(name)),
            }
            for name in statistics.mean
        },
    }


def _asymmetry(comparison: HemisphericComparison) -> dict[str, Any]:
    """The hemispheric comparison as JSON: the midline, the sides and per map the means,
    medians, the second − first side's difference, the lower/higher ratio and the flag."""
    return {
        "midline": {
            "angle_deg": _round(comparison.midline.angle_deg),
            "offset_mm": _round(comparison.midline.offset_mm),
        },
        "sides": list(comparison.sides),
        "flagged": comparison.flagged,
        "maps": {
            name: {
                "mean": {side: _round(v) for side, v in item.mean.items()},
                "median": {side: _round(v) for side, v in item.median.items()},
                "difference": _round(item.difference),
                "ratio": _round(item.ratio),
                "lower_side": item.lower_side,
                "flagged": bool(item.flagged),
            }
            for name, item in comparison.maps.items()
        },
    }


def _curve(curve) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return {
        "selection": curve.selection,
        "centre_zyx": list(curve.centre_zyx),
        "voxels": len(curve.voxels_zyx),
        "arrival_s": _round(curve.arrival_s),
        "baseline_frames": int(curve.baseline_frames),
        "peak_hu": _round(float(np.max(curve.concentration_hu))),
        "times_s": [_round(t) for t in curve.times_s],
        "concentration_hu": [_round(v) for v in curve.concentration_hu],
    }


def _round(value: float | None, digits: int = 3) -> float | None:
    if value is None or not np.isfinite(value):
        return None
    return round(float(value), digits)
