"""The vasospasm profile's first summary page: the two hemispheres over the pre-contrast images
and each map's hemispheric means, difference or ratio and flag (in place of the stroke
profile's mismatch page)."""

from __future__ import annotations

import numpy as np
import pydicom

from ctp_node.perfusion.acquisition import Acquisition
from ctp_node.perfusion.asymmetry import TIME_MAPS, HemisphericComparison, split_hemispheres
from ctp_node.perfusion.result import DISPLAY_UNITS, PerfusionResult
from ctp_node.report import pages
from ctp_node.report.rounding import display
from ctp_node.report.summary_pages import overlay_tiles, slice_montage

#: The colours of the first and second side (left, right) over the pre-contrast images.
SIDE_COLOURS = ("#4da6ff", "#ff9f40")
#: Their opacity.
SIDE_OPACITY = 0.35


def render_asymmetry_page(
    result: PerfusionResult,
    acquisition: Acquisition,
    source: pydicom.Dataset,
    *,
    profile_statement: str,
    footer: str,
    research: bool,
    quality_banner: str | None = None,
    version: str = "",
) -> np.ndarray:
    """The hemispheres (tinted, the midline between them) over the mean pre-contrast image,
    the table of each map's hemispheric means with its difference (time maps) or lower/higher
    ratio (flow maps) and flag, the profile and what chose it, and ``quality_banner``."""
    comparison = result.asymmetry
    if comparison is None:
        raise ValueError("the result has no hemispheric comparison to draw")
    figure = pages.new_page()
    pages.draw_banner(figure, source, "Hemispheric asymmetry", footer, research, version)
    slice_montage(
        figure,
        acquisition,
        _hemisphere_tiles(result, acquisition, comparison),
        box=(0.01, 0.03, 0.6, 0.88),
    )
    y = _draw_table(figure, result, comparison)
    verdict = comparison.flagged
    colour = pages.ACCENT if verdict else pages.FOREGROUND
    text = "Flagged: " + ", ".join(verdict) if verdict else "No map flagged"
    figure.text(0.635, y - 0.02, text, color=colour, fontsize=18, va="top", weight="bold")
    limits = (
        f"flags: MTT, TTP, Tmax hemispheric means more than "
        f"{result.parameters.get('asymmetry_time_difference_s', 1.5):g} s apart; CBF, CBV "
        f"lower/higher below {result.parameters.get('asymmetry_flow_ratio', 0.8):g} (not "
        "validated for vasospasm: set per site)"
    )
    figure.text(0.635, y - 0.08, pages.wrap(limits, 50), color=colour, fontsize=12, va="top")
    notes = f"{profile_statement}\nBackground: mean of the pre-contrast images (HU 0-80)."
    if quality_banner:
        notes += f"\n{quality_banner}"
    figure.text(0.635, 0.08, pages.wrap(notes, 50), color="#c8c8c8", fontsize=12, va="bottom")
    return pages.to_rgb(figure)


def _draw_table(figure, result: PerfusionResult, comparison: HemisphericComparison) -> float:  # type: ignore[no-untyped-def]
    """Each map's row (name, first and second side's mean, difference or ratio, flag) under a
    header; returns the height below the table."""
    first, second = comparison.sides
    columns = (0.635, 0.74, 0.83, 0.985)
    y = 0.8
    header_colours = ("#b0b0b0", *SIDE_COLOURS, "#b0b0b0")  # the sides in their tint
    for x, text, colour in zip(
        columns, ("map", first, second, "Δ / ratio"), header_colours, strict=True
    ):
        figure.text(x, y, text, color=colour, fontsize=13, ha="left" if x < 0.9 else "right")
    for name, item in comparison.maps.items():
        y -= 0.045
        unit = DISPLAY_UNITS.get(name, "")
        if name.lower() in TIME_MAPS:
            change = f"{display(item.difference, 's')}"
        else:
            change = f"{display(item.ratio, 'ratio', '')}"
        colour = pages.ACCENT if item.flagged else pages.FOREGROUND
        cells = (
            f"{name}{' !' if item.flagged else ''}",
            display(item.mean[first], unit, ""),
            display(item.mean[second], unit, ""),
            change,
        )
        for x, text in zip(columns, cells, strict=True):
            figure.text(
                x,
                y,
                text,
                color=colour,
                fontsize=15,
                ha="left" if x < 0.9 else "right",
                weight="bold" if item.flagged else "normal",
            )
    figure.text(
        0.635,
        y - 0.04,
        f"means in the brain; Δ = {second} − {first}, ratio = lower / higher",
        color="#b0b0b0",
        fontsize=11,
    )
    return y - 0.07


def _hemisphere_tiles(
    result: PerfusionResult, acquisition: Acquisition, comparison: HemisphericComparison
):  # type: ignore[no-untyped-def]
    """Tiles: each hemisphere's tissue tinted in its :data:`SIDE_COLOURS` over the mean
    pre-contrast image."""
    halves = split_hemispheres(
        result.tissue_mask,
        comparison.midline,
        acquisition.pixel_spacing_mm,
        acquisition.orientation,
        margin_mm=float(result.parameters.get("asymmetry_midline_margin_mm", 2.0)),
    )
    regions = [
        (halves.side(name), colour, SIDE_OPACITY)
        for name, colour in zip(comparison.sides, SIDE_COLOURS, strict=True)
    ]
    return overlay_tiles(result, acquisition, regions)
