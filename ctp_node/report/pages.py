"""Drawing helpers shared by the rendered pages: the page itself, its identification banner,
slice montages and the conversion to an RGB pixel array.

Pages are ``PAGE_WIDTH`` × ``PAGE_HEIGHT`` pixels, white text on black as PACS viewers show
images. Identification (patient, study, accession) is burned into every page on purpose: a
Secondary Capture is read without the header on screen. It must never be logged.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on a server
import numpy as np
import pydicom
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: Page size in pixels (width, height) and the resolution the fonts are sized for.
PAGE_WIDTH = 1280
PAGE_HEIGHT = 1024
DPI = 100
#: Height of the identification banner, as a fraction of the page.
BANNER_FRACTION = 0.085
#: Most slices a montage shows; more are thinned to evenly spaced slices.
MAX_MONTAGE_SLICES = 20

FOREGROUND = "white"
BACKGROUND = "black"
ACCENT = "#ffd24d"


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
    figure.text(0.012, top, patient, color=FOREGROUND, fontsize=14, va="top", weight="bold")
    figure.text(0.012, top - 0.028, study, color=FOREGROUND, fontsize=12, va="top")
    figure.text(0.988, top, title, color=ACCENT, fontsize=17, va="top", ha="right", weight="bold")
    if research:
        figure.text(
            0.988,
            top - 0.03,
            "RESEARCH USE - not a cleared medical device",
            color="#ff7070",
            fontsize=11,
            va="top",
            ha="right",
        )
    if version:
        figure.text(
            0.988,
            top - 0.049,
            version,
            color=ACCENT,
            fontsize=10,
            va="top",
            ha="right",
            weight="bold",
        )
    figure.text(0.012, 0.008, footer, color="#b0b0b0", fontsize=10, va="bottom")
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


def montage_axes(
    figure: Figure, count: int, box: tuple[float, float, float, float], aspect: float
) -> list[Axes]:
    """``count`` image axes tiled into ``box`` (left, bottom, width, height, page fractions),
    with the number of columns that makes tiles of height/width ``aspect`` largest."""
    left, bottom, width, height = box
    box_w, box_h = width * PAGE_WIDTH, height * PAGE_HEIGHT
    best_columns, best_tile = 1, 0.0
    for columns in range(1, count + 1):
        rows = math.ceil(count / columns)
        tile = min(box_w / columns, box_h / rows / aspect)
        if tile > best_tile:
            best_columns, best_tile = columns, tile
    columns = best_columns
    rows = math.ceil(count / columns)
    tile_w, tile_h = best_tile / PAGE_WIDTH, best_tile * aspect / PAGE_HEIGHT
    x0 = left + (width - columns * tile_w) / 2
    y0 = bottom + height - (height - rows * tile_h) / 2
    axes = []
    for index in range(count):
        row, column = divmod(index, columns)
        axis = figure.add_axes(
            (x0 + column * tile_w, y0 - (row + 1) * tile_h, tile_w * 0.98, tile_h * 0.98)
        )
        axis.set_axis_off()
        axes.append(axis)
    return axes


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


def mark_sides(axis: Axes, orientation: Sequence[float]) -> None:
    left, top = side_markers(orientation)
    style = {"color": ACCENT, "fontsize": 12, "weight": "bold", "transform": axis.transAxes}
    axis.text(0.02, 0.5, left, va="center", ha="left", **style)
    axis.text(0.5, 0.98, top, va="top", ha="center", **style)


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
