"""The hemispheric comparison (vasospasm profile) in sentences, for the SR and the pages."""

from __future__ import annotations

from collections.abc import Mapping

from ctp_node.perfusion.asymmetry import TIME_MAPS, HemisphericComparison, MapAsymmetry
from ctp_node.perfusion.result import DISPLAY_UNITS
from ctp_node.report.rounding import display


def asymmetry_statements(
    comparison: HemisphericComparison, parameters: Mapping[str, float]
) -> list[str]:
    """One sentence on how the hemispheres were found, one per map (both sides' means, the
    difference or ratio, and whether it is flagged against the thresholds in ``parameters``),
    and one naming the flagged maps."""
    line = comparison.midline
    margin = parameters.get("asymmetry_midline_margin_mm", 2.0)
    statements = [
        "Hemispheres: the tissue split at the mid-sagittal line that makes the pre-contrast "
        f"images most symmetric ({display(line.angle_deg, 'ratio', '')}° from the image columns, "
        f"{display(line.offset_mm, 'mm')} from the image centre); tissue within "
        f"{margin:g} mm of it belongs to neither side."
    ]
    statements += [
        map_asymmetry_sentence(item, comparison.sides, parameters)
        for item in comparison.maps.values()
    ]
    flagged = comparison.flagged
    statements.append(
        "Asymmetry: " + (", ".join(flagged) + " flagged." if flagged else "no map flagged.")
    )
    return statements


def map_asymmetry_sentence(
    item: MapAsymmetry, sides: tuple[str, str], parameters: Mapping[str, float]
) -> str:
    """``"MTT: left mean 7.1 s, right 5.1 s; right − left −2.0 s, flagged (more than 1.5 s)."``"""
    first, second = sides
    unit = DISPLAY_UNITS.get(item.name, "")
    means = (
        f"{item.name}: {first} mean {display(item.mean[first], unit)}, "
        f"{second} {display(item.mean[second], unit)}"
    )
    if item.name.lower() in TIME_MAPS:
        limit = parameters.get("asymmetry_time_difference_s", 1.5)
        measure = f"{second} − {first} {display(item.difference, 's')}"
        rule = f"more than {limit:g} s apart"
    else:
        limit = parameters.get("asymmetry_flow_ratio", 0.8)
        measure = f"{item.lower_side} / other {display(item.ratio, 'ratio', '')}"
        rule = f"ratio below {limit:g}"
    verdict = f"flagged ({rule})" if item.flagged else "not flagged"
    return f"{means}; {measure}, {verdict}."
