"""Why a perfusion job cannot produce maps.

The pipeline catches :class:`PerfusionError` and records ``str(err)`` in the job and the report,
so every message is a sentence a radiologist or technologist can act on.
"""

from __future__ import annotations


class PerfusionError(Exception):
    """The acquisition cannot be turned into perfusion maps."""


class AcquisitionTooShortError(PerfusionError):
    """Too few images, too short a time span, or the bolus is not captured."""


class NoBaselineError(PerfusionError):
    """Contrast is already present in the first image: no pre-contrast baseline."""


class NoContrastError(PerfusionError):
    """No contrast enhancement is visible in the brain during the acquisition."""


class NoArterialInputError(PerfusionError):
    """No voxel behaves like an artery, so no arterial input function can be measured."""


class NoBrainTissueError(PerfusionError):
    """No voxel has the attenuation of brain tissue (wrong series or field of view)."""


class LatePhaseTooShortError(AcquisitionTooShortError):
    """Too few images after the first pass of the bolus for a permeability (Patlak) fit."""
