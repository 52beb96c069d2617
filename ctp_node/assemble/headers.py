"""One record per image (a single-frame instance, or one frame of an Enhanced CT instance),
read from the headers only.
"""

from __future__ import annotations

import datetime as dt
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.datadict import dictionary_description, keyword_dict
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.tag import Tag

SECONDS_PER_DAY = 86_400.0


class UnreadableImageError(ValueError):
    """A file in the series is not a usable CT image (the message names the file)."""


@dataclass(frozen=True)
class ImageRef:
    """Where one image is and what the assembler needs to place it in space and time.

    Attributes
    ----------
    path : the file.
    frame : frame index in a multi-frame instance, None for a single-frame instance.
    sop_instance_uid : the instance's UID.
    position_mm : ImagePositionPatient (x, y, z) of the first pixel.
    orientation : ImageOrientationPatient (row then column direction cosines).
    time_of_day_s : acquisition time as seconds since midnight (see :func:`unwrap_midnight`).
    pixel_spacing_mm : (row spacing, column spacing).
    rows, columns : matrix size.
    rescale_slope, rescale_intercept : stored value → HU.
    slice_thickness_mm : nominal slice thickness, 0 when absent.
    ctdivol_mgy : CTDIvol of this image, None when absent.
    """

    path: Path
    frame: int | None
    sop_instance_uid: str
    position_mm: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    time_of_day_s: float
    pixel_spacing_mm: tuple[float, float]
    rows: int
    columns: int
    rescale_slope: float
    rescale_intercept: float
    slice_thickness_mm: float
    ctdivol_mgy: float | None


def read_header(path: Path) -> Dataset:
    """Read a file's header (no pixel data); raises UnreadableImageError with the file's name."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, struct.error) as exc:
        name = Path(path).name
        raise UnreadableImageError(f"file {name}: cannot be read as DICOM ({exc})") from exc


def image_refs(path: Path, ds: Dataset) -> list[ImageRef]:
    """The images one instance holds (one for classic CT, one per frame for Enhanced CT)."""
    try:
        if "PerFrameFunctionalGroupsSequence" in ds:
            return _enhanced_refs(path, ds)
        return [_single_frame_ref(path, ds)]
    except Exception as exc:  # any malformed element (pydicom raises many kinds)
        problem = _faulty_element(ds) or _plain_problem(exc)
        raise UnreadableImageError(f"file {Path(path).name}: {problem}") from exc


#: The elements that place a classic CT image, in the order a reader would check them.
_PLACING_ELEMENTS = (
    ("ImagePositionPatient", 3),
    ("ImageOrientationPatient", 6),
    ("PixelSpacing", 2),
    ("Rows", 1),
    ("Columns", 1),
)


def element_name(keyword_or_tag: str | int) -> str:
    """An element as the standard names it, with its tag: "Image Position (Patient)
    (0020,0032)"."""
    tag = Tag(keyword_or_tag)
    try:
        name = dictionary_description(tag)
    except KeyError:
        name = "private element"
    return f"{name} ({tag.group:04X},{tag.element:04X})"


def _faulty_element(ds: Dataset) -> str:
    """Which element keeps an image from being placed, e.g. "Rows (0028,0010) cannot be
    decoded", "no Image Position (Patient) (0020,0032)"; "" when none of the usual suspects is
    at fault."""
    for keyword, multiplicity in _PLACING_ELEMENTS:
        tag = Tag(keyword)
        name = element_name(tag)
        if "PerFrameFunctionalGroupsSequence" in ds and multiplicity > 1:
            continue  # per-frame geometry: in the functional groups
        try:
            value = ds[tag].value if tag in ds else None
        except Exception:
            return f"{name} cannot be decoded"
        if value in (None, ""):
            return f"no {name}"
        values = value if isinstance(value, MultiValue | list | tuple) else [value]
        if len(values) != multiplicity:
            return f"{name} has {len(values)} value(s), not {multiplicity}"
    return ""


def _plain_problem(exc: Exception) -> str:
    """What an exception from reading an image's header means, in words: pydicom names a
    missing element by its keyword (AttributeError) or tag (KeyError); that becomes "no Frame
    of Reference UID (0020,0052)"-style text, anything else its own message."""
    missing: str | int | None = None
    if isinstance(exc, AttributeError):
        found = re.search(r"has no attribute '(\w+)'", str(exc))
        missing = found.group(1) if found and keyword_dict.get(found.group(1)) else None
    elif isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], int):
        missing = exc.args[0]
    if missing is not None:
        return f"no {element_name(missing)}"
    text = str(exc) or exc.__class__.__name__
    return f"image geometry or timing cannot be read: {text}"


@dataclass(frozen=True)
class SeriesImages:
    """The usable images of a series, and what could not be used.

    Attributes
    ----------
    refs : every image of every readable instance.
    header : the first readable instance's header (series-level facts).
    excluded : one line per instance left out, ``"<file name>: <reason>"``.
    """

    refs: list[ImageRef]
    header: Dataset
    excluded: tuple[str, ...] = ()


def read_usable_images(paths: Iterable[Path]) -> SeriesImages:
    """Every image of the instances that can be read and placed; an instance that cannot (not
    DICOM, no geometry or timing, no SOP Instance UID) is left out and named in ``excluded``.

    Raises
    ------
    UnreadableImageError : not one instance is usable (the message gives the first reasons).
    """
    refs: list[ImageRef] = []
    first: Dataset | None = None
    excluded: list[str] = []
    for path in paths:
        try:
            ds = read_header(path)
            if not str(ds.get("SOPInstanceUID", "") or ""):
                raise UnreadableImageError(
                    f"file {Path(path).name}: no SOP Instance UID in the data set"
                )
            refs.extend(image_refs(path, ds))
        except UnreadableImageError as exc:
            excluded.append(str(exc))
            continue
        if first is None:
            first = ds
    if first is None:
        shown = "; ".join(excluded[:3]) or "the series has no instances"
        raise UnreadableImageError(f"no usable image in the series ({shown})")
    return SeriesImages(refs, first, tuple(excluded))


def unreadable_summary(excluded: tuple[str, ...] | list[str], named: int = 3) -> str:
    """ "2 image(s) cannot be read: file a.dcm: no Image Position (Patient) (0020,0032); …", the
    first ``named`` of :attr:`SeriesImages.excluded` quoted (each names its file)."""
    shown = "; ".join(excluded[:named])
    more = f"; and {len(excluded) - named} more" if len(excluded) > named else ""
    return f"{len(excluded)} image(s) cannot be read: {shown}{more}"


def read_series(paths: Iterable[Path]) -> tuple[list[ImageRef], Dataset]:
    """Every image of a series and the first instance's header (for series-level facts);
    strict: the first unusable instance raises UnreadableImageError."""
    refs: list[ImageRef] = []
    first: Dataset | None = None
    for path in paths:
        ds = read_header(path)
        if first is None:
            first = ds
        refs.extend(image_refs(path, ds))
    if first is None:
        raise UnreadableImageError("the series has no instances")
    return refs, first


def time_of_day_s(ds: Dataset) -> float:
    """Seconds since midnight from AcquisitionDateTime, AcquisitionTime or ContentTime."""
    for keyword in ("AcquisitionDateTime", "FrameAcquisitionDateTime"):
        value = ds.get(keyword)
        if value:
            text = str(value)
            return _tm_seconds(text[8:]) if len(text) > 8 else 0.0
    for keyword in ("AcquisitionTime", "ContentTime"):
        value = ds.get(keyword)
        if value:
            return _tm_seconds(str(value))
    raise ValueError("no AcquisitionDateTime, AcquisitionTime or ContentTime")


def unwrap_midnight(times_of_day_s: list[float]) -> list[float]:
    """Make times monotone across midnight: an acquisition lasts minutes, so a span of more than
    12 h means the clock passed 00:00 and the small values belong to the next day."""
    if times_of_day_s and max(times_of_day_s) - min(times_of_day_s) > SECONDS_PER_DAY / 2:
        return [t + SECONDS_PER_DAY if t < SECONDS_PER_DAY / 2 else t for t in times_of_day_s]
    return list(times_of_day_s)


def acquisition_datetime(ds: Dataset) -> dt.datetime | None:
    """The first image's date and time, for reports; None when not recorded."""
    date = str(ds.get("AcquisitionDate") or ds.get("ContentDate") or ds.get("StudyDate") or "")
    try:
        seconds = time_of_day_s(ds)
        day = dt.datetime.strptime(date[:8], "%Y%m%d")
    except ValueError:
        return None
    return day + dt.timedelta(seconds=seconds)


def _tm_seconds(text: str) -> float:
    text = text.strip().split("+")[0].split("-")[0]
    if not text:
        raise ValueError("empty time")
    hours = int(text[0:2])
    minutes = int(text[2:4]) if len(text) >= 4 else 0
    seconds = float(text[4:]) if len(text) > 4 else 0.0
    return hours * 3600.0 + minutes * 60.0 + seconds


def _floats(values: Iterable) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _single_frame_ref(path: Path, ds: Dataset) -> ImageRef:
    ctdi = ds.get("CTDIvol")
    return ImageRef(
        path=Path(path),
        frame=None,
        sop_instance_uid=str(ds.SOPInstanceUID),
        position_mm=_floats(ds.ImagePositionPatient),  # type: ignore[arg-type]
        orientation=_floats(ds.ImageOrientationPatient),  # type: ignore[arg-type]
        time_of_day_s=time_of_day_s(ds),
        pixel_spacing_mm=_floats(ds.PixelSpacing),  # type: ignore[arg-type]
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        rescale_slope=float(ds.get("RescaleSlope", 1.0) or 1.0),
        rescale_intercept=float(ds.get("RescaleIntercept", 0.0) or 0.0),
        slice_thickness_mm=float(ds.get("SliceThickness", 0.0) or 0.0),
        ctdivol_mgy=float(ctdi) if ctdi not in (None, "") else None,
    )


def _group_item(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    """A functional group item for a frame: per-frame if present, else shared."""
    per_frame = ds.PerFrameFunctionalGroupsSequence[frame]
    if sequence in per_frame:
        return per_frame[sequence][0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and sequence in shared[0]:
        return shared[0][sequence][0]
    return None


def _enhanced_refs(path: Path, ds: Dataset) -> list[ImageRef]:
    refs = []
    for frame in range(int(ds.NumberOfFrames)):
        plane = _group_item(ds, frame, "PlanePositionSequence")
        orient = _group_item(ds, frame, "PlaneOrientationSequence")
        measures = _group_item(ds, frame, "PixelMeasuresSequence")
        content = _group_item(ds, frame, "FrameContentSequence")
        rescale = _group_item(ds, frame, "PixelValueTransformationSequence")
        exposure = _group_item(ds, frame, "CTExposureSequence")
        frame_time = content.get("FrameAcquisitionDateTime") if content is not None else None
        time_s = _tm_seconds(str(frame_time)[8:]) if frame_time else time_of_day_s(ds)
        ctdi = exposure.get("CTDIvol") if exposure is not None else None
        refs.append(
            ImageRef(
                path=Path(path),
                frame=frame,
                sop_instance_uid=str(ds.SOPInstanceUID),
                position_mm=_floats(plane.ImagePositionPatient),  # type: ignore[union-attr,arg-type]
                orientation=_floats(orient.ImageOrientationPatient),  # type: ignore[union-attr,arg-type]
                time_of_day_s=time_s,
                pixel_spacing_mm=_floats(measures.PixelSpacing),  # type: ignore[union-attr,arg-type]
                rows=int(ds.Rows),
                columns=int(ds.Columns),
                rescale_slope=float(rescale.RescaleSlope) if rescale is not None else 1.0,
                rescale_intercept=float(rescale.RescaleIntercept) if rescale is not None else 0.0,
                slice_thickness_mm=float(measures.get("SliceThickness", 0.0) or 0.0),  # type: ignore[union-attr]
                ctdivol_mgy=float(ctdi) if ctdi not in (None, "") else None,
            )
        )
    return refs
