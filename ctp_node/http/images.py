"""The console's pictures, drawn on request as PNG bytes: a slice of a stored Parametric Map
with its colour bar (or one pixel per voxel, to click on), a stored Secondary Capture page, a
slice of the mean pre-contrast image, and input curves. matplotlib draws with its Agg canvas on a
figure of its own (no pyplot: the console serves requests in several threads)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from ctp_node.report.pages import UNSUPPORTED_GREY

#: Pixels per inch of the drawn figures (a map is ~5 × 4 inches).
DPI = 80
#: A map's colours: NaN (a brain voxel whose value the acquisition cannot support) grey, as on
#: the node's pages.
MAP_COLOURS = colormaps["jet"].with_extremes(bad=UNSUPPORTED_GREY)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor=figure.get_facecolor())
    return buffer.getvalue()


def _map_window(ds: pydicom.Dataset, frame: np.ndarray) -> tuple[float, float]:
    """The window the node wrote in the map's VOI LUT (its default display), else the
    frame's 2nd to 98th percentile."""
    try:
        voi = ds.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence[0]
        centre, width = float(voi.WindowCenter), float(voi.WindowWidth)
        return centre - width / 2, centre + width / 2
    except (AttributeError, IndexError, KeyError, TypeError):
        finite = frame[np.isfinite(frame)]
        if finite.size == 0:
            return 0.0, 1.0
        low, high = np.percentile(finite, (2, 98))
        return float(low), float(max(high, low + 1e-3))


def _map_unit(ds: pydicom.Dataset) -> str:
    try:
        mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
        return str(mapping.MeasurementUnitsCodeSequence[0].CodeValue)
    except (AttributeError, IndexError, KeyError):
        return ""


def _map_frame(path: Path, frame_index: int) -> tuple[pydicom.Dataset, np.ndarray]:
    """A stored Parametric Map and its frame ``frame_index`` (0-based, source order: one per
    slice); :class:`IndexError` with a sentence for a slice it does not have."""
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array.astype(np.float32)
    if frames.ndim == 2:
        frames = frames[None]
    if not 0 <= frame_index < frames.shape[0]:
        raise IndexError(f"slice {frame_index} is outside 0-{frames.shape[0] - 1}")
    return ds, frames[frame_index]


def map_png(path: Path, frame_index: int) -> bytes:
    """Frame ``frame_index`` of a stored Parametric Map, in the jet colour map over its stored
    window, with a colour bar in its unit."""
    ds, frame = _map_frame(path, frame_index)
    low, high = _map_window(ds, frame)
    figure = Figure(figsize=(5.5, 4.5), dpi=DPI)
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    shown = axis.imshow(frame, cmap=MAP_COLOURS, vmin=low, vmax=high)
    axis.set_title(f"{ds.get('SeriesDescription', '')} - slice {frame_index + 1}", fontsize=9)
    axis.axis("off")
    bar = figure.colorbar(shown, ax=axis, fraction=0.046)
    bar.set_label(_map_unit(ds))
    return _png(figure)


def map_voxels_png(path: Path, frame_index: int) -> bytes:
    """Frame ``frame_index`` of a stored Parametric Map in the jet colour map over its stored
    window, one pixel per voxel and nothing around it (so that a click's position on it is the
    voxel's row and column, as on :func:`grey_png`), coloured as :func:`map_png` colours it."""
    ds, frame = _map_frame(path, frame_index)
    low, high = _map_window(ds, frame)
    scaled = np.clip((frame - low) / max(high - low, 1e-6), 0.0, 1.0)
    rgb = (MAP_COLOURS(scaled)[..., :3] * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


#: Top of a page that holds the banner's patient line (name, ID, birth date, sex), as a
#: fraction of its height: the line hangs from 0.012 and the study line (accession, date)
#: starts at 0.04 (:func:`ctp_node.report.pages.draw_banner`).
PATIENT_LINE_FRACTION = 0.04
#: What the console shows in its place (access control, and with it identity, comes later).
WITHHELD = "patient identification withheld in the console"


def page_png(path: Path) -> bytes:
    """A stored Secondary Capture page (RGB or grey) as PNG, pixel for pixel, except its
    banner's patient line, blacked out (:data:`PATIENT_LINE_FRACTION`) and replaced by
    :data:`WITHHELD`."""
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    if pixels.ndim == 4 or (pixels.ndim == 3 and pixels.shape[-1] != 3):
        pixels = pixels[0]  # a multi-frame page: its first frame
    if pixels.dtype != np.uint8:
        pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    pixels = pixels.copy()
    band = round(pixels.shape[0] * PATIENT_LINE_FRACTION)
    pixels[:band] = 0
    image = Image.fromarray(pixels)
    ImageDraw.Draw(image).text((12, max(0, band // 2 - 6)), WITHHELD, fill="grey")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def grey_png(image: np.ndarray, low_hu: float = 0.0, high_hu: float = 80.0) -> bytes:
    """A slice in HU as an 8-bit grey PNG with one pixel per voxel (so that a click's position
    on it is the voxel's row and column), windowed ``low_hu``-``high_hu`` (brain window)."""
    scaled = (np.clip(image, low_hu, high_hu) - low_hu) / (high_hu - low_hu) * 255
    buffer = io.BytesIO()
    Image.fromarray(scaled.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def curves_png(curves: Sequence[tuple[str, Sequence[float], Sequence[float], str]]) -> bytes:
    """Curves ``(label, times_s, enhancement_hu, matplotlib style)`` on one plot: time (s)
    against enhancement over baseline (HU)."""
    figure = Figure(figsize=(6, 3.6), dpi=DPI)
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    for label, times, values, style in curves:
        axis.plot(times, values, style, label=label)
    axis.set_xlabel("time (s)")
    axis.set_ylabel("enhancement (HU)")
    axis.grid(alpha=0.3)
    if curves:
        axis.legend(fontsize=8)
    figure.subplots_adjust(left=0.13, right=0.97, bottom=0.15, top=0.95)
    return _png(figure)
