"""What the engine hands back: maps, masks, input curves and stroke volumes.

Maps are float32 arrays ``(z, y, x)`` on the acquisition's grid; voxels outside the tissue mask
hold 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ctp_node.perfusion.asymmetry import HemisphericComparison

#: The five maps of the output contract, in report order, with their UCUM units.
MAP_UNITS: dict[str, str] = {
    "CBF": "ml/[100]g/min",
    "CBV": "ml/[100]g",
    "MTT": "s",
    "TTP": "s",
    "Tmax": "s",
}

#: Every map's unit as people write it (pages, tables); the DICOM objects carry the UCUM codes
#: of :data:`MAP_UNITS`. rCBF is CBF relative to the normal tissue's CBF: a ratio (1 = normal).
DISPLAY_UNITS: dict[str, str] = {
    "CBF": "ml/100 g/min",
    "CBV": "ml/100 g",
    "MTT": "s",
    "TTP": "s",
    "Tmax": "s",
    "delay": "s",
    "rCBF": "ratio",
    "passage_seen": "fraction",
    "Ktrans": "ml/100 g/min",
}


@dataclass(frozen=True)
class InputCurve:
    """An arterial (AIF) or venous (VOF) curve and where it was taken.

    Attributes
    ----------
    kind : ``"AIF"`` or ``"VOF"``.
    voxels_zyx : int array ``(n, 3)`` of the voxels averaged into the curve.
    times_s : seconds from the first image, shape ``(t,)``.
    hu : mean HU of the voxels at each time, shape ``(t,)`` (as measured).
    concentration_hu : baseline-subtracted curve actually used, in HU, shape ``(t,)``
        (for the AIF after any partial-volume scaling).
    baseline_frames : number of frames before bolus arrival at this location.
    arrival_s : bolus arrival time in seconds.
    selection : ``"automatic"`` or ``"manual"``.
    """

    kind: str
    voxels_zyx: np.ndarray
    times_s: np.ndarray
    hu: np.ndarray
    concentration_hu: np.ndarray
    baseline_frames: int
    arrival_s: float
    selection: str = "automatic"

    @property
    def centre_zyx(self) -> tuple[int, int, int]:
        """The voxel that stands for the curve's location: on the slice holding most of its
        voxels, the one nearest their mean. The voxels may lie in two vessels or both
        hemispheres, where their rounded mean is no voxel of the curve, even on no slice of
        it. The quality page's crosshair, ``results.json``, the SR and the console name this
        voxel."""
        voxels = np.asarray(self.voxels_zyx)
        slices, counts = np.unique(voxels[:, 0], return_counts=True)
        on_slice = voxels[voxels[:, 0] == slices[np.argmax(counts)]]
        distance = np.abs(on_slice - voxels.mean(axis=0)).sum(axis=1)
        z, y, x = on_slice[np.argmin(distance)]
        return int(z), int(y), int(x)


#: The tumour profile's permeability map (``PerfusionResult.maps["Ktrans"]``), UCUM unit: the
#: volume transfer constant per 100 g of tissue, as CT perfusion reports it.
PERMEABILITY_UNITS: dict[str, str] = {"Ktrans": "ml/[100]g/min"}


@dataclass(frozen=True)
class Permeability:
    """The blood-brain barrier's permeability, as the tumour profile measures it
    (:mod:`ctp_node.perfusion.permeability.stage`); K^trans itself is ``maps["Ktrans"]``.

    Attributes
    ----------
    enhancing_mask : bool ``(z, y, x)``: the tissue whose K^trans is significant (the
        enhancing region the reports give each map's statistics in).
    enhancing_ml : its volume, mL.
    model : the model's name, as the reports state it.
    first_pass_end_s : the earliest time the fit used, s from the first image.
    late_frames : how many images after the first pass the fit used.
    """

    enhancing_mask: np.ndarray
    enhancing_ml: float
    model: str
    first_pass_end_s: float
    late_frames: int


@dataclass(frozen=True)
class RegionOfInterest:
    """A region a person gave, for each map's statistics in it.

    Attributes
    ----------
    mask : bool ``(z, y, x)``, within the tissue mask.
    description : the region in words, for the reports.
    text : how it was given (``"Z,Y,X,R"``).
    volume_ml : the tissue volume in it, mL.
    """

    mask: np.ndarray
    description: str
    text: str
    volume_ml: float


@dataclass(frozen=True)
class StrokeVolumes:
    """Acute-stroke volumes in mL (ratios unitless; ``None`` where undefined, e.g. core = 0)."""

    core_ml: float
    tmax6_ml: float
    tmax10_ml: float
    mismatch_ml: float
    mismatch_ratio: float | None
    hypoperfusion_intensity_ratio: float | None
    target_mismatch: bool


@dataclass(frozen=True)
class PerfusionResult:
    """Everything the engine computed for one acquisition.

    Attributes
    ----------
    maps : ``{"CBF", "CBV", "MTT", "TTP", "Tmax"}`` → float32 ``(z, y, x)`` in the units of
        :data:`MAP_UNITS`; further keys (e.g. ``"delay"``, ``"rCBF"``) may be present.
    tissue_mask : bool ``(z, y, x)``, brain parenchyma used for maps and volumes
        (skull, air, CSF and large vessels excluded).
    core_mask, tmax6_mask, tmax10_mask : bool ``(z, y, x)``.
    aif, vof : the input curves used.
    volumes : the stroke volumes.
    normal_cbf : the reference CBF (ml/100g/min) that rCBF is relative to.
    parameters : the constants and thresholds used, by name (for the report).
    algorithm : short name and version of the method (for the report).
    warnings : findings the engine wants the report to state.
    motion_mm : ``(t,)`` mean in-plane head displacement of each frame from the reference
        position, mm (``None`` when motion was not measured).
    motion_corrected_frames : indices of the frames registered back to the reference.
    motion_excluded_frames : indices of the frames that could not be registered (replaced by
        interpolation in time before deconvolution).
    unsupported : map name → bool ``(z, y, x)``: the tissue voxels whose value the acquisition
        cannot support (e.g. CBV and MTT where most of the bolus passage came after the last
        image; :func:`ctp_node.perfusion.maps.stage.unsupported_values`). ``maps`` keep the
        engine's estimate there; the outputs show :meth:`reported`.
    asymmetry : the hemispheric comparison of the maps (with ``hemispheric_asymmetry``; None
        without it, or when a hemisphere held no tissue: then a warning says so).
    permeability : the leak across the blood-brain barrier (with ``permeability``; None
        without it, or when the acquisition is too short to measure it: then a warning says
        so). With it, CBF, CBV and MTT are those of the curves with the leak removed.
    user_region : a region a person gave (``process --region``), whose statistics the
        outputs report; None without one.
    """

    maps: dict[str, np.ndarray]
    tissue_mask: np.ndarray
    core_mask: np.ndarray
    tmax6_mask: np.ndarray
    tmax10_mask: np.ndarray
    aif: InputCurve
    vof: InputCurve | None
    volumes: StrokeVolumes
    normal_cbf: float
    parameters: dict[str, float] = field(default_factory=dict)
    algorithm: str = ""
    warnings: tuple[str, ...] = ()
    motion_mm: np.ndarray | None = None
    motion_corrected_frames: tuple[int, ...] = ()
    motion_excluded_frames: tuple[int, ...] = ()
    unsupported: dict[str, np.ndarray] = field(default_factory=dict)
    asymmetry: HemisphericComparison | None = None
    permeability: Permeability | None = None
    user_region: RegionOfInterest | None = None

    def reported(self, name: str) -> np.ndarray:
        """Map ``name`` as the outputs report it: NaN (IEEE 754 not-a-number, the documented
        sentinel of the Parametric Maps' Float Pixel Data) where :attr:`unsupported` says the
        acquisition cannot support the value, else :attr:`maps`' value."""
        return without_unsupported(self.maps[name], self.unsupported.get(name))


def without_unsupported(values: np.ndarray, unsupported: np.ndarray | None) -> np.ndarray:
    """``values`` with NaN where ``unsupported`` (bool, same shape; None: nowhere) is set."""
    if unsupported is None or not unsupported.any():
        return values
    return np.where(unsupported, np.float32(np.nan), values).astype(values.dtype)
