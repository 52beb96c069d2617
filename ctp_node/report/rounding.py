"""How precisely the outputs state a number: one rule for the pages, the SR and summary.png.

A value is rounded to the **resolution its unit supports** (:data:`RESOLUTION`), never to more
digits than the measurement carries. Volumes are counted in voxels of 0.001–0.015 ml, but the
lesion edges decide them to a few tenths of a millilitre, so 0.1 ml; times come from images
1–2 s apart, interpolated, so 0.1 s; percentages of a quality check 0.1 %; motion, measured by
registration to a fraction of a pixel, 0.01 mm; ratios 0.01; dose and exposure as the scanner
writes them (0.1 mGy, whole kV and mAs); counts are whole. A unit not listed keeps 3
significant digits.

On the pages a negative number carries the minus sign (U+2212) and the unit follows after a
space (``−0.8 %``, ``0.01 mm``); the SR keeps the rounded number and its UCUM unit.
"""

from __future__ import annotations

import math

#: Resolution of a value by unit (UCUM code or the unit as people write it).
RESOLUTION: dict[str, float] = {
    "ml": 0.1,
    "s": 0.1,
    "%": 0.1,
    "mm": 0.01,
    "ratio": 0.01,
    "{ratio}": 0.01,
    "1": 0.01,
    "mGy": 0.1,
    "kV": 1.0,
    "mA.s": 1.0,
    "mAs": 1.0,
    "{images}": 1.0,
    "images": 1.0,
    "[hnsf'U]": 1.0,
    "HU": 1.0,
    "a": 1.0,
    "years": 1.0,
}
#: Significant digits of a value whose unit is not in :data:`RESOLUTION`.
DEFAULT_SIGNIFICANT_DIGITS = 3
MINUS = "\u2212"


def rounded(value: float, unit: str) -> float:
    """``value`` rounded to the resolution of ``unit`` (see the module's rule)."""
    value = float(value)
    if not math.isfinite(value) or value == 0.0:
        return value
    step = RESOLUTION.get(unit)
    if step is None:
        digits = DEFAULT_SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(abs(value)))
        return round(value, digits)
    return round(round(value / step) * step, _decimals(step))


def display(value: float, unit: str = "", shown_unit: str | None = None) -> str:
    """``value`` rounded as :func:`rounded` and written for a page: ``"−0.8 %"``,
    ``"0.01 mm"``, ``"6 images"``; ``shown_unit`` replaces ``unit`` in the text."""
    number = rounded(value, unit)
    step = RESOLUTION.get(unit)
    if step is not None:
        text = f"{number:.{_decimals(step)}f}"
    else:
        text = f"{number:.{DEFAULT_SIGNIFICANT_DIGITS}g}"
    if float(text) == 0.0:
        text = text.lstrip("-")
    text = text.replace("-", MINUS)
    shown = unit if shown_unit is None else shown_unit
    return f"{text} {shown}" if shown else text


def _decimals(step: float) -> int:
    return max(0, -math.floor(math.log10(step) + 1e-9))
