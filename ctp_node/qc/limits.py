"""Quality-control vocabulary: check names, results, limits (with the practice parameter's
defaults) and findings. See :mod:`ctp_node.qc`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

PASS = "pass"
WARN = "warn"
NOT_RECORDED = "not recorded"
RESULTS = (PASS, WARN, NOT_RECORDED)

#: The checks, in report order (the names are part of the output contract).
DURATION = "Acquisition duration"
BASELINE = "Baseline images"
WASHOUT = "Venous washout"
SAMPLING = "Temporal sampling"
TUBE_VOLTAGE = "Tube voltage"
TUBE_CURRENT_TIME = "Tube current-time product"
CTDIVOL = "CTDIvol"
CONTRAST_VOLUME = "Contrast volume"
INJECTION_RATE = "Injection rate"
PATIENT_AGE = "Patient age"
MOTION = "Motion"
ARTERIAL_INPUT = "Arterial input"
COVERAGE = "Coverage"
CHECK_NAMES = (
    DURATION,
    BASELINE,
    WASHOUT,
    SAMPLING,
    TUBE_VOLTAGE,
    TUBE_CURRENT_TIME,
    CTDIVOL,
    CONTRAST_VOLUME,
    INJECTION_RATE,
    PATIENT_AGE,
    MOTION,
    ARTERIAL_INPUT,
    COVERAGE,
)

#: Enhancement of the mean tissue curve, as a fraction of its peak, that counts as arrival.
_ARRIVAL_FRACTION = 0.1
#: Smallest rise of the mean tissue curve in HU for an arrival to be measurable.
_MIN_TISSUE_RISE_HU = 1.5
#: Most tissue voxels averaged into the tissue curve (evenly thinned beyond).
_MAX_TISSUE_VOXELS = 100_000


@dataclass(frozen=True)
class QualityLimits:
    """The limits of the checks, with the practice parameter's values as defaults.

    Attributes
    ----------
    duration_min_s, duration_max_s : acquisition length, s (IV.C: 50–70 s).
    permeability_duration_min_s, permeability_duration_max_s : the acquisition length a
        profile that measures permeability (``tumour``) expects instead, s: Patlak analysis
        needs the images after the first pass, and tumour protocols acquire 90–150 s (with
        sparser images after the first 40–50 s).
    baseline_images_min : images before contrast reaches the tissue (IV.C: at least 2).
    sampling_interval_max_s : longest interval between images during the first pass, s.
    venous_end_max_percent : the venous curve must fall back to at most this percentage of its
        peak before the last image, else the washout counts as truncated.
    kvp_min, kvp_max : tube voltage, kV (IV.C: 70–90 kVp).
    mas_min, mas_max : tube current-time product, mAs (IV.C: 100–200 mAs).
    ctdivol_alert_mgy : CTDIvol alert level, mGy (VII: 1 Gy; an alert for the physicist's
        review, not a limit).
    contrast_volume_min_ml : contrast volume in adults, mL (IV.C: at least 40 mL).
    injection_rate_min_ml_s : injection rate in adults, mL/s (IV.C: at least 4 mL/s).
    adult_age_years : age from which a patient is an adult, years (under it: the paediatric
        context, a higher threshold for CT perfusion; consider MRI).
    motion_limit_mm : largest head displacement accepted, mm.
    aif_peak_min_hu : smallest plausible peak enhancement of the arterial input, HU.
    aif_fwhm_min_s, aif_fwhm_max_s : plausible full width at half maximum of the arterial
        first pass, s.
    aif_end_max_percent : the arterial curve must fall back to at most this percentage of its
        peak before the last image, else it counts as truncated.
    coverage_min_mm : craniocaudal coverage below which the Coverage check warns, mm
        (0 = report the coverage only).
    """

    duration_min_s: float = 50.0
    duration_max_s: float = 70.0
    permeability_duration_min_s: float = 90.0
    permeability_duration_max_s: float = 150.0
    baseline_images_min: int = 2
    sampling_interval_max_s: float = 2.0
    venous_end_max_percent: float = 30.0
    kvp_min: float = 70.0
    kvp_max: float = 90.0
    mas_min: float = 100.0
    mas_max: float = 200.0
    ctdivol_alert_mgy: float = 1000.0
    contrast_volume_min_ml: float = 40.0
    injection_rate_min_ml_s: float = 4.0
    adult_age_years: float = 18.0
    motion_limit_mm: float = 3.0
    aif_peak_min_hu: float = 100.0
    aif_fwhm_min_s: float = 2.0
    aif_fwhm_max_s: float = 20.0
    aif_end_max_percent: float = 50.0
    coverage_min_mm: float = 0.0

    def for_permeability(self) -> QualityLimits:
        """These limits with the acquisition length a permeability measurement expects."""
        return replace(
            self,
            duration_min_s=self.permeability_duration_min_s,
            duration_max_s=self.permeability_duration_max_s,
        )


@dataclass(frozen=True)
class QualityFinding:
    """The outcome of one check.

    Attributes
    ----------
    name : the check's name (one of :data:`CHECK_NAMES`).
    result : ``"pass"``, ``"warn"`` or ``"not recorded"``.
    value : the measured value in ``unit``; ``None`` when not measured or not recorded.
    unit : UCUM unit of ``value`` (e.g. ``"s"``, ``"kV"``, ``"mA.s"``, ``"{images}"``).
    limit : the limit applied, as people write it (ASCII, e.g. ``"50-70 s"``).
    section : section of the practice parameter (e.g. ``"IV.C"``, ``"VII"``).
    detail : one sentence a reader understands without the other fields.
    """

    name: str
    result: str
    value: float | None
    unit: str
    limit: str
    section: str
    detail: str

    def __post_init__(self) -> None:
        if self.result not in RESULTS:
            raise ValueError(f"result must be one of {RESULTS}; got {self.result!r}")

    @property
    def warned(self) -> bool:
        return self.result == WARN

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (``results.json``)."""
        values = asdict(self)
        if self.value is not None:
            values["value"] = round(float(self.value), 3)
        return values


def warned_checks(findings: list[QualityFinding] | tuple[QualityFinding, ...]) -> list[str]:
    """Names of the checks that warned, in report order."""
    return [f.name for f in findings if f.warned]


def _within(value: float, lower: float | None, upper: float | None) -> bool:
    return (lower is None or value >= lower) and (upper is None or value <= upper)
