"""The quality page: the arterial and venous curves, where they were taken, the acquisition
facts and the engine's warnings — what the practice parameter asks to archive with the maps.

Returns an RGB uint8 array ``(PAGE_HEIGHT, PAGE_WIDTH, 3)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pydicom

from ctp_node.perfusion.acquisition import Acquisition, AcquisitionFacts
from ctp_node.perfusion.result import InputCurve, PerfusionResult
from ctp_node.qc import QualityFinding
from ctp_node.qc.limits import BASELINE
from ctp_node.report import pages
from ctp_node.report.rounding import display
from ctp_node.report.summary_pages import normal_reference_statement

AIF_COLOUR = "#ff453a"
VOF_COLOUR = "#40a0ff"
#: Window of the images the curves' locations are shown on (at the arterial peak), HU.
VESSEL_WINDOW_HU = (0.0, 300.0)
#: UCUM units of the quality findings as people write them.
DISPLAY_UNITS = {"mA.s": "mAs", "{images}": "images", "a": "years", "[hnsf'U]": "HU"}
#: How each result is marked on the page.
RESULT_MARKS = {"pass": "ok  ", "warn": "WARN", "not recorded": "n/r "}
#: What a check's value counts, where another number on the page could be taken for it: the
#: baseline check counts the images before contrast reaches the *tissue*, the curve chart
#: shades the images before the *arterial* arrival (the AIF's baseline), which is earlier.
QUALIFIERS = {BASELINE: " before tissue arrival"}


def quality_lines(findings: Sequence[QualityFinding]) -> list[tuple[str, bool]]:
    """One line per check, ``("WARN  Tube voltage: 120 kV (70-90 kV)", warned)``."""
    lines = []
    for finding in findings:
        if finding.value is None:
            value = "not recorded" if finding.result == "not recorded" else "-"
            if finding.name == "Motion" and finding.result == "not recorded":
                value = "not assessed"
        else:
            shown = DISPLAY_UNITS.get(finding.unit, finding.unit)
            value = display(finding.value, finding.unit, shown) + QUALIFIERS.get(finding.name, "")
        lines.append(
            (
                f"{RESULT_MARKS[finding.result]}  {finding.name}: {value}",
                finding.result == "warn",
            )
        )
    return lines


def quality_banner(findings: Sequence[QualityFinding]) -> str | None:
    """A short banner naming the checks that warned; ``None`` when none did."""
    warned = [f.name for f in findings if f.result == "warn"]
    if not warned:
        return None
    return (
        f"Acquisition quality: {len(warned)} warning{'s' if len(warned) > 1 else ''} "
        f"({', '.join(warned)}); see the quality page."
    )


def facts_lines(facts: AcquisitionFacts | None) -> list[str]:
    """The acquisition facts as sentences; what the headers do not record is said so."""
    facts = facts or AcquisitionFacts()

    def value(number: float | None, unit: str) -> str:
        return "not recorded" if number is None else f"{number:g} {unit}"

    return [
        f"Tube voltage: {value(facts.kvp, 'kV')}",
        f"Exposure: {value(facts.exposure_mas, 'mAs')}",
        f"CTDIvol: {value(facts.ctdivol_mgy, 'mGy')}",
        f"Contrast agent: {facts.contrast_agent or 'not recorded'}",
        f"Contrast volume: {value(facts.contrast_volume_ml, 'ml')}",
        f"Injection rate: {value(facts.contrast_rate_ml_s, 'ml/s')}",
        f"Scanner: {' '.join(filter(None, [facts.manufacturer, facts.model])) or 'not recorded'}",
    ]


def render_quality_page(
    result: PerfusionResult,
    acquisition: Acquisition,
    source: pydicom.Dataset,
    *,
    footer: str,
    research: bool,
    notes: Sequence[str] = (),
    quality: Sequence[QualityFinding] = (),
    version: str = "",
) -> np.ndarray:
    """AIF and VOF curves against time (baseline shaded, arrival marked), the slices they were
    taken from with a crosshair, acquisition facts (or, when ``quality`` is given, the practice
    parameter checks with warnings highlighted), warnings and notes."""
    figure = pages.new_page()
    pages.draw_banner(
        figure, source, "Quality: input curves and acquisition", footer, research, version
    )
    curves = [c for c in (result.aif, result.vof) if c is not None]

    plot = figure.add_axes((0.075, 0.5, 0.54, 0.36))
    _plot_curves(plot, curves)

    for index, curve in enumerate(curves):
        axis = figure.add_axes((0.65, 0.49 - index * 0.43, 0.34, 0.37))
        _show_location(axis, curve, acquisition)

    n_t, n_z = acquisition.hu.shape[:2]
    duration_s = float(acquisition.times_s[-1] - acquisition.times_s[0])
    left = [
        "Acquisition",
        f"{n_t} time points over {duration_s:.1f} s, {n_z} slices of "
        f"{acquisition.slice_spacing_mm:g} mm",
        *facts_lines(acquisition.facts),
    ]
    if quality:
        _draw_quality(figure, acquisition, quality, f"{left[1]}")
    else:
        left = [pages.wrap(line, 36) for line in left]
        figure.text(
            0.02,
            0.4,
            "\n".join(left),
            color=pages.FOREGROUND,
            fontsize=13,
            va="top",
            linespacing=1.5,
        )
    findings = list(result.warnings) + list(notes)
    right = ["Warnings and notes"] + (
        [f"- {pages.wrap(line, 40)}" for line in findings] or ["- none"]
    )
    right += [
        "",
        "Method",
        pages.wrap(
            f"{result.algorithm or 'not stated'}; AIF {result.aif.selection}, "
            f"VOF {result.vof.selection if result.vof else 'not used'}; "
            + normal_reference_statement(result),
            40,
        ),
    ]
    colour = pages.ACCENT if findings else pages.FOREGROUND
    figure.text(0.34, 0.4, "\n".join(right), color=colour, fontsize=13, va="top", linespacing=1.4)
    return pages.to_rgb(figure)


def _draw_quality(  # type: ignore[no-untyped-def]
    figure, acquisition: Acquisition, quality: Sequence[QualityFinding], summary: str
) -> None:
    """The checks one per line (warnings in the accent colour), then agent and scanner."""
    facts = acquisition.facts
    figure.text(
        0.02,
        0.4,
        "Acquisition quality (ACR-ASNR-SPR)",
        color=pages.FOREGROUND,
        fontsize=13,
        va="top",
    )
    y = 0.37
    for line, warned in quality_lines(quality):
        figure.text(
            0.02,
            y,
            line,
            color=pages.ACCENT if warned else pages.FOREGROUND,
            fontsize=10.5,
            va="top",
            family="monospace",
            weight="bold" if warned else "normal",
        )
        y -= 0.021
    extra = [
        summary,
        f"Contrast agent: {facts.contrast_agent or 'not recorded'}",
        f"Scanner: {' '.join(filter(None, [facts.manufacturer, facts.model])) or 'not recorded'}",
    ]
    figure.text(
        0.02,
        y - 0.005,
        "\n".join(pages.wrap(line, 48) for line in extra),
        color="#c8c8c8",
        fontsize=10,
        va="top",
        linespacing=1.3,
    )


def _plot_curves(axis, curves: list[InputCurve]) -> None:  # type: ignore[no-untyped-def]
    axis.set_facecolor("#111111")
    for curve in curves:
        colour = AIF_COLOUR if curve.kind == "AIF" else VOF_COLOUR
        times = np.asarray(curve.times_s, float)
        axis.plot(
            times,
            curve.concentration_hu,
            color=colour,
            linewidth=2.5,
            label=f"{curve.kind} ({len(curve.voxels_zyx)} voxels, {curve.selection})",
        )
        axis.axvline(curve.arrival_s, color=colour, linestyle="--", linewidth=1.5)
        axis.text(
            curve.arrival_s,
            0.97 if curve.kind == "AIF" else 0.9,
            f" {curve.kind} arrival {curve.arrival_s:.1f} s",
            color=colour,
            fontsize=11,
            transform=axis.get_xaxis_transform(),
            ha="left",
            va="top",
        )
    aif = curves[0]
    frames = max(1, min(int(aif.baseline_frames), len(aif.times_s)))
    axis.axvspan(
        float(aif.times_s[0]),
        float(aif.times_s[frames - 1]),
        color="#777777",
        alpha=0.35,
        label=f"AIF baseline: {frames} image{'s' if frames > 1 else ''} before arterial arrival",
    )
    axis.set_xlabel("time from first image (s)", color=pages.FOREGROUND, fontsize=13)
    axis.set_ylabel("enhancement above baseline (HU)", color=pages.FOREGROUND, fontsize=13)
    axis.tick_params(colors=pages.FOREGROUND, labelsize=12)
    for spine in axis.spines.values():
        spine.set_color("#909090")
    axis.grid(color="#444444")
    axis.legend(facecolor="#222222", labelcolor=pages.FOREGROUND, fontsize=11, loc="center right")


def _show_location(axis, curve: InputCurve, acquisition: Acquisition) -> None:  # type: ignore[no-untyped-def]
    """The slice holding most of the curve's voxels, at the curve's peak, each voxel circled and
    a crosshair on the voxel that stands for them (``InputCurve.centre_zyx``)."""
    voxels = np.asarray(curve.voxels_zyx)
    z, y, x = curve.centre_zyx
    on_slice = voxels[voxels[:, 0] == z]
    peak_s = float(np.asarray(curve.times_s)[int(np.argmax(curve.concentration_hu))])
    frame = int(np.argmin(np.abs(acquisition.times_s - peak_s)))
    dy, dx = acquisition.pixel_spacing_mm
    rows, columns = acquisition.hu.shape[2:]
    axis.imshow(
        acquisition.hu[frame, z],
        cmap="gray",
        vmin=VESSEL_WINDOW_HU[0],
        vmax=VESSEL_WINDOW_HU[1],
        aspect=dy / dx,
    )
    colour = AIF_COLOUR if curve.kind == "AIF" else VOF_COLOUR
    axis.scatter(
        on_slice[:, 2], on_slice[:, 1], s=90, facecolors="none", edgecolors=colour, linewidths=1.5
    )
    axis.axhline(y, color=colour, linewidth=0.8, alpha=0.7)
    axis.axvline(x, color=colour, linewidth=0.8, alpha=0.7)
    axis.set_xlim(-0.5, columns - 0.5)
    axis.set_ylim(rows - 0.5, -0.5)
    axis.set_axis_off()
    axis.set_title(
        f"{curve.kind}: (slice, row, column) ({z}, {y}, {x}), 0-based "
        f"({len(on_slice)} of {len(voxels)} voxels circled)\nimage at {peak_s:.0f} s (curve peak)",
        color=colour,
        fontsize=11,
        y=pages.TITLE_Y,
    )
    pages.mark_sides(axis.figure, acquisition.orientation, axis.transAxes)
