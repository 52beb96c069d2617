"""The perfusion engine: numpy and scipy only. Axis order ``(t, z, y, x)``."""

from ctp_node.perfusion.acquisition import Acquisition, AcquisitionFacts
from ctp_node.perfusion.result import MAP_UNITS, InputCurve, PerfusionResult, StrokeVolumes

__all__ = [
    "MAP_UNITS",
    "Acquisition",
    "AcquisitionFacts",
    "InputCurve",
    "PerfusionResult",
    "StrokeVolumes",
]
