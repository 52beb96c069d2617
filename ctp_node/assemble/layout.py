"""Is a complete series a dynamic perfusion acquisition, and where does each image belong in
``(t, z)``?

A dynamic acquisition is CT with the same slice positions repeated at several distinct times.
Slices are grouped by their position along the slice normal, and each position's images are
ordered by their own acquisition time, so images may arrive in any order and the slices of one
time point may carry slightly different times (or alternate, as in shuttle modes).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from ctp_node.assemble.headers import ImageRef, unwrap_midnight

#: Positions closer than this along the slice normal are the same slice.
POSITION_TOLERANCE_MM = 0.05
#: Two images of one position less than this apart in time are the same time point.
SAME_TIME_TOLERANCE_S = 0.01


class NotPerfusionError(ValueError):
    """The series is not a dynamic perfusion acquisition; the message says why."""


@dataclass(frozen=True)
class AcquisitionLayout:
    """The images of an acquisition arranged as ``grid[t][z]``, with geometry and times.

    Attributes
    ----------
    grid : images indexed ``[t][z]``; z ordered along the slice normal.
    times_s : ``(t,)`` mean time of each time point, seconds from the first image.
    slice_times_s : ``(t, z)`` each image's own time, seconds from the first image.
    slice_positions_mm : ``(z, 3)`` ImagePositionPatient of each slice.
    orientation : ImageOrientationPatient.
    pixel_spacing_mm : (row spacing, column spacing).
    slice_spacing_mm : distance between slice centres.
    notes : what was dropped or assumed, for the report.
    excluded_images : images left out because their geometry differs from the series'.
    """

    grid: list[list[ImageRef]]
    times_s: np.ndarray
    slice_times_s: np.ndarray
    slice_positions_mm: np.ndarray
    orientation: tuple[float, float, float, float, float, float]
    pixel_spacing_mm: tuple[float, float]
    slice_spacing_mm: float
    notes: tuple[str, ...] = ()
    excluded_images: int = 0

    @property
    def shape(self) -> tuple[int, int, int, int]:
        first = self.grid[0][0]
        return len(self.grid), len(self.grid[0]), first.rows, first.columns


def layout_acquisition(refs: list[ImageRef], min_time_points: int) -> AcquisitionLayout:
    """Arrange a series' images in ``(t, z)``; raises NotPerfusionError with the reason."""
    if not refs:
        raise NotPerfusionError("the series holds no images")
    total = len(refs)
    refs, notes = _common_geometry(refs)
    excluded = total - len(refs)
    first = refs[0]

    row, col = np.array(first.orientation[:3]), np.array(first.orientation[3:])
    normal = np.cross(row, col)
    times = unwrap_midnight([ref.time_of_day_s for ref in refs])
    start = min(times)

    distances = [float(np.dot(ref.position_mm, normal)) for ref in refs]
    cluster_of = cluster_positions(distances)
    by_position: dict[int, list[tuple[float, ImageRef]]] = defaultdict(list)
    along_normal: dict[int, float] = {}
    for ref, t, distance in zip(refs, times, distances, strict=True):
        key = cluster_of[distance]
        by_position[key].append((t - start, ref))
        along_normal.setdefault(key, distance)

    positions = sorted(by_position, key=lambda k: along_normal[k])
    columns: list[list[tuple[float, ImageRef]]] = []
    for key in positions:
        images = sorted(by_position[key], key=lambda item: item[0])
        distinct = [images[0]]
        for item in images[1:]:
            if item[0] - distinct[-1][0] > SAME_TIME_TOLERANCE_S:
                distinct.append(item)
        if len(distinct) < len(images):
            notes.append(
                f"{len(images) - len(distinct)} image(s) at the same position and time were "
                "duplicates and were not used"
            )
        columns.append(distinct)

    counts = [len(column) for column in columns]
    time_points = min(counts)
    if time_points < min_time_points:
        if max(counts) == 1:
            raise NotPerfusionError(
                f"a single volume: {len(columns)} slice position(s), each acquired once; a "
                f"perfusion acquisition repeats the same positions at ≥ {min_time_points} times"
            )
        raise NotPerfusionError(
            f"only {time_points} time point(s) at every one of the {len(columns)} slice "
            f"positions; a perfusion acquisition needs ≥ {min_time_points}"
        )
    if max(counts) > time_points:
        notes.append(
            f"slice positions had between {time_points} and {max(counts)} time points; "
            f"the first {time_points} of each were used"
        )

    grid = [[columns[z][t][1] for z in range(len(columns))] for t in range(time_points)]
    slice_times = np.array(
        [[columns[z][t][0] for z in range(len(columns))] for t in range(time_points)]
    )
    mean_times = slice_times.mean(axis=1)
    if np.any(np.diff(mean_times) <= 0):
        raise NotPerfusionError("the time points are not in increasing order of time")
    centres = np.array([along_normal[k] for k in positions])
    if len(centres) > 1:
        slice_spacing = float(np.median(np.diff(centres)))
    else:
        slice_spacing = first.slice_thickness_mm or 1.0
    return AcquisitionLayout(
        grid=grid,
        times_s=mean_times,  # slice_times is already relative to the first image
        slice_times_s=slice_times,
        slice_positions_mm=np.array([grid[0][z].position_mm for z in range(len(positions))]),
        orientation=first.orientation,
        pixel_spacing_mm=first.pixel_spacing_mm,
        slice_spacing_mm=slice_spacing,
        notes=tuple(dict.fromkeys(notes)),
        excluded_images=excluded,
    )


#: Most SOP Instance UIDs a note names; the rest are counted.
NAMED_IMAGES_MAX = 5


def _common_geometry(refs: list[ImageRef]) -> tuple[list[ImageRef], list[str]]:
    """The images that share the series' geometry (the orientation, matrix size and pixel
    spacing most images have), and a note naming those left out: one stray image (a localiser,
    a reformat sent in the same series) must not cost the whole acquisition."""

    def geometry(ref: ImageRef) -> tuple:
        return (
            tuple(np.round(ref.orientation, 3)),
            (ref.rows, ref.columns),
            tuple(np.round(ref.pixel_spacing_mm, 4)),
        )

    groups: dict[tuple, list[ImageRef]] = defaultdict(list)
    for ref in refs:
        groups[geometry(ref)].append(ref)
    common = max(groups, key=lambda key: len(groups[key]))
    kept = groups[common]
    if len(kept) == len(refs):
        return refs, []
    notes = []
    for key, others in groups.items():
        if key == common:
            continue
        differs = [
            name
            for name, mine, theirs in zip(
                ("orientation", "matrix size", "pixel spacing"), key, common, strict=True
            )
            if mine != theirs
        ]
        uids = sorted({ref.sop_instance_uid for ref in others})
        named = ", ".join(uids[:NAMED_IMAGES_MAX])
        if len(uids) > NAMED_IMAGES_MAX:
            named += f" and {len(uids) - NAMED_IMAGES_MAX} more"
        notes.append(
            f"{len(others)} image(s) left out: another {' and '.join(differs)} than the "
            f"series' {kept[0].rows}x{kept[0].columns} images ({named})"
        )
    return kept, notes


def cluster_positions(
    distances: list[float], tolerance_mm: float = POSITION_TOLERANCE_MM
) -> dict[float, int]:
    """Slice index for each distance along the normal: a gap > tolerance starts a new slice."""
    cluster_of: dict[float, int] = {}
    cluster, previous = -1, None
    for distance in sorted(set(distances)):
        if previous is None or distance - previous > tolerance_mm:
            cluster += 1
        cluster_of[distance] = cluster
        previous = distance
    return cluster_of
