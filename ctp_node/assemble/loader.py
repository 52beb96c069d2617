"""Reading a laid-out series into an :class:`~ctp_node.perfusion.Acquisition`."""

from __future__ import annotations

import os
import re
import struct
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ctp_node.assemble import spill
from ctp_node.assemble.headers import (
    ImageRef,
    UnreadableImageError,
    read_header,
    read_usable_images,
    unreadable_summary,
)
from ctp_node.assemble.layout import (
    NAMED_IMAGES_MAX,
    AcquisitionLayout,
    NotPerfusionError,
    layout_acquisition,
)
from ctp_node.perfusion import Acquisition, AcquisitionFacts

_UNCOMPRESSED = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}


@dataclass(frozen=True)
class LoadedSeries:
    """An acquisition ready for the engine, and the DICOM context the reports need.

    Attributes
    ----------
    acquisition : the engine's input.
    layout : where each image came from.
    header : the first instance's header (patient, study, series modules).
    source_images : headers (no pixel data) of the first time point, one per z.
    excluded : one line per instance that could not be read and was left out.
    sop_instance_uids : the instances that could be read (what the result depends on).
    """

    acquisition: Acquisition
    layout: AcquisitionLayout
    header: Dataset
    source_images: list[Dataset]
    excluded: tuple[str, ...] = ()
    sop_instance_uids: tuple[str, ...] = ()

    @property
    def notes(self) -> list[str]:
        """What was left out or assumed, for the reports: the layout's notes, then the
        instances that could not be read (the first few named)."""
        notes = list(self.layout.notes)
        if self.excluded:
            named = "; ".join(self.excluded[:NAMED_IMAGES_MAX])
            more = len(self.excluded) - NAMED_IMAGES_MAX
            notes.append(
                f"{len(self.excluded)} instance(s) could not be read and were left out: {named}"
                + (f"; and {more} more" if more > 0 else "")
            )
        return notes


def load_series(
    paths: Sequence[Path],
    min_time_points: int = 10,
    *,
    spill_dir: Path | None = None,
    resident_max_bytes: int | None = None,
) -> LoadedSeries:
    """Read, lay out and load a series; instances that cannot be read or placed are left out
    and named in the notes. An HU array larger than ``resident_max_bytes`` is mapped from a
    file in ``spill_dir`` (:mod:`ctp_node.assemble.spill`).

    Raises
    ------
    UnreadableImageError : no file is a usable CT image.
    NotPerfusionError : the series is not a dynamic perfusion acquisition (reason in message).
    OSError : a spill file cannot be created (ENOSPC when the disk is full).
    """
    images = read_usable_images(paths)
    refs, header = images.refs, images.header
    check_modality(header)
    try:
        layout = layout_acquisition(refs, min_time_points)
    except NotPerfusionError as exc:
        if not images.excluded:
            raise
        raise NotPerfusionError(f"{exc}; {unreadable_summary(images.excluded)}") from exc
    hu = read_hu(layout, spill_dir=spill_dir, resident_max_bytes=resident_max_bytes)
    acquisition = Acquisition(
        hu=hu,
        times_s=layout.times_s,
        slice_times_s=layout.slice_times_s,
        pixel_spacing_mm=layout.pixel_spacing_mm,
        slice_spacing_mm=layout.slice_spacing_mm,
        slice_positions_mm=layout.slice_positions_mm,
        orientation=layout.orientation,
        facts=header_facts(header, refs),
    )
    return LoadedSeries(
        acquisition,
        layout,
        header,
        slice_headers(layout.grid[0]),
        images.excluded,
        tuple(sorted({ref.sop_instance_uid for ref in refs})),
    )


@dataclass(frozen=True)
class Examination:
    """What a series' headers say it is (:func:`examine_series`).

    Attributes
    ----------
    verdict : ``"perfusion"`` (compute it: maps or a failure notice follow), ``"other"`` (not a
        perfusion acquisition: ignored, no notice) or ``"unreadable"`` (not one usable image).
    reason : why, in words (for a perfusion acquisition its shape and what is left out).
    laid_out : the images were arranged in time and space; False for a series let through only
        because images that cannot be read may be what keeps it from being laid out.
    """

    verdict: str
    reason: str
    laid_out: bool = True

    @property
    def perfusion(self) -> bool:
        return self.verdict == "perfusion"


def examine_series(paths: list[Path], min_time_points: int) -> Examination:
    """Whether the series in ``paths`` is a dynamic perfusion acquisition, from its headers
    alone: the one decision of ``serve`` (which series get a job) and ``process`` (which series
    get maps or a failure notice, which are skipped with a line)."""
    images = None
    try:
        images = read_usable_images(paths)
        check_modality(images.header)
        layout = layout_acquisition(images.refs, min_time_points)
    except NotPerfusionError as exc:
        if images is not None and images.excluded:
            # Bad members may be what keeps it from being laid out: let the job try, so that
            # PACS gets maps or a failure notice that says why, never silence.
            reason = f"{exc}; {unreadable_summary(images.excluded)}"
            return Examination("perfusion", reason, laid_out=False)
        return Examination("other", str(exc))
    except UnreadableImageError as exc:
        return Examination("unreadable", str(exc))
    t, z, rows, columns = layout.shape
    reason = f"dynamic perfusion acquisition: {t} time points x {z} slices of {rows}x{columns}"
    excluded = len(images.excluded) + layout.excluded_images
    if excluded:
        reason += f"; {excluded} image(s) cannot be used and are left out"
    return Examination("perfusion", reason)


def check_modality(header: Dataset) -> None:
    modality = str(header.get("Modality", "") or "")
    if modality != "CT":
        raise NotPerfusionError(f"modality is {modality or 'missing'}, not CT")


def read_hu(
    layout: AcquisitionLayout,
    workers: int | None = None,
    *,
    spill_dir: Path | None = None,
    resident_max_bytes: int | None = None,
) -> np.ndarray:
    """The HU array ``(t, z, y, x)``, each file read once, straight into its place.

    int16 when every image's rescale is a slope of 1 and a whole intercept (CT as scanners
    write it: HU are then whole numbers), which halves the memory of a wide-detector study;
    float32 otherwise. Files are read by ``workers`` threads (default: up to 4), so that
    compressed transfer syntaxes are decoded in parallel (the decoders release the GIL).
    An array over ``resident_max_bytes`` is mapped from a file in ``spill_dir``
    (:func:`spill.allocate`).
    """
    refs = [ref for row in layout.grid for ref in row]
    allocate = partial(spill.allocate, folder=spill_dir, resident_max_bytes=resident_max_bytes)
    if all(_whole_hu_rescale(ref) for ref in refs):
        try:
            return _read_into(layout, allocate(layout.shape, np.int16), workers)
        except _NotWholeHU:
            pass  # stored values beyond int16 once rescaled: rare, read again as float32
    return _read_into(layout, allocate(layout.shape, np.float32), workers)


#: Threads reading files when the caller does not say: disk and decoder, not CPU, bound.
_DEFAULT_READERS = 4


class _NotWholeHU(Exception):
    """An image's HU do not fit an int16 array."""


def _whole_hu_rescale(ref: ImageRef) -> bool:
    intercept = ref.rescale_intercept
    return ref.rescale_slope == 1 and float(intercept).is_integer() and -32768 <= intercept < 32768


def _read_into(layout: AcquisitionLayout, hu: np.ndarray, workers: int | None) -> np.ndarray:
    places: dict[Path, list[tuple[int, int, ImageRef]]] = {}
    for t, row in enumerate(layout.grid):
        for z, ref in enumerate(row):
            places.setdefault(ref.path, []).append((t, z, ref))
    workers = workers or min(_DEFAULT_READERS, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # list(): raise the first error of any file here
        list(pool.map(partial(_read_file, hu), places.items()))
    return hu


def _read_file(hu: np.ndarray, item: tuple[Path, list[tuple[int, int, ImageRef]]]) -> None:
    """Read one file's pixel data into its places ``(t, z)`` of ``hu``."""
    path, places = item
    try:
        with open(path, "rb") as fp:
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
            if _native_single_frame(ds):
                # Read from the file straight into the array (or a frame-sized buffer).
                t, z, ref = places[0]
                target = hu[t, z] if hu.dtype == np.int16 else np.empty(hu.shape[2:], np.int16)
                _read_native(fp, ds, target)
                stored = target.view(np.uint16) if int(ds.PixelRepresentation) == 0 else target
                _place(hu, t, z, stored, ref)
                return
            fp.seek(0)
            frames = pydicom.dcmread(fp).pixel_array
    except _NotWholeHU:
        raise
    except Exception as exc:
        raise UnreadableImageError(
            f"{Path(path).name}: pixel data cannot be decoded ({exc})"
        ) from exc
    for t, z, ref in places:
        _place(hu, t, z, frames if ref.frame is None else frames[ref.frame], ref)


def _native_single_frame(ds: Dataset) -> bool:
    return (
        sys.byteorder == "little"
        and ds.file_meta.TransferSyntaxUID in _UNCOMPRESSED
        and int(ds.BitsAllocated) == 16
        and int(ds.get("SamplesPerPixel", 1)) == 1
        and int(ds.get("NumberOfFrames", 1) or 1) == 1
    )


def _read_native(fp: BinaryIO, ds: Dataset, target: np.ndarray) -> None:
    """Read the Pixel Data element at ``fp``'s position into ``target`` (16-bit words)."""
    implicit = ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    head = fp.read(8 if implicit else 12)
    if len(head) < 8 or struct.unpack("<HH", head[:4]) != (0x7FE0, 0x0010):
        raise ValueError("no Pixel Data element")
    length = struct.unpack("<I", head[4:8] if implicit else head[8:12])[0]
    if length < target.nbytes or fp.readinto(memoryview(target).cast("B")) != target.nbytes:
        raise ValueError(f"the pixel data is shorter than {ds.Rows} × {ds.Columns} pixels")


def _place(hu: np.ndarray, t: int, z: int, stored: np.ndarray, ref: ImageRef) -> None:
    """``hu[t, z]`` = ``stored`` rescaled to HU (whole HU in an int16 ``hu``)."""
    slot = hu[t, z]
    if hu.dtype == np.int16:
        intercept = int(ref.rescale_intercept)
        low, high = int(stored.min()), int(stored.max())
        if min(low, low + intercept) < -32768 or max(high, high + intercept) > 32767:
            raise _NotWholeHU
        slot[...] = stored  # may be slot itself, as unsigned words
        slot += np.int16(intercept)
        return
    slot[...] = stored
    slot *= ref.rescale_slope
    slot += ref.rescale_intercept


def header_facts(header: Dataset, refs: Sequence[ImageRef]) -> AcquisitionFacts:
    """Tube, dose, contrast and patient facts from the headers (None where not recorded)."""
    ctdis = [ref.ctdivol_mgy for ref in refs if ref.ctdivol_mgy is not None]
    return AcquisitionFacts(
        kvp=_number(header, "KVP"),
        exposure_mas=_exposure_mas(header),
        ctdivol_mgy=max(ctdis) if ctdis else None,
        contrast_agent=str(header.get("ContrastBolusAgent", "") or "") or None,
        contrast_volume_ml=_number(header, "ContrastBolusVolume"),
        contrast_rate_ml_s=_number(header, "ContrastFlowRate"),
        patient_age_years=_age_years(header),
        manufacturer=str(header.get("Manufacturer", "") or "") or None,
        model=str(header.get("ManufacturerModelName", "") or "") or None,
    )


def _number(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    if value in (None, ""):
        return None
    if isinstance(value, pydicom.multival.MultiValue):
        # e.g. ContrastFlowRate per injection phase: the first phase carries the bolus
        value = value[0] if len(value) else None
        if value in (None, ""):
            return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _exposure_mas(ds: Dataset) -> float | None:
    exposure = _number(ds, "Exposure")
    if exposure is not None:
        return exposure
    current, time_ms = _number(ds, "XRayTubeCurrent"), _number(ds, "ExposureTime")
    if current is not None and time_ms is not None:
        return current * time_ms / 1000.0
    return None


def _age_years(ds: Dataset) -> float | None:
    age = str(ds.get("PatientAge", "") or "")
    match = re.fullmatch(r"(\d{3})([DWMY])", age)
    if match:
        per_year = {"D": 365.25, "W": 52.1775, "M": 12.0, "Y": 1.0}[match.group(2)]
        return int(match.group(1)) / per_year
    birth = str(ds.get("PatientBirthDate", "") or "")
    study = str(ds.get("StudyDate", "") or ds.get("AcquisitionDate", "") or "")
    if len(birth) == 8 and len(study) == 8 and birth.isdigit() and study.isdigit():
        years = int(study[:4]) - int(birth[:4])
        if study[4:] < birth[4:]:
            years -= 1
        return float(years)
    return None


def slice_headers(refs: Sequence[ImageRef]) -> list[Dataset]:
    """One header per slice (no pixel data), in z order: what the reports reference.

    A frame of an Enhanced CT instance gets a view of its instance's header with the frame's
    own geometry added at the top level (position, orientation, spacing), so the reports treat
    classic and enhanced sources alike; the view keeps the instance's UIDs and functional
    groups, so references point at the real object.
    """
    headers: dict[Path, Dataset] = {}
    views = []
    for ref in refs:
        if ref.path not in headers:
            headers[ref.path] = read_header(ref.path)
        header = headers[ref.path]
        if ref.frame is None:
            views.append(header)
            continue
        # A new element dict per view (Dataset(header) would share one); the functional group
        # sequences themselves are shared, unchanged.
        view = Dataset(dict(header.items()))
        view.file_meta = header.file_meta
        view.ImagePositionPatient = list(ref.position_mm)
        view.ImageOrientationPatient = list(ref.orientation)
        view.PixelSpacing = list(ref.pixel_spacing_mm)
        view.SliceThickness = ref.slice_thickness_mm
        views.append(view)
    return views
