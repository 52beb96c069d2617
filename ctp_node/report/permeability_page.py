"""The tumour profile's first summary page: the enhancing region over the pre-contrast images
and each map's mean in it beside the tissue outside it (in place of the stroke profile's
mismatch page)."""

from __future__ import annotations

import numpy as np
import pydicom

from ctp_node.perfusion.acquisition import Acquisition
from ctp_node.perfusion.permeability.region import (
    RegionStatistics,
    enhancing_statistics,
    user_region_statistics,
)
from ctp_node.perfusion.result import DISPLAY_UNITS, PerfusionResult
from ctp_node.report import pages
from ctp_node.report.permeability_text import region_rule
from ctp_node.report.rounding import display
from ctp_node.report.summary_pages import overlay_tiles, slice_montage

#: The enhancing region's colour over the pre-contrast images, and its opacity.
ENHANCING_COLOUR = "#ff4fd8"
ENHANCING_OPACITY = 0.6
#: The colour and opacity of a region a person gave (drawn over the enhancing region).
USER_REGION_COLOUR = "#3ce0ff"
USER_REGION_OPACITY = 0.45


def render_permeability_page(
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
    """The enhancing region (tinted) over the mean pre-contrast image, its volume, the table of
    CBF, CBV, MTT and K^trans in it and outside it (with the ratio of the flows and volumes),
    the model, the region's rule, the profile and ``quality_banner``; with a region a person
    gave, that region too (tinted in :data:`USER_REGION_COLOUR`, a line with its K^trans and CBV
    means)."""
    permeability = result.permeability
    if permeability is None:
        raise ValueError("the result has no permeability measurement to draw")
    figure = pages.new_page()
    pages.draw_banner(figure, source, "Permeability: enhancing region", footer, research, version)
    regions = [(permeability.enhancing_mask, ENHANCING_COLOUR, ENHANCING_OPACITY)]
    if result.user_region is not None:
        regions.append((result.user_region.mask, USER_REGION_COLOUR, USER_REGION_OPACITY))
    slice_montage(
        figure,
        acquisition,
        overlay_tiles(result, acquisition, regions),
        box=(0.01, 0.03, 0.6, 0.88),
    )
    statistics = enhancing_statistics(result)
    if statistics is None:
        headline, y = "No enhancing region found", 0.8
    else:
        headline = f"Enhancing region {display(statistics.volume_ml, 'ml')}"
        y = _draw_table(figure, statistics)
    figure.text(0.635, 0.86, headline, color=ENHANCING_COLOUR, fontsize=20, weight="bold")
    about = (
        f"{permeability.model}, on the {permeability.late_frames} images from "
        f"{display(permeability.first_pass_end_s, 's')}; leak removed before deconvolution "
        f"(CBV corrected for leakage). Region: {region_rule(result.parameters)}."
    )
    figure.text(
        0.635, y - 0.02, pages.wrap(about, 50), color=pages.FOREGROUND, fontsize=12, va="top"
    )
    given = _user_region_line(result)
    if given:
        figure.text(0.635, 0.2, pages.wrap(given, 50), color=USER_REGION_COLOUR, fontsize=13)
    notes = f"{profile_statement}\nBackground: mean of the pre-contrast images (HU 0-80)."
    if quality_banner:
        notes += f"\n{quality_banner}"
    figure.text(0.635, 0.08, pages.wrap(notes, 50), color="#c8c8c8", fontsize=12, va="bottom")
    return pages.to_rgb(figure)


def _user_region_line(result: PerfusionResult) -> str | None:
    """The region a person gave, as one line: how it was given, its tissue and means."""
    if result.user_region is None:
        return None
    statistics = user_region_statistics(result)
    head = f"Your region ({result.user_region.text}):"
    if statistics is None:
        return f"{head} no brain tissue in it."
    means = ", ".join(
        f"{name} {display(statistics.mean[name], DISPLAY_UNITS[name])}"
        for name in ("Ktrans", "CBV")
        if name in statistics.mean
    )
    return f"{head} {display(statistics.volume_ml, 'ml')}; means {means}."


def _draw_table(figure, statistics: RegionStatistics) -> float:  # type: ignore[no-untyped-def]
    """Each map's row (name, mean in the region, mean outside it, ratio of CBF and CBV) under a
    header; returns the height below the table."""
    columns = (0.635, 0.75, 0.86, 0.985)
    y = 0.78
    for x, text in zip(columns, ("map", "region", "outside", "ratio"), strict=True):
        figure.text(x, y, text, color="#b0b0b0", fontsize=13, ha="left" if x < 0.9 else "right")
    for name in statistics.mean:
        y -= 0.045
        unit = DISPLAY_UNITS[name]
        relative = statistics.relative(name)
        cells = (
            name,
            display(statistics.mean[name], unit, ""),
            display(statistics.outside_mean[name], unit, ""),
            display(relative, "ratio", "") if relative is not None else "",
        )
        for x, text in zip(columns, cells, strict=True):
            figure.text(
                x, y, text, color=pages.FOREGROUND, fontsize=15, ha="left" if x < 0.9 else "right"
            )
    figure.text(
        0.635,
        y - 0.04,
        "means; CBF and Ktrans in ml/100 g/min, CBV in ml/100 g,\n"
        "MTT in s; ratio = region / outside",
        color="#b0b0b0",
        fontsize=11,
        va="top",
    )
    return y - 0.1
