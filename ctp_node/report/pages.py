"""Drawing helpers shared by the rendered pages: the page itself, its identification banner,
slice montages and the conversion to an RGB pixel array.

Pages are ``PAGE_WIDTH`` × ``PAGE_HEIGHT`` pixels, white text on black as PACS viewers show
images. Identification (patient, study, accession) is burned into every page on purpose: a
Secondary Capture is read without the header on screen. It must never be logged.
"""

from __future__ import annotations

import functools
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # no display on a server
import numpy as np
import pydicom
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Transform

#: Page size in pixels (width, height) and the resolution the fonts are sized for.
PAGE_WIDTH = 1280
PAGE_HEIGHT = 1024
DPI = 100
#: Height of the identification banner, as a fraction of the page.
BANNER_FRACTION = 0.085
#: Most slices a montage shows; more are thinned to evenly spaced slices.
MAX_MONTAGE_SLICES = 20

#: Height of an axis' title over the axis (1 = its top edge). Given, matplotlib places the title
#: there instead of measuring every tick label of the axis to clear them (the titled axes have
#: none at the top), which cost as much as drawing the axis.
TITLE_Y = 1.0
FOREGROUND = "white"
BACKGROUND = "black"
ACCENT = "#ffd24d"


#: The colour of brain voxels without a supported value (NaN in the Parametric Maps) on the
#: pages and the summary image: a mid grey, outside the jet colour map and distinct from the
#: black background.
UNSUPPORTED_GREY = "0.55"


def new_page() -> Figure:
    """An empty black page of ``PAGE_WIDTH`` × ``PAGE_HEIGHT`` pixels."""
    figure = Figure(figsize=(PAGE_WIDTH / DPI, PAGE_HEIGHT / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    figure.patch.set_facecolor(BACKGROUND)
    return figure


def to_rgb(figure: Figure) -> np.ndarray:
    """The rendered page as uint8 ``(rows, columns, 3)``."""
    canvas = figure.canvas
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[..., :3], dtype=np.uint8)


def identification_lines(source: pydicom.Dataset) -> tuple[str, str]:
    """Patient line and study line of the banner, from a source image header."""
    name = str(source.get("PatientName", "") or "").replace("^", ", ").strip(", ")
    patient = "   ".join(
        [
            name or "(no name)",
            f"ID {source.get('PatientID', '') or '-'}",
            f"born {_date(source.get('PatientBirthDate', ''))}",
            f"sex {source.get('PatientSex', '') or '-'}",
        ]
    )
    study = "   ".join(
        [
            f"study {_date(source.get('StudyDate', ''))} {_time(source.get('StudyTime', ''))}",
            f"accession {source.get('AccessionNumber', '') or '-'}",
            f"{source.get('StudyDescription', '') or ''}".strip(),
            f"source series {source.get('SeriesNumber', '') or '-'} "
            f"{source.get('SeriesDescription', '') or ''}".strip(),
        ]
    )
    return patient, study


def draw_banner(
    figure: Figure,
    source: pydicom.Dataset,
    title: str,
    footer: str,
    research: bool,
    version: str = "",
) -> None:
    """Identification at the top, page title in the middle, device and version at the bottom;
    ``version`` (from the second version of a result on) says what the page supersedes."""
    patient, study = identification_lines(source)
    top = 1.0 - 0.012
    labels = [
        Label(0.012, top, patient, style(color=FOREGROUND, fontsize=14, va="top", weight="bold")),
        Label(0.012, top - 0.028, study, style(color=FOREGROUND, fontsize=12, va="top")),
        Label(0.012, 0.008, footer, style(color="#b0b0b0", fontsize=10, va="bottom")),
    ]
    right = {"va": "top", "ha": "right"}
    if research:
        text = "RESEARCH USE - not a cleared medical device"
        labels.append(Label(0.988, top - 0.03, text, style(color="#ff7070", fontsize=11, **right)))
    if version:
        labels.append(
            Label(
                0.988,
                top - 0.049,
                version,
                style(color=ACCENT, fontsize=10, weight="bold", **right),
            )
        )
    draw_labels(figure, labels)
    figure.text(0.988, top, title, color=ACCENT, fontsize=17, weight="bold", **right)
    figure.add_artist(
        matplotlib.lines.Line2D(
            [0.0, 1.0],
            [1 - BANNER_FRACTION + 0.01] * 2,
            color="#606060",
            linewidth=1,
            transform=figure.transFigure,
        )
    )


def montage_slices(n_slices: int) -> list[int]:
    """The slices a montage shows: all, or ``MAX_MONTAGE_SLICES`` evenly spaced ones."""
    if n_slices <= MAX_MONTAGE_SLICES:
        return list(range(n_slices))
    return sorted(
        set(np.rint(np.linspace(0, n_slices - 1, MAX_MONTAGE_SLICES)).astype(int).tolist())
    )


@dataclass(frozen=True)
class Montage:
    """Where the tiles of a montage sit on the page.

    Attributes
    ----------
    columns, rows : the grid.
    tile_width, tile_height : pixels of each tile's image.
    pitch_x, pitch_y : pixels from one tile to the next (the image and a 2 % gap).
    left, top : page pixels of the grid's upper-left corner, from the page's left and top.
    """

    columns: int
    rows: int
    tile_width: int
    tile_height: int
    pitch_x: int
    pitch_y: int
    left: int
    top: int

    def tile_box(self, index: int) -> tuple[float, float, float, float]:
        """Tile ``index``'s image as (left, bottom, width, height), page fractions."""
        row, column = divmod(index, self.columns)
        left = self.left + column * self.pitch_x
        top = self.top + row * self.pitch_y
        return (
            left / PAGE_WIDTH,
            1.0 - (top + self.tile_height) / PAGE_HEIGHT,
            self.tile_width / PAGE_WIDTH,
            self.tile_height / PAGE_HEIGHT,
        )


def montage_layout(count: int, box: tuple[float, float, float, float], aspect: float) -> Montage:
    """``count`` tiles in ``box`` (left, bottom, width, height, page fractions), with the number
    of columns that makes tiles of height/width ``aspect`` largest; the grid centred in it."""
    left, bottom, width, height = box
    box_w, box_h = width * PAGE_WIDTH, height * PAGE_HEIGHT
    best_columns, best_pitch = 1, 0.0
    for columns in range(1, count + 1):
        rows = math.ceil(count / columns)
        pitch = min(box_w / columns, box_h / rows / aspect)
        if pitch > best_pitch:
            best_columns, best_pitch = columns, pitch
    columns, rows = best_columns, math.ceil(count / best_columns)
    pitch_x, pitch_y = int(best_pitch), int(best_pitch * aspect)
    return Montage(
        columns=columns,
        rows=rows,
        tile_width=max(1, round(pitch_x * 0.98)),
        tile_height=max(1, round(pitch_y * 0.98)),
        pitch_x=pitch_x,
        pitch_y=pitch_y,
        left=round(left * PAGE_WIDTH + (box_w - columns * pitch_x) / 2),
        top=round((1.0 - bottom - height) * PAGE_HEIGHT + (box_h - rows * pitch_y) / 2),
    )


def draw_montage(figure: Figure, tiles: np.ndarray, montage: Montage) -> None:
    """Place RGB ``tiles`` (uint8 ``(n, tile_height, tile_width, 3)``) on the page as one
    image, pixel for pixel (nothing resampled at drawing time)."""
    n, tile_h, tile_w = tiles.shape[:3]
    grid = np.zeros(
        (montage.rows * montage.pitch_y, montage.columns * montage.pitch_x, 3), np.uint8
    )
    for index in range(n):
        row, column = divmod(index, montage.columns)
        y, x = row * montage.pitch_y, column * montage.pitch_x
        grid[y : y + tile_h, x : x + tile_w] = tiles[index]
    figure.add_artist(PagePixels(grid, montage.left, PAGE_HEIGHT - montage.top - grid.shape[0]))


class PagePixels(Artist):
    """An RGB image drawn on the page pixel for pixel, its lower-left corner ``left``,
    ``bottom`` page pixels from the page's lower-left (``figimage`` would resample it even at
    1:1, which costs as much as drawing the rest of the page)."""

    def __init__(self, rgb: np.ndarray, left: int, bottom: int) -> None:
        super().__init__()
        if rgb.shape[-1] == 3:
            rgb = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)], axis=-1)
        # The renderer puts an image's first row at the bottom.
        self._rgba = np.ascontiguousarray(rgb[::-1])
        self._left, self._bottom = left, bottom

    def draw(self, renderer) -> None:  # type: ignore[no-untyped-def]
        context = renderer.new_gc()
        renderer.draw_image(context, self._left, self._bottom, self._rgba)
        context.restore()


def area_mean(
    planes: np.ndarray, shape: tuple[int, int], mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each plane of ``planes`` ``(n, rows, columns)`` resampled to ``shape`` ``(rows,
    columns)``: each new pixel is the mean over the area of the old ones it covers, as a display
    shrinks an image without aliasing (enlarged, pixels are repeated and blend at their edges).

    With a boolean ``mask`` (same shape), the mean is over the masked pixels only (NaN values
    left out too), NaN where it covers none of them (or only NaN). Returns the mean and the
    fraction of each new pixel the mask covers (NaN values included: a brain voxel without a
    value is still brain), float32.
    """
    if mask is None:
        mean = _area_resample(planes, shape)
        return mean.astype(np.float32), np.ones(mean.shape, np.float32)
    coverage = _mask_coverage(mask, shape)
    valued, valued_coverage = mask, coverage
    if not np.isfinite(planes).all():
        valued = mask & np.isfinite(planes)
        valued_coverage = _area_resample(valued.astype(np.float32), shape)
    total = _area_resample(np.where(valued, planes, np.float32(0)), shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(valued_coverage > 1e-6, total / valued_coverage, np.nan)
    return mean.astype(np.float32), np.clip(coverage, 0.0, 1.0).astype(np.float32)


#: The last mask :func:`_mask_coverage` resampled (a reference to it, so that its identity
#: cannot pass to another array), and the result: the five map pages share one tissue mask.
_last_coverage: list[tuple[np.ndarray, tuple[int, int], np.ndarray]] = []


def _mask_coverage(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``mask`` resampled by area (the fraction of each new pixel it covers), reused while the
    same array (unchanged: its bytes are compared) is asked for at the same size."""
    for previous, size, coverage in _last_coverage:
        if size == shape and previous.shape == mask.shape and np.array_equal(previous, mask):
            return coverage
    coverage = _area_resample(mask.astype(np.float32), shape)
    _last_coverage[:] = [(mask.copy(), shape, coverage)]
    return coverage


def _area_resample(planes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Whole blocks averaged first on both axes (where the image shrinks by a factor of 2 or
    more: cheap, and it leaves a quarter of the data or less), then area averaging along
    columns, then along rows, each made the last, contiguous axis (a running sum along another
    axis is several times slower)."""
    planes = np.asarray(planes, dtype=np.float32)
    for axis, size in ((-1, shape[1]), (-2, shape[0])):
        factor = planes.shape[axis] // size
        if factor >= 2 and planes.shape[axis] % factor == 0:
            planes = _block_mean(planes, factor, axis)
    across = _area_last(planes, shape[1])
    down = _area_last(np.ascontiguousarray(across.swapaxes(-1, -2)), shape[0])
    return down.swapaxes(-1, -2)


def _block_mean(values: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """The mean of each ``factor`` neighbours along ``axis`` (-1 or -2)."""
    step = (slice(None),) * (values.ndim + axis)
    total = values[(*step, slice(0, None, factor))].copy()
    for start in range(1, factor):
        total += values[(*step, slice(start, None, factor))]
    return total / np.float32(factor)


def _area_last(values: np.ndarray, size: int) -> np.ndarray:
    """``values`` resampled to ``size`` along the last axis by area averaging: the running sum
    taken at the new pixels' edges (linear between the old pixels' edges), differenced."""
    n = values.shape[-1]
    running = np.zeros((*values.shape[:-1], n + 1), np.float32)
    np.cumsum(values, axis=-1, out=running[..., 1:])
    edges = np.linspace(0.0, n, size + 1)
    lower = np.minimum(edges.astype(int), n - 1)
    fraction = (edges - lower).astype(np.float32)
    at_lower = running[..., lower]
    at_edges = at_lower + fraction * (running[..., lower + 1] - at_lower)
    return np.diff(at_edges, axis=-1) * np.float32(size / n)


def slice_label(z: int, n_slices: int, positions_mm: np.ndarray | None) -> str:
    """E.g. ``"3/8  z 10.0 mm"``: the slice number (1-based) and its position along the normal."""
    label = f"{z + 1}/{n_slices}"
    if positions_mm is not None and len(positions_mm) == n_slices:
        label += f"  z {float(positions_mm[z]):.1f} mm"
    return label


def side_markers(orientation: Sequence[float]) -> tuple[str, str]:
    """Patient side at the image's left and top edges (e.g. ``("R", "A")`` for axial HFS)."""
    row, column = np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float)
    return _letter(-row), _letter(-column)


def side_labels(
    orientation: Sequence[float], box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
) -> list[Label]:
    """The patient sides at the left and top edges of an image at ``box`` (left, bottom,
    width, height; the default: coordinates 0-1 across the image)."""
    left, top = side_markers(orientation)
    x0, y0, width, height = box
    marks = {"color": ACCENT, "fontsize": 12, "weight": "bold"}
    return [
        Label(x0 + 0.02 * width, y0 + 0.5 * height, left, style(va="center", ha="left", **marks)),
        Label(x0 + 0.5 * width, y0 + 0.98 * height, top, style(va="top", ha="center", **marks)),
    ]


def mark_sides(figure: Figure, orientation: Sequence[float], transform: Transform) -> None:
    """The patient sides at an image's left and top edges; ``transform`` maps 0-1 across the
    image to the page (an axis' ``transAxes``)."""
    for label in side_labels(orientation):
        figure.text(label.x, label.y, label.text, transform=transform, **dict(label.style))


@dataclass(frozen=True)
class Label:
    """A text at page fractions ``x``, ``y`` with matplotlib text properties ``style``
    (:func:`style`)."""

    x: float
    y: float
    text: str
    style: tuple[tuple[str, object], ...]


def style(**properties: object) -> tuple[tuple[str, object], ...]:
    """Text properties as :class:`Label` holds them (hashable)."""
    return tuple(sorted(properties.items()))


def draw_labels(figure: Figure, labels: Sequence[Label]) -> None:
    """Draw ``labels`` as one image, rendered once for all pages that show the same ones (the
    banner's identification and footer, a montage's slice labels): drawing a text costs
    ~2 ms, and a page has dozens. Pixel for pixel what drawing them on the page gives (the
    same renderer, glyphs blended by their coverage)."""
    rgba, bottom = _label_layer(tuple(labels))
    if rgba.size:
        layer = PagePixels(rgba, 0, bottom)
        layer.set_zorder(matplotlib.text.Text.zorder)  # drawn where the texts would be
        figure.add_artist(layer)


@functools.lru_cache(maxsize=8)  # a job's pages use 3 (banner, two montage layouts)
def _label_layer(labels: tuple[Label, ...]) -> tuple[np.ndarray, int]:
    """``labels`` on a transparent page, cropped to the rows they cover: RGBA (not
    premultiplied, as the renderer's own buffer) and the bottom row's height above the
    page's bottom."""
    figure = new_page()
    figure.patch.set_alpha(0.0)
    for label in labels:
        figure.text(label.x, label.y, label.text, **dict(label.style))
    figure.canvas.draw()
    rgba = np.asarray(figure.canvas.buffer_rgba())
    rows = np.flatnonzero(rgba[..., 3].any(axis=1))
    if rows.size == 0:
        return np.zeros((0, 0, 4), np.uint8), 0
    layer = rgba[rows[0] : rows[-1] + 1].copy()
    layer.flags.writeable = False
    return layer, PAGE_HEIGHT - 1 - int(rows[-1])


def wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.fill(part, width) for part in text.splitlines())


def _letter(direction: np.ndarray) -> str:
    """The patient direction (DICOM LPS letters) a unit vector mostly points to."""
    axis = int(np.argmax(np.abs(direction)))
    positive, negative = (("L", "R"), ("P", "A"), ("H", "F"))[axis]
    return positive if direction[axis] > 0 else negative


def _date(value: object) -> str:
    text = str(value or "")
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 else (text or "-")


def _time(value: object) -> str:
    text = str(value or "")
    return f"{text[:2]}:{text[2:4]}" if len(text) >= 4 else text
