"""Reading outputs back the way a user's tools do."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pydicom

PARAMETRIC_MAP = "1.2.840.10008.5.1.4.1.1.30"
MAP_NAMES = ("CBF", "CBV", "MTT", "TTP", "Tmax")
UNITS = {"CBF": "ml/[100]g/min", "CBV": "ml/[100]g", "MTT": "s", "TTP": "s", "Tmax": "s"}
#: How far the median of a map in the phantom's tissue may be from the truth's median. This is
#: a plausibility bound for the path through DICOM; the engine's accuracy is measured against
#: the phantom's blocks in tests/perfusion and bench/accuracy.py.
MEDIAN_TOLERANCE = 0.30
TMAX_TOLERANCE_S = 2.0


def dciodvfy_errors(path: Path) -> list[str]:
    """The lines dicom3tools' dciodvfy reports as errors for one object."""
    check = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (check.stdout + check.stderr).splitlines() if line.startswith("Error")]


def map_volume(ds: pydicom.Dataset, slice_positions_mm: np.ndarray) -> np.ndarray:
    """A Parametric Map's frames placed at the source slices by their positions (z, y, x)."""
    frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    volume = np.zeros((len(slice_positions_mm), ds.Rows, ds.Columns), dtype=np.float32)
    placed = np.zeros(len(slice_positions_mm), bool)
    for index, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        position = np.array([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])
        z = int(np.argmin(np.linalg.norm(slice_positions_mm - position, axis=1)))
        assert np.linalg.norm(slice_positions_mm[z] - position) < 0.01, "frame off any slice"
        volume[z] = frames[index]
        placed[z] = True
    assert placed.all(), "a source slice has no frame"
    return volume


def parametric_maps_in(orthanc) -> dict[str, pydicom.Dataset]:
    maps = {}
    for instance_id in orthanc.get("/instances"):
        tags = orthanc.get(f"/instances/{instance_id}/simplified-tags")
        if tags.get("SOPClassUID") == PARAMETRIC_MAP:
            data = orthanc.get_bytes(f"/instances/{instance_id}/file")
            ds = pydicom.dcmread(io.BytesIO(data))
            label = (
                ds.RealWorldValueMappingSequence[0].LUTLabel
                if ("RealWorldValueMappingSequence" in ds)
                else ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0].LUTLabel
            )
            maps[str(label)] = ds
    return maps


def check_maps_against_truth(maps: dict[str, pydicom.Dataset], phantom, study_uid: str) -> dict:
    truth = phantom.truth
    positions = phantom.acquisition.slice_positions_mm
    volumes = {}
    for name in MAP_NAMES:
        ds = maps[name]
        assert ds.StudyInstanceUID == study_uid
        assert str(ds.SeriesDescription).startswith(name)
        mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
        assert mapping.LUTLabel == name
        assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == UNITS[name]
        volume = map_volume(ds, positions)
        assert volume.shape == truth.cbf.shape
        unsupported = ~np.isfinite(volume)
        if unsupported.any():  # the documented sentinel, counted in the Image Comments
            assert f"NaN (not a number) marks {int(unsupported.sum())} " in ds.ImageComments
        assert (volume[~unsupported] >= 0).all(), f"{name} has negative values"
        volumes[name] = volume
    tissue = truth.tissue_mask & ~truth.core_mask
    for name, true_map in (("CBF", truth.cbf), ("CBV", truth.cbv), ("MTT", truth.mtt)):
        measured = float(np.nanmedian(volumes[name][tissue]))
        expected = float(np.median(true_map[tissue]))
        assert abs(measured - expected) <= MEDIAN_TOLERANCE * expected, (
            f"{name}: median in tissue {measured:.2f}, truth {expected:.2f}"
        )
    tmax_error_s = abs(
        float(np.nanmedian(volumes["Tmax"][tissue])) - float(np.median(truth.delay[tissue]))
    )
    assert tmax_error_s <= TMAX_TOLERANCE_S, f"median Tmax off the true delay by {tmax_error_s} s"
    return volumes


def spoil_rows(path: Path, out: Path | None = None) -> Path:
    """Rows (0028,0010) rewritten 3 bytes long (explicit VR little endian file): the file still
    parses, the element does not. Written to ``out`` (default: in place)."""
    data = path.read_bytes()
    element = b"\x28\x00\x10\x00US\x02\x00"
    at = data.index(element)
    out = out or path
    out.write_bytes(
        data[:at]
        + b"\x28\x00\x10\x00US\x03\x00"
        + data[at + 8 : at + 10]
        + b"\x00"
        + data[at + 10 :]
    )
    return out


def with_other_pixels(path: Path, out: Path) -> Path:
    """``path`` with one pixel byte changed, written to ``out``: the same SOP Instance UID
    with other bytes, a collision the node refuses (0x0111) and quarantines."""
    ds = pydicom.dcmread(path)
    pixels = bytearray(ds.PixelData)
    pixels[0] ^= 0xFF
    ds.PixelData = bytes(pixels)
    ds.save_as(out)
    return out
