"""A one-page PNG of the results for ``ctp-node process``: maps, lesion overlay, input curves."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on a server
import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ctp_node.file_modes import create_file
from ctp_node.perfusion import MAP_UNITS, Acquisition, PerfusionResult
from ctp_node.perfusion.asymmetry import TIME_MAPS
from ctp_node.report.pages import TITLE_Y, UNSUPPORTED_GREY
from ctp_node.report.parametric_map import map_window

#: The maps' colours, NaN (no supported value) grey as on the pages.
_COLOURS = colormaps["jet"].with_extremes(bad=UNSUPPORTED_GREY)


def write_summary_png(
    result: PerfusionResult, acquisition: Acquisition, summary: dict[str, Any], path: Path
) -> None:
    """Write the summary page: the five maps and the core/penumbra overlay of the slice with the
    largest hypoperfusion, and the AIF/VOF curves."""
    z = _slice_of_interest(result)
    # A figure of its own (pyplot keeps a registry of figures) with the spacing fixed here:
    # tight_layout measures every label and costs as much as drawing the page.
    figure = Figure(figsize=(16, 8.5), dpi=80)
    FigureCanvasAgg(figure)
    figure.patch.set_facecolor("black")
    axes = figure.subplots(2, 4)
    figure.subplots_adjust(left=0.01, right=0.955, bottom=0.06, top=0.95, wspace=0.22, hspace=0.2)
    for axis, name in zip(axes.flat[:5], MAP_UNITS, strict=True):
        low, high = map_window(name, result)  # as the pages and the Parametric Maps
        shown = axis.imshow(result.reported(name)[z], cmap=_COLOURS, vmin=low, vmax=high)
        axis.set_title(f"{name} ({MAP_UNITS[name]})", color="white", y=TITLE_Y)
        bar = figure.colorbar(shown, ax=axis, fraction=0.046)
        bar.ax.tick_params(colors="white")
    baseline = acquisition.hu[0, z]
    overlay = axes.flat[5]
    overlay.imshow(baseline, cmap="gray", vmin=0, vmax=80)
    if summary.get("volumes") is not None:  # a profile with stroke volumes
        _draw_lesions(overlay, result, z)
    else:
        overlay.set_title("pre-contrast", color="white", y=TITLE_Y)
    for axis in axes.flat[:6]:
        axis.axis("off")
    curves = axes.flat[6]
    curves.plot(result.aif.times_s, result.aif.concentration_hu, "r-", label="AIF")
    if result.vof is not None:
        curves.plot(result.vof.times_s, result.vof.concentration_hu, "b-", label="VOF")
    curves.set_xlabel("time (s)")
    curves.set_ylabel("enhancement (HU)")
    curves.legend()
    curves.set_title("input curves", color="white", y=TITLE_Y)
    text = axes.flat[7]
    text.axis("off")
    lines = [
        *_result_lines(summary),
        "",
        f"slice shown: {z + 1} of {acquisition.hu.shape[1]}",
        result.algorithm,
    ]
    text.text(0.0, 1.0, "\n".join(lines), va="top", color="white", family="monospace")
    # Owner-only from its creation (it shows patient images). zlib's fastest level: the file
    # is a quarter larger, written several times faster.
    with open(create_file(path, os.O_WRONLY | os.O_TRUNC), "wb") as file:
        figure.savefig(
            file, format="png", facecolor=figure.get_facecolor(), pil_kwargs={"compress_level": 1}
        )


def _draw_lesions(axis, result: PerfusionResult, z: int) -> None:  # type: ignore[no-untyped-def]
    """The core and Tmax > 6 s regions of slice ``z`` over the background in ``axis``."""
    for mask, colours, alpha in (
        (result.tmax6_mask[z], "autumn_r", 0.5),
        (result.core_mask[z], "autumn", 0.7),
    ):
        axis.imshow(np.ma.masked_where(~mask, mask), cmap=colours, alpha=alpha, vmin=0, vmax=1)
    axis.set_title("core (red), Tmax>6 s (yellow)", color="white", y=TITLE_Y)


def _result_lines(summary: dict[str, Any]) -> list[str]:
    """The stroke volumes, or (a profile without them) the hemispheric comparison's verdict
    per map or the enhancing region's means, as ``results.json`` holds them."""
    volumes = summary.get("volumes")
    permeability = summary.get("permeability")
    if volumes is None and permeability is not None:
        lines = [f"profile: {(summary.get('profile') or {}).get('name', '-')}"]
        region = permeability["enhancing_region"]
        if region is None:
            return [*lines, "enhancing region: none found"]
        lines.append(f"enhancing region: {region['volume_ml']} ml")
        for name, item in region["maps"].items():
            ratio = f" (x{item['ratio']})" if item["ratio"] is not None else ""
            lines.append(f"{name}: mean {item['mean']}{ratio}")
        return lines
    if volumes is None:
        asymmetry = summary.get("asymmetry") or {"maps": {}, "sides": ["", ""]}
        first, second = asymmetry["sides"]
        lines = [f"profile: {(summary.get('profile') or {}).get('name', '-')}"]
        for name, item in asymmetry["maps"].items():
            change = (
                f"{second}-{first} {item['difference']}"
                if name.lower() in TIME_MAPS
                else f"ratio {item['ratio']}"
            )
            lines.append(f"{name}: {change}{' FLAGGED' if item['flagged'] else ''}")
        return lines
    return [
        f"core (rCBF<30%): {volumes['core_ml']} ml",
        f"Tmax>6s: {volumes['tmax6_ml']} ml",
        f"Tmax>10s: {volumes['tmax10_ml']} ml",
        f"mismatch: {volumes['mismatch_ml']} ml",
        f"mismatch ratio: {volumes['mismatch_ratio']}",
        f"HIR: {volumes['hypoperfusion_intensity_ratio']}",
        f"target mismatch (DEFUSE 3): {'yes' if volumes['target_mismatch'] else 'no'}",
    ]


def _slice_of_interest(result: PerfusionResult) -> int:
    per_slice = result.tmax6_mask.sum(axis=(1, 2))
    if per_slice.max() > 0:
        return int(per_slice.argmax())
    return int(result.tissue_mask.sum(axis=(1, 2)).argmax())
