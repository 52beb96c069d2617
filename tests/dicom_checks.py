"""Reading outputs back the way a user's tools do."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom


def dciodvfy_errors(path: Path) -> list[str]:
    """The lines dicom3tools' dciodvfy reports as errors for one object."""
    check = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]


def map_volume(ds: pydicom.Dataset, slice_positions_mm: np.ndarray) -> np.ndarray:
    """A Parametric Map's frames placed at the source slices by their positions (z, y, x)."""
    frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    volume = np.full((len(slice_positions_mm), ds.Rows, ds.Columns), np.nan, dtype=np.float32)
    for index, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        position = np.array([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])
        z = int(np.argmin(np.linalg.norm(slice_positions_mm - position, axis=1)))
        assert np.linalg.norm(slice_positions_mm[z] - position) < 0.01, "frame off any slice"
        volume[z] = frames[index]
    assert not np.isnan(volume).any(), "a source slice has no frame"
    return volume
