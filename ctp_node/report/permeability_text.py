"""The tumour profile's permeability findings in sentences, for the SR and the pages."""

from __future__ import annotations

from collections.abc import Mapping

from ctp_node.perfusion.permeability.region import RegionStatistics
from ctp_node.perfusion.result import DISPLAY_UNITS, Permeability, RegionOfInterest
from ctp_node.report.rounding import display


def region_rule(parameters: Mapping[str, float]) -> str:
    """What makes a voxel part of the enhancing region, as a sentence fragment."""
    return (
        f"tissue with K^trans at least {parameters.get('enhancing_ktrans_min', 1.0):g} "
        f"ml/100 g/min and {parameters.get('enhancing_significance', 3.0):g} standard errors "
        f"above 0, in groups of at least {parameters.get('enhancing_min_volume_ml', 0.1):g} ml"
    )


def permeability_statements(
    permeability: Permeability,
    statistics: RegionStatistics | None,
    parameters: Mapping[str, float],
) -> list[str]:
    """How the permeability was measured, the enhancing region, and each map's mean there
    beside the tissue outside it."""
    statements = [
        f"Permeability: {permeability.model}, fitted on the {permeability.late_frames} images "
        f"from {display(permeability.first_pass_end_s, 's')} (after the bolus's first pass); "
        "the fitted leak is removed from the curves before deconvolution where it is clearly "
        "there (the 3 x 3 mean of K^trans at least 2 standard errors above 0), so CBF, CBV and "
        "MTT are those of the blood in the vessels (CBV corrected for leakage). K^trans is the "
        "plasma cleared per 100 g of tissue per minute: the arterial blood's curve over "
        f"1 - {parameters.get('large_vessel_hematocrit', 0.45):g} (haematocrit), brain density "
        f"{parameters.get('brain_density_g_ml', 1.04):g} g/ml."
    ]
    rule = region_rule(parameters)
    if statistics is None:
        statements.append(f"Enhancing region ({rule}): none found.")
        return statements
    statements.append(f"Enhancing region ({rule}): {display(statistics.volume_ml, 'ml')}.")
    return statements + region_sentences("the enhancing region", statistics)


def user_region_statements(
    region: RegionOfInterest, statistics: RegionStatistics | None
) -> list[str]:
    """The region a person gave, its tissue volume and each map's mean there."""
    head = f"Region given by the user: {region.description}"
    if statistics is None:
        return [f"{head}: it holds no brain tissue."]
    return [
        f"{head}: {display(statistics.volume_ml, 'ml')} of tissue.",
        *region_sentences("the region given by the user", statistics),
    ]


def region_sentences(label: str, statistics: RegionStatistics) -> list[str]:
    """Per map: its mean and median in the region, the mean of the tissue outside it and (CBF,
    CBV) their ratio."""
    sentences = []
    for name in statistics.mean:
        unit = DISPLAY_UNITS[name]
        sentence = (
            f"{name} in {label}: mean {display(statistics.mean[name], unit)}, "
            f"median {display(statistics.median[name], unit)}; tissue outside it mean "
            f"{display(statistics.outside_mean[name], unit)}"
        )
        relative = statistics.relative(name)
        if relative is not None:
            sentence += f" (ratio {display(relative, 'ratio', '')})"
        sentences.append(sentence + ".")
    return sentences
