"""The perfusion engine: numpy and scipy only. Axis order ``(t, z, y, x)``."""

from ctp_node.perfusion.acquisition import Acquisition, AcquisitionFacts
from ctp_node.perfusion.engine import ALGORITHM, compute_perfusion
from ctp_node.perfusion.errors import (
    AcquisitionTooShortError,
    NoArterialInputError,
    NoBaselineError,
    NoBrainTissueError,
    NoContrastError,
    PerfusionError,
)
from ctp_node.perfusion.parameters import PerfusionParameters
from ctp_node.perfusion.result import MAP_UNITS, InputCurve, PerfusionResult, StrokeVolumes

__all__ = [
    "ALGORITHM",
    "MAP_UNITS",
    "Acquisition",
    "AcquisitionFacts",
    "AcquisitionTooShortError",
    "InputCurve",
    "NoArterialInputError",
    "NoBaselineError",
    "NoBrainTissueError",
    "NoContrastError",
    "PerfusionError",
    "PerfusionParameters",
    "PerfusionResult",
    "StrokeVolumes",
    "compute_perfusion",
]
