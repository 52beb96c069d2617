"""Acquisition quality control (ACR–ASNR–SPR CT perfusion practice parameter): numpy only.

``limits.py``: :class:`QualityLimits` (configuration), :class:`QualityFinding`, the check names
and results. ``headers.py``: the checks from header facts. ``checks.py``:
:func:`assess_acquisition`, every check, from the headers and from the data and the engine's
result. The engine does not import this package; :mod:`ctp_node.pipeline` runs the checks after
the engine.
"""

from ctp_node.qc.checks import assess_acquisition, full_width_half_maximum_s, tissue_arrival
from ctp_node.qc.limits import (
    CHECK_NAMES,
    NOT_RECORDED,
    PASS,
    RESULTS,
    WARN,
    QualityFinding,
    QualityLimits,
    warned_checks,
)

__all__ = [
    "CHECK_NAMES",
    "NOT_RECORDED",
    "PASS",
    "RESULTS",
    "WARN",
    "QualityFinding",
    "QualityLimits",
    "assess_acquisition",
    "full_width_half_maximum_s",
    "tissue_arrival",
    "warned_checks",
]
