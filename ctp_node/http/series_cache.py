"""The source images of the series a person is choosing an input curve on, read once and kept
while they click: the console's candidate curves and pre-contrast image come from here.

Only :data:`KEPT_SERIES` series are kept (a whole-brain acquisition is gigabytes of HU), the
one used last replacing the oldest; a lock makes concurrent first requests read it once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctp_node.assemble.loader import load_series

#: Series kept in memory at once: one person choosing on one study at a time is the use.
KEPT_SERIES = 1
#: Frames averaged for the pre-contrast image when the result does not say how many preceded
#: the bolus (the engine's baseline is at least this long in any usable acquisition).
DEFAULT_BASELINE_FRAMES = 3
#: Half-width in voxels of the in-plane square averaged for a candidate curve: 0, the voxel
#: itself (an artery in a perfusion CT is a few voxels wide; a wider mean would dilute it).
CURVE_HALF_WIDTH = 0


@dataclass(frozen=True)
class SeriesImages:
    """A series' HU ``(t, z, y, x)``, its times (s) and its mean pre-contrast image ``(z, y,
    x)`` (the mean of its first ``baseline_frames`` time points)."""

    hu: np.ndarray
    times_s: np.ndarray
    baseline: np.ndarray
    baseline_frames: int

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.hu.shape[1:])  # type: ignore[return-value]

    def curve(self, z: int, y: int, x: int) -> np.ndarray:
        """Enhancement over the pre-contrast value (HU) of the voxels around ``(z, y, x)``
        (:data:`CURVE_HALF_WIDTH`), at each time point. Raises IndexError outside."""
        slices, rows, columns = self.shape_zyx
        if not (0 <= z < slices and 0 <= y < rows and 0 <= x < columns):
            raise IndexError(
                f"({z},{y},{x}) lies outside the images: slice 0-{slices - 1}, row 0-"
                f"{rows - 1}, column 0-{columns - 1}"
            )
        h = CURVE_HALF_WIDTH
        ys, xs = slice(max(0, y - h), y + h + 1), slice(max(0, x - h), x + h + 1)
        values = self.hu[:, z, ys, xs].astype(np.float64).mean(axis=(1, 2))
        return values - self.baseline[z, ys, xs].astype(np.float64).mean()


def read_series_images(paths: Sequence[Path], baseline_frames: int) -> SeriesImages:
    """Read a series' images as the engine does (:func:`load_series`)."""
    acquisition = load_series(paths, min_time_points=2).acquisition
    frames = max(1, min(baseline_frames, acquisition.hu.shape[0]))
    baseline = acquisition.hu[:frames].astype(np.float32).mean(axis=0)
    return SeriesImages(acquisition.hu, np.asarray(acquisition.times_s), baseline, frames)


class SeriesCache:
    """The last :data:`KEPT_SERIES` series read, by Series Instance UID."""

    def __init__(self, read: Callable[[str], SeriesImages]) -> None:
        self._read = read
        self._kept: OrderedDict[str, SeriesImages] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, series_uid: str) -> SeriesImages:
        with self._lock:  # one reader at a time: a second request waits for the first read
            if series_uid in self._kept:
                self._kept.move_to_end(series_uid)
                return self._kept[series_uid]
            while len(self._kept) >= KEPT_SERIES:
                self._kept.popitem(last=False)
            images = self._read(series_uid)
            self._kept[series_uid] = images
            return images
