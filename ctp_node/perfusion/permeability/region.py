"""Each map's statistics in a region (the tumour profile's enhancing region, or a region a person
gave) and in the tissue outside it (the reference a relative CBV is read against), for every
output that reports them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctp_node.perfusion.result import PerfusionResult

#: The maps reported in a region, in report order (those the result has).
REGION_MAPS = ("CBF", "CBV", "MTT", "Ktrans")
#: The maps whose region mean is also given relative to the tissue outside it (relative CBV is
#: the tumour grading measure of perfusion imaging; the times and K^trans are read absolute).
RELATIVE_MAPS = ("CBF", "CBV")


@dataclass(frozen=True)
class RegionStatistics:
    """Statistics of the maps in the enhancing region (values the acquisition cannot support
    left out).

    Attributes
    ----------
    volume_ml : the region's volume, mL.
    mean, median : map name → the region's mean and median, in the map's unit.
    outside_mean : map name → the mean over the tissue outside the region.
    """

    volume_ml: float
    mean: dict[str, float]
    median: dict[str, float]
    outside_mean: dict[str, float]

    def relative(self, name: str) -> float | None:
        """The region's mean of map ``name`` over the tissue outside it (e.g. rCBV), or None
        for a map not in :data:`RELATIVE_MAPS` or when the outside's mean is not positive."""
        outside = self.outside_mean[name]
        if name not in RELATIVE_MAPS or not outside > 0:
            return None
        return self.mean[name] / outside


def enhancing_statistics(result: PerfusionResult) -> RegionStatistics | None:
    """The statistics of ``result``'s enhancing region; None without a permeability
    measurement or when the region is empty."""
    permeability = result.permeability
    if permeability is None or not permeability.enhancing_mask.any():
        return None
    return region_statistics(result, permeability.enhancing_mask, permeability.enhancing_ml)


def user_region_statistics(result: PerfusionResult) -> RegionStatistics | None:
    """The statistics of the region a person gave; None without one or when it holds no
    tissue."""
    region = result.user_region
    if region is None or not region.mask.any():
        return None
    return region_statistics(result, region.mask, region.volume_ml)


def region_statistics(
    result: PerfusionResult, region: np.ndarray, volume_ml: float
) -> RegionStatistics:
    """Each of :data:`REGION_MAPS` that ``result`` has: its mean and median in ``region``
    (bool ``(z, y, x)``) and its mean over the tissue outside it."""
    outside = result.tissue_mask & ~region
    mean, median, outside_mean = {}, {}, {}
    for name in (n for n in REGION_MAPS if n in result.maps):
        values = result.reported(name)
        inside = values[region]
        inside = inside[np.isfinite(inside)]
        rest = values[outside]
        rest = rest[np.isfinite(rest)]
        mean[name] = float(inside.mean()) if inside.size else float("nan")
        median[name] = float(np.median(inside)) if inside.size else float("nan")
        outside_mean[name] = float(rest.mean()) if rest.size else float("nan")
    return RegionStatistics(volume_ml, mean, median, outside_mean)
