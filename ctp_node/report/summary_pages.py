"""The pages a radiologist reads first: one colour map per page, and the mismatch summary.

Every page shows the slices as a montage in the source orientation (radiological convention for
axial images: patient right on the image left), with a colour bar in the map's units, and
burned-in identification (see :mod:`ctp_node.report.pages`). Each function returns an RGB
uint8 array ``(PAGE_HEIGHT, PAGE_WIDTH, 3)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pydicom
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ctp_node.perfusion.acquisition import Acquisition
from ctp_node.perfusion.lesions.stroke import clean_lesion
from ctp_node.perfusion.parameters import PerfusionParameters
from ctp_node.perfusion.result import DISPLAY_UNITS, PerfusionResult
from ctp_node.report import pages
from ctp_node.report.parametric_map import map_window

#: Page titles (short: they share the banner with the identification).
TITLES = {
    "CBF": "CBF: cerebral blood flow",
    "CBV": "CBV: cerebral blood volume",
    "MTT": "MTT: mean transit time",
    "TTP": "TTP: time to peak",
    "Tmax": "Tmax: time to residue maximum",
    "Ktrans": "Ktrans: blood-brain barrier permeability",
}
#: Colours of the mismatch overlay.
CORE_COLOUR = "#ff2d55"
HYPOPERFUSION_COLOUR = "#34c759"
#: Their opacity over the background images.
CORE_OPACITY = 0.75
HYPOPERFUSION_OPACITY = 0.55
#: Brain window of the background images, HU.
BRAIN_WINDOW_HU = (0.0, 80.0)

#: Defaults of the thresholds, used when a result does not record its own.
DEFAULT_THRESHOLDS = {
    "core_rcbf_threshold": 0.3,
    "tmax_threshold_s": 6.0,
    "tmax_severe_threshold_s": 10.0,
    "target_core_max_ml": 70.0,
    "target_mismatch_min_ml": 15.0,
    "target_mismatch_ratio_min": 1.8,
}


def threshold(result: PerfusionResult, name: str) -> float:
    """A threshold the result was computed with (its default if the result does not say)."""
    return float(result.parameters.get(name, DEFAULT_THRESHOLDS[name]))


def normal_reference_statement(result: PerfusionResult) -> str:
    """What the core's rCBF is relative to (the statistic, the tissue and the value), and in
    which tissue the core is counted."""
    statistic = "mean" if result.parameters.get("core_reference_mean", 1.0) else "median"
    gate = result.parameters.get("core_tmax_min_s", 0.0)
    return (
        f"normal CBF {result.normal_cbf:.1f} ml/100 g/min ({statistic} of tissue with "
        f"Tmax < {result.parameters.get('core_reference_tmax_s', 4.0):g} s)"
        + (f", core counted where the local median Tmax is >= {gate:g} s" if gate > 0 else "")
    )


def target_mismatch_statement(result: PerfusionResult) -> str:
    """The DEFUSE 3 target-mismatch statement with the criteria actually applied."""
    verdict = "PRESENT" if result.volumes.target_mismatch else "ABSENT"
    return (
        f"Target mismatch (DEFUSE 3 criteria): {verdict} "
        f"(core < {threshold(result, 'target_core_max_ml'):g} ml, "
        f"mismatch volume >= {threshold(result, 'target_mismatch_min_ml'):g} ml, "
        f"mismatch ratio >= {threshold(result, 'target_mismatch_ratio_min'):g})"
    )


def volume_lines(result: PerfusionResult) -> list[tuple[str, str]]:
    """(label, value) rows of the volumes table, with the thresholds in the labels."""
    v = result.volumes
    core_percent = 100 * threshold(result, "core_rcbf_threshold")
    tmax = threshold(result, "tmax_threshold_s")
    severe = threshold(result, "tmax_severe_threshold_s")
    ratio = "undefined (no core)" if v.mismatch_ratio is None else f"{v.mismatch_ratio:.1f}"
    hir = (
        "undefined"
        if v.hypoperfusion_intensity_ratio is None
        else (f"{v.hypoperfusion_intensity_ratio:.2f}")
    )
    return [
        (f"Ischemic core (rCBF < {core_percent:g} %)", f"{v.core_ml:.1f} ml"),
        (f"Hypoperfusion (Tmax > {tmax:g} s)", f"{v.tmax6_ml:.1f} ml"),
        (f"Hypoperfusion (Tmax > {severe:g} s)", f"{v.tmax10_ml:.1f} ml"),
        ("Mismatch volume", f"{v.mismatch_ml:.1f} ml"),
        ("Mismatch ratio", ratio),
        (f"HIR (Tmax>{severe:g} s / Tmax>{tmax:g} s)", hir),
    ]


def render_map_page(
    name: str,
    result: PerfusionResult,
    acquisition: Acquisition,
    source: pydicom.Dataset,
    *,
    footer: str,
    research: bool,
    version: str = "",
) -> np.ndarray:
    """One colour map (``"CBF"``, ``"CBV"``, ``"MTT"``, ``"TTP"``, ``"Tmax"`` or ``"Ktrans"``)
    on all slices.

    Voxels outside the tissue mask are black, tissue whose value the acquisition cannot support
    (NaN in the Parametric Map: :meth:`PerfusionResult.reported`) grey, with a note; the colour
    bar gives the display window in the map's unit (the same window as the Parametric Map's
    default VOI).
    """
    lower, upper = map_window(name, result)
    colours = colormaps["jet"].with_extremes(bad=pages.UNSUPPORTED_GREY)
    norm = Normalize(vmin=lower, vmax=upper)
    values = result.reported(name)

    def tiles(shown: list[int], shape: tuple[int, int]) -> np.ndarray:
        # Averaged over the tissue, then coloured; outside the tissue black (edges blend).
        mean, tissue = pages.area_mean(values[shown], shape, mask=result.tissue_mask[shown])
        rgb = colours(norm(np.ma.masked_invalid(mean)), bytes=True)[..., :3]
        return (rgb * tissue[..., None]).astype(np.uint8)

    figure = pages.new_page()
    pages.draw_banner(figure, source, TITLES[name], footer, research, version)
    slice_montage(figure, acquisition, tiles, box=(0.01, 0.03, 0.86, 0.88))
    bar_axis = figure.add_axes((0.9, 0.12, 0.025, 0.7))
    bar = figure.colorbar(ScalarMappable(norm=norm, cmap=colours), cax=bar_axis)
    bar.set_label(f"{name} ({DISPLAY_UNITS[name]})", color=pages.FOREGROUND, fontsize=15)
    bar.ax.tick_params(colors=pages.FOREGROUND, labelsize=13)
    inside = values[result.tissue_mask]
    measured = inside[np.isfinite(inside)]
    if measured.size:
        figure.text(
            0.985,
            0.06,
            f"median in brain\n{np.median(measured):.1f} {DISPLAY_UNITS[name]}",
            color=pages.FOREGROUND,
            fontsize=12,
            ha="right",
        )
    if measured.size < inside.size:
        figure.text(
            0.985,
            0.835,
            f"grey: no {name} the\nacquisition supports\n({inside.size - measured.size} voxels)",
            color=pages.FOREGROUND,
            fontsize=11,
            ha="right",
        )
    return pages.to_rgb(figure)


def render_mismatch_page(
    result: PerfusionResult,
    acquisition: Acquisition,
    source: pydicom.Dataset,
    *,
    footer: str,
    research: bool,
    quality_banner: str | None = None,
    version: str = "",
) -> np.ndarray:
    """Core and Tmax>6 s regions over the pre-contrast images, with the volumes and the DEFUSE 3
    target-mismatch statement; ``quality_banner`` (the acquisition checks that warned) is shown
    below it."""
    tiles = _overlay_tiles(result, acquisition)
    figure = pages.new_page()
    pages.draw_banner(figure, source, "Core / hypoperfusion mismatch", footer, research, version)
    slice_montage(figure, acquisition, tiles, box=(0.01, 0.03, 0.6, 0.88))
    _draw_mismatch_legend(figure, result)
    _draw_volumes_and_verdict(figure, result, quality_banner)
    notes = (
        f"Reference: {normal_reference_statement(result)}.\n"
        "Background: mean of the pre-contrast images (HU 0-80).\n"
        "Volumes count brain tissue only (CSF and vessels excluded).\n"
        f"Method: {result.algorithm or 'not stated'}."
    )
    figure.text(0.635, 0.08, pages.wrap(notes, 50), color="#c8c8c8", fontsize=12, va="bottom")
    return pages.to_rgb(figure)


def _overlay_tiles(
    result: PerfusionResult, acquisition: Acquisition
) -> Callable[[list[int], tuple[int, int]], np.ndarray]:
    """The montage's tiles: the core and hypoperfused regions over the mean of the
    pre-contrast images in the brain window."""
    core, hypoperfused = shown_lesions(result, acquisition)
    return overlay_tiles(
        result,
        acquisition,
        (
            (hypoperfused, HYPOPERFUSION_COLOUR, HYPOPERFUSION_OPACITY),
            (core, CORE_COLOUR, CORE_OPACITY),
        ),
    )


def overlay_tiles(
    result: PerfusionResult,
    acquisition: Acquisition,
    regions: Sequence[tuple[np.ndarray, str, float]],
) -> Callable[[list[int], tuple[int, int]], np.ndarray]:
    """A montage's tiles ``tiles(shown_slices, (rows, columns))``: ``regions`` (mask ``(z, y,
    x)``, colour, opacity; in drawing order) over the mean of the pre-contrast images (the
    result's AIF baseline frames) in the brain window."""
    baseline_frames = max(1, min(int(result.aif.baseline_frames), acquisition.hu.shape[0]))

    def tiles(shown: list[int], shape: tuple[int, int]) -> np.ndarray:
        # The regions laid over the background as the viewer would blend them: each with its
        # opacity, in proportion to how much of a shown pixel it covers.
        background = acquisition.hu[:baseline_frames, shown].mean(axis=0, dtype=np.float32)
        grey, _ = pages.area_mean(background, shape)
        low, high = BRAIN_WINDOW_HU
        rgb = np.repeat(np.clip((grey - low) / (high - low), 0.0, 1.0)[..., None], 3, axis=-1)
        for region, colour, opacity in regions:
            covered, _ = pages.area_mean(region[shown].astype(np.float32), shape)
            alpha = (opacity * covered)[..., None]
            rgb = rgb * (1.0 - alpha) + np.asarray(to_rgb(colour), np.float32) * alpha
        return np.rint(rgb * 255).astype(np.uint8)

    return tiles


def _draw_mismatch_legend(figure: Figure, result: PerfusionResult) -> None:
    """The overlay's colours with the thresholds that define the regions, right of the maps."""
    tmax = threshold(result, "tmax_threshold_s")
    core_percent = 100 * threshold(result, "core_rcbf_threshold")
    figure.legend(
        handles=[
            Patch(color=CORE_COLOUR, label=f"core: rCBF < {core_percent:g} % of normal"),
            Patch(color=HYPOPERFUSION_COLOUR, label=f"hypoperfusion: Tmax > {tmax:g} s"),
        ],
        loc="upper left",
        bbox_to_anchor=(0.63, 0.9),
        frameon=False,
        labelcolor=pages.FOREGROUND,
        fontsize=14,
    )


def _draw_volumes_and_verdict(
    figure: Figure, result: PerfusionResult, quality_banner: str | None
) -> None:
    """The volumes table, the DEFUSE 3 verdict with its criteria and, below them, the quality
    banner (if any), under the legend."""
    y = 0.77
    for label, value in volume_lines(result):
        figure.text(0.635, y, label, color=pages.FOREGROUND, fontsize=15)
        figure.text(0.985, y, value, color=pages.FOREGROUND, fontsize=15, ha="right", weight="bold")
        y -= 0.045
    colour = pages.ACCENT if result.volumes.target_mismatch else pages.FOREGROUND
    verdict = "PRESENT" if result.volumes.target_mismatch else "ABSENT"
    figure.text(
        0.635,
        y - 0.02,
        f"Target mismatch (DEFUSE 3):\n{verdict}",
        color=colour,
        fontsize=18,
        va="top",
        weight="bold",
    )
    criteria = (
        f"criteria: core < {threshold(result, 'target_core_max_ml'):g} ml, mismatch volume "
        f">= {threshold(result, 'target_mismatch_min_ml'):g} ml and mismatch ratio "
        f">= {threshold(result, 'target_mismatch_ratio_min'):g}"
    )
    figure.text(0.635, y - 0.1, pages.wrap(criteria, 50), color=colour, fontsize=13, va="top")
    if quality_banner:
        figure.text(
            0.635,
            y - 0.2,
            pages.wrap(quality_banner, 40),
            color="black",
            fontsize=13,
            va="top",
            weight="bold",
            bbox={"facecolor": pages.ACCENT, "edgecolor": "none", "pad": 6},
        )


def shown_lesions(result: PerfusionResult, acquisition: Acquisition) -> tuple[np.ndarray, ...]:
    """The core and Tmax > 6 s masks as the overlay draws them: without connected components
    (26-connectivity, as the engine counts them) smaller than the engine's minimum lesion size
    (``min_component_ml``, recorded in the result's parameters), so that no isolated speck is
    drawn that the volumes do not count. The engine has normally removed them already."""
    dy, dx = acquisition.pixel_spacing_mm
    voxel_ml = dy * dx * float(acquisition.slice_spacing_mm) / 1000.0
    minimum_ml = float(
        result.parameters.get("min_component_ml", PerfusionParameters().min_component_ml)
    )
    min_voxels = int(np.ceil(minimum_ml / max(voxel_ml, 1e-9)))
    return tuple(
        clean_lesion(np.asarray(mask, bool), min_voxels)
        for mask in (result.core_mask, result.tmax6_mask)
    )


def slice_montage(figure, acquisition: Acquisition, tiles, box) -> None:  # type: ignore[no-untyped-def]
    """The shown slices as one image of RGB tiles ``tiles(shown_slices, (rows, columns))``,
    each labelled with its slice, and the patient sides marked on the first."""
    n_z, rows, columns = acquisition.hu.shape[1:]
    dy, dx = acquisition.pixel_spacing_mm
    shown_slices = pages.montage_slices(n_z)
    montage = pages.montage_layout(len(shown_slices), box, aspect=rows * dy / (columns * dx))
    pages.draw_montage(
        figure, tiles(shown_slices, (montage.tile_height, montage.tile_width)), montage
    )
    positions = _positions_along_normal(acquisition)
    labels = []
    for index, z in enumerate(shown_slices):
        left, bottom, width, height = montage.tile_box(index)
        labels.append(
            pages.Label(
                left + 0.02 * width,
                bottom + 0.02 * height,
                pages.slice_label(z, n_z, positions),
                pages.style(color=pages.FOREGROUND, fontsize=11),
            )
        )
    labels += pages.side_labels(acquisition.orientation, montage.tile_box(0))
    pages.draw_labels(figure, labels)
    if len(shown_slices) < n_z:
        figure.text(0.01, 0.035, f"{len(shown_slices)} of {n_z} slices shown", color="#b0b0b0")


def _positions_along_normal(acquisition: Acquisition) -> np.ndarray | None:
    positions = np.asarray(acquisition.slice_positions_mm, dtype=float)
    if positions.shape != (acquisition.hu.shape[1], 3):
        return None
    normal = np.cross(acquisition.orientation[:3], acquisition.orientation[3:])
    return positions @ normal
