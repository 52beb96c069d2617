"""A region a person gives for a result's statistics (issue 34: the tumour profile's maps in a
region the user chooses, beside the enhancing region found automatically): a sphere, in mm,
around a voxel of the source images.

Written ``"Z,Y,X,R"``: slice, row and column of the centre (0-based voxel indices of the source
images, as the AIF and VOF are chosen) and the radius in mm; ``ctp-node process --region``,
``ctp-node reprocess --region`` and the console's job page take it. A sphere is what a person
can give in one line or one click and a number, and it does not depend on the slice spacing
(the region keeps its size in mm whether the study has 5 or 10 mm slices).

This module imports neither numpy nor pydicom at import time: the command line parses regions
before ``ctp-node`` sets the BLAS threads (``cli._one_blas_thread``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

#: The largest radius accepted, mm: a whole brain (a larger one is a typing error).
MAX_RADIUS_MM = 100.0


@dataclass(frozen=True)
class UserRegion:
    """A sphere of ``radius_mm`` around the voxel ``centre_zyx`` (slice, row, column)."""

    centre_zyx: tuple[int, int, int]
    radius_mm: float

    def text(self) -> str:
        """The region as ``"Z,Y,X,R"`` (how jobs store it and the command line takes it)."""
        z, y, x = self.centre_zyx
        return f"{z},{y},{x},{self.radius_mm:g}"

    def describe(self) -> str:
        """The region in words, for the reports."""
        z, y, x = self.centre_zyx
        return (
            f"a sphere of radius {self.radius_mm:g} mm around slice {z}, row {y}, column {x} "
            "(0-based voxel indices of the source images)"
        )

    def outside(self, shape: tuple[int, int, int]) -> str | None:
        """Why the centre lies outside images of ``(slices, rows, columns)``, or None."""
        if all(0 <= c < n for c, n in zip(self.centre_zyx, shape, strict=True)):
            return None
        slices, rows, columns = shape
        return (
            f"--region's centre {','.join(map(str, self.centre_zyx))} lies outside the images: "
            f"slice 0-{slices - 1}, row 0-{rows - 1}, column 0-{columns - 1} (0-based)"
        )

    def mask(
        self,
        shape: tuple[int, int, int],
        pixel_spacing_mm: tuple[float, float],
        slice_spacing_mm: float,
    ) -> np.ndarray:
        """The voxels of images ``shape`` (``(z, y, x)``) whose centres lie in the sphere."""
        import numpy as np

        axes = [
            (np.arange(n) - c) * step
            for n, c, step in zip(
                shape, self.centre_zyx, (slice_spacing_mm, *pixel_spacing_mm), strict=True
            )
        ]
        dz, dy, dx = np.meshgrid(*axes, indexing="ij", sparse=True)
        return dz**2 + dy**2 + dx**2 <= self.radius_mm**2


def parse_region(text: str | None) -> UserRegion | None:
    """``"Z,Y,X,R"`` → a :class:`UserRegion`; ``""`` or None → None.

    Raises
    ------
    ValueError : a sentence saying what the text should be.
    """
    if text is None or not text.strip():
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) != 4:
            raise ValueError
        z, y, x = (int(p) for p in parts[:3])
        radius = float(parts[3])
    except ValueError:
        raise ValueError(
            f"a region is slice,row,column,radius_mm (0-based voxel indices and a radius in "
            f"mm, e.g. 3,120,140,15); got {text!r}"
        ) from None
    if not 0 < radius <= MAX_RADIUS_MM:
        raise ValueError(f"a region's radius must be above 0 and at most {MAX_RADIUS_MM:g} mm")
    return UserRegion((z, y, x), radius)
