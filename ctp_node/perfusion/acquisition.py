"""The dynamic acquisition as the engine sees it: one 4D HU array with its times and geometry.

Axis order everywhere in :mod:`ctp_node.perfusion` is ``(t, z, y, x)``: time, slice, row, column.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class AcquisitionFacts:
    """Header facts that quality checks and reports need; ``None`` when not recorded.

    Attributes
    ----------
    kvp : tube voltage in kV.
    exposure_mas : tube current-time product per rotation in mAs.
    ctdivol_mgy : CTDIvol in mGy (largest value found in the series).
    contrast_agent : contrast agent name as recorded (ContrastBolusAgent).
    contrast_volume_ml : injected contrast volume in mL.
    contrast_rate_ml_s : injection rate in mL/s.
    patient_age_years : age at the study, in years.
    manufacturer, model : scanner identification.
    """

    kvp: float | None = None
    exposure_mas: float | None = None
    ctdivol_mgy: float | None = None
    contrast_agent: str | None = None
    contrast_volume_ml: float | None = None
    contrast_rate_ml_s: float | None = None
    patient_age_years: float | None = None
    manufacturer: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class Acquisition:
    """One dynamic CT perfusion acquisition.

    Attributes
    ----------
    hu : array ``(t, z, y, x)`` in Hounsfield units (rescale applied): float32, or int16 when
        the HU are whole numbers (as CT scanners store them), at half the memory; the engine
        computes in float32 either way, with the same results.
    times_s : float64 array ``(t,)``, seconds from the first image of the acquisition
        (mean over the slices of each time point), strictly increasing.
    slice_times_s : float64 array ``(t, z)``, each image's own time in seconds from the first
        image; equals ``times_s[:, None]`` when all slices of a frame share one time.
    pixel_spacing_mm : ``(row spacing, column spacing)`` in mm, i.e. the size along y then x.
    slice_spacing_mm : distance between consecutive slice centres in mm.
    slice_positions_mm : float64 array ``(z, 3)``, ImagePositionPatient of each slice, ordered
        along the slice normal.
    orientation : ImageOrientationPatient, six direction cosines (row then column).
    facts : header facts for quality checks and reports.
    """

    hu: np.ndarray
    times_s: np.ndarray
    pixel_spacing_mm: tuple[float, float]
    slice_spacing_mm: float
    slice_positions_mm: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    orientation: tuple[float, float, float, float, float, float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    slice_times_s: np.ndarray | None = None
    facts: AcquisitionFacts = field(default_factory=AcquisitionFacts)

    def __post_init__(self) -> None:
        if self.hu.ndim != 4:
            raise ValueError(f"hu must be (t, z, y, x); got shape {self.hu.shape}")
        if self.times_s.shape != (self.hu.shape[0],):
            raise ValueError(
                f"times_s must have one entry per time point ({self.hu.shape[0]}); "
                f"got shape {self.times_s.shape}"
            )
        if self.hu.shape[0] > 1 and not np.all(np.diff(self.times_s) > 0):
            raise ValueError("times_s must be strictly increasing")

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (1 mL = 1000 mm³)."""
        dy, dx = self.pixel_spacing_mm
        return float(dy * dx * self.slice_spacing_mm) / 1000.0

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.hu.shape)  # type: ignore[return-value]
