"""Acute-stroke volumes (or, for the vasospasm profile, the hemispheric comparison; for the
tumour profile, the enhancing region) as a Comprehensive 3D SR (TID 1500 Measurement Report).

With a profile that reports stroke volumes (``stroke``), one measurement group (TID 1501) per
finding, identified by its tracking identifier:

=================================  =====================================================
tracking identifier                measurements
=================================  =====================================================
``Ischemic core (rCBF<30%)``       Volume (ml)
``Hypoperfusion (Tmax>6s)``        Volume (ml)
``Hypoperfusion (Tmax>10s)``       Volume (ml); Volume Ratio to Tmax>6s = HIR ({ratio})
``Mismatch``                       Volume (ml); Volume Ratio hypoperfusion/core ({ratio})
=================================  =====================================================

The identifiers are fixed by the output contract (ARCHITECTURE.md), whatever thresholds were
configured; the thresholds actually used are recorded as algorithm parameters.

With a hemispheric comparison (``vasospasm``), instead, one group per hemisphere,
``Hemisphere: left`` and ``Hemisphere: right`` (finding site Brain with its laterality coded;
``image left/right`` without a patient side), holding each map's mean (derivation Mean) with
the Parametric Maps' quantity codes and UCUM units; the asymmetry thresholds are the
algorithm's parameters, and the statements give each map's difference or ratio and flag.

With a permeability measurement (``tumour``), two groups: ``Enhancing region (Ktrans)`` (its
volume, and the mean of CBF, CBV, MTT and K^trans there; K^trans coded DCM 126312) and
``Tissue outside the enhancing region`` (the same means: the reference of a relative CBV); the
region's rule is the algorithm's parameters, and the statements name the model, the images it
was fitted on, and each map's mean and median in the region beside the tissue outside it.

With a region a person gave (``process/reprocess --region``, any profile), one more group,
``Region given by the user`` (its tissue volume, each map's mean, and the region in words), and
the same sentences for it.

Two more groups describe the input curves, ``Arterial input function (AIF)`` and ``Venous
output function (VOF)``: the bolus arrival time (s) as a measurement, and as TEXT qualitative
evaluations the location (voxels, centre, patient coordinates) and the curve itself as
``time s: HU`` pairs (a reader can parse them; dozens of NUM items per curve would bury the
volumes in every SR viewer).

After the measurements, a report-level "Qualitative Evaluations" container (TID 1500) states
as TEXT: the profile and what chose it, the DEFUSE 3 target-mismatch statement (stroke), the
method, thresholds (stroke), the hemispheres (vasospasm) and constants, the
contrast agent/volume/rate (or that the headers do not record them), the motion finding, the
acquisition, and every warning and note.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from ctp_node.perfusion.acquisition import AcquisitionFacts
from ctp_node.perfusion.permeability.region import (
    enhancing_statistics,
    user_region_statistics,
)
from ctp_node.perfusion.result import PerfusionResult
from ctp_node.profiles import DEFAULT_CHOICE, ProfileChoice
from ctp_node.qc import QualityFinding
from ctp_node.report.asymmetry_text import asymmetry_statements
from ctp_node.report.parametric_map import map_definitions
from ctp_node.report.permeability_text import permeability_statements, user_region_statements
from ctp_node.report.quality_page import facts_lines
from ctp_node.report.settings import ReportSettings
from ctp_node.report.sr_content import (
    coding_scheme_identification,
    device_observer_context,
    qualitative_evaluations_container,
    quality_control_container,
    quality_statement,
    sr_document,
)
from ctp_node.report.sr_groups import GroupBuilder
from ctp_node.report.summary_pages import (
    normal_reference_statement,
    target_mismatch_statement,
    threshold,
)

CORE = "Ischemic core (rCBF<30%)"
TMAX6 = "Hypoperfusion (Tmax>6s)"
TMAX10 = "Hypoperfusion (Tmax>10s)"
MISMATCH = "Mismatch"
AIF = "Arterial input function (AIF)"
VOF = "Venous output function (VOF)"
#: Parameters recorded with every measurement's algorithm identification.
THRESHOLD_PARAMETERS = frozenset(
    {
        "core_rcbf_threshold",
        "core_reference_tmax_s",
        "core_reference_mean",
        "core_tmax_min_s",
        "tmax_threshold_s",
        "tmax_severe_threshold_s",
        "target_core_max_ml",
        "target_mismatch_min_ml",
        "target_mismatch_ratio_min",
    }
)
#: Parameters recorded with every measurement of a profile without stroke volumes.
ASYMMETRY_PARAMETERS = frozenset(
    {"asymmetry_time_difference_s", "asymmetry_flow_ratio", "asymmetry_midline_margin_mm"}
)
#: Parameters recorded with every measurement of a profile that measures permeability.
PERMEABILITY_PARAMETERS = frozenset(
    {"enhancing_ktrans_min", "enhancing_significance", "enhancing_min_volume_ml"}
)
ENHANCING = "Enhancing region (Ktrans)"
OUTSIDE_ENHANCING = "Tissue outside the enhancing region"
USER_REGION = "Region given by the user"

#: SeriesNumber of the SR relative to ``settings.series_number_start`` (the maps take +0…+4).
SERIES_NUMBER_OFFSET = 10


def build_structured_report(
    result: PerfusionResult,
    source_images: Sequence[pydicom.Dataset],
    settings: ReportSettings,
    *,
    acquisition_facts: AcquisitionFacts | None = None,
    notes: Sequence[str] = (),
    motion_mm: float | None = None,
    quality: Sequence[QualityFinding] = (),
    profile: ProfileChoice = DEFAULT_CHOICE,
) -> pydicom.Dataset:
    """A TID 1500 Comprehensive 3D SR with the stroke volumes of ``result`` (the ``stroke``
    profile) or its hemispheric comparison (``vasospasm``).

    Parameters
    ----------
    result : the engine's result; its ``volumes`` are reported (mL, ratios unitless), with its
        input curves, method, thresholds and warnings.
    source_images : images of the source series (headers suffice), recorded as evidence;
        patient and study are taken from them. One image per slice in the result's z order
        (as for the Parametric Maps) lets the curves' locations be given in patient
        coordinates.
    settings : numbering, device identity and algorithm version.
    acquisition_facts : kVp, mAs, CTDIvol and contrast agent/volume/rate from the headers;
        ``None`` reports them as not recorded.
    notes : further findings to state (e.g. the assembler's notes on the acquisition).
    motion_mm : largest head displacement found, in mm; ``None`` reports motion from the
        result's warnings, or as not assessed.
    quality : the acquisition quality findings (practice parameter checks); when given, an
        "Acquisition quality control" container after the qualitative evaluations holds one
        entry per check, and a statement names the checks that warned.
    profile : the protocol profile and what chose it: stated first; its
        ``stroke_volumes`` decide whether the volume groups and their statements are there;
        with ``result.asymmetry``, one group per hemisphere holds each map's mean there.

    Returns
    -------
    A ``highdicom.sr.Comprehensive3DSR`` with deterministic Series and SOP Instance UIDs.
    """
    source_images = list(source_images)
    if not source_images:
        raise ValueError("source_images is empty: pass the CT images of the source series")
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=device_observer_context(settings)
        ),
        procedure_reported=codes.SCT.ComputedTomographyOfHead,
        imaging_measurements=_measurement_groups(result, source_images, settings, profile),
    )
    report[0].ContentSequence.extend(
        _evaluation_containers(
            result,
            settings,
            acquisition_facts=acquisition_facts,
            notes=notes,
            motion_mm=motion_mm,
            quality=quality,
            profile=profile,
        )
    )
    document = sr_document(
        report,
        source_images,
        settings,
        kind="SR",
        series_number=settings.series_number_start + SERIES_NUMBER_OFFSET,
        description="Stroke volumes" if profile.profile.stroke_volumes else "Perfusion report",
    )
    if quality:
        document.CodingSchemeIdentificationSequence = [coding_scheme_identification()]
    return document


def _measurement_groups(
    result: PerfusionResult,
    source_images: list[pydicom.Dataset],
    settings: ReportSettings,
    profile: ProfileChoice,
) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    """The TID 1501 groups in report order: the four volumes (a profile with stroke volumes),
    the two hemispheres (with a hemispheric comparison), then the AIF and (if any) VOF."""
    groups = GroupBuilder(
        str(source_images[0].SeriesInstanceUID),
        _algorithm_identification(result, settings, profile),
        source_images,
        settings.algorithm_version,
    )
    volumes = result.volumes
    built = []
    if profile.profile.stroke_volumes:
        built += [
            groups.volume_group(CORE, volumes.core_ml),
            groups.volume_group(TMAX6, volumes.tmax6_ml),
            groups.volume_group(TMAX10, volumes.tmax10_ml, volumes.hypoperfusion_intensity_ratio),
            groups.volume_group(MISMATCH, volumes.mismatch_ml, volumes.mismatch_ratio),
        ]
    if result.asymmetry is not None:
        comparison = result.asymmetry
        built += [groups.hemisphere_group(side, comparison) for side in comparison.sides]
    definitions = map_definitions(result)
    statistics = enhancing_statistics(result)
    if statistics is not None:
        built += [
            groups.region_group(ENHANCING, statistics.mean, definitions, statistics.volume_ml),
            groups.region_group(OUTSIDE_ENHANCING, statistics.outside_mean, definitions),
        ]
    given = user_region_statistics(result)
    if given is not None:
        built.append(
            groups.region_group(
                USER_REGION,
                given.mean,
                definitions,
                given.volume_ml,
                [f"Region: {result.user_region.description}."],
            )
        )
    built.append(groups.curve_group(AIF, result.aif))
    if result.vof is not None:
        built.append(groups.curve_group(VOF, result.vof))
    return built


def _algorithm_identification(
    result: PerfusionResult, settings: ReportSettings, profile: ProfileChoice
) -> hd.sr.AlgorithmIdentification:
    """The engine's name (prefixed with the manufacturer), version and the thresholds of what
    the profile reports (the volumes' or the asymmetry flags')."""
    recorded = (
        THRESHOLD_PARAMETERS
        if profile.profile.stroke_volumes
        else PERMEABILITY_PARAMETERS
        if profile.profile.permeability
        else ASYMMETRY_PARAMETERS
    )
    algorithm_name = result.algorithm or "ctp-node"
    if not algorithm_name.startswith(settings.manufacturer):
        algorithm_name = f"{settings.manufacturer} {algorithm_name}"
    return hd.sr.AlgorithmIdentification(
        name=algorithm_name[:64],
        version=settings.algorithm_version,
        # The thresholds that define the volumes; every parameter is in the "Parameters:"
        # statement (repeating all of them on every measurement buries the values).
        parameters=[
            f"{name}={value:g}"
            for name, value in sorted(result.parameters.items())
            if name in recorded
        ]
        or None,
    )


def _evaluation_containers(
    result: PerfusionResult,
    settings: ReportSettings,
    *,
    acquisition_facts: AcquisitionFacts | None,
    notes: Sequence[str],
    motion_mm: float | None,
    quality: Sequence[QualityFinding],
    profile: ProfileChoice,
) -> list[hd.sr.ContainerContentItem]:
    """What follows the measurements: the report-level qualitative evaluations (with the
    quality statement when there are findings), then the quality control container."""
    statements = report_statements(
        result,
        settings,
        acquisition_facts=acquisition_facts,
        notes=notes,
        motion_mm=motion_mm,
        profile=profile,
    )
    if not quality:
        return [qualitative_evaluations_container(statements)]
    return [
        qualitative_evaluations_container([*statements, quality_statement(quality)]),
        quality_control_container(quality),
    ]


def report_statements(
    result: PerfusionResult,
    settings: ReportSettings,
    *,
    acquisition_facts: AcquisitionFacts | None = None,
    notes: Sequence[str] = (),
    motion_mm: float | None = None,
    profile: ProfileChoice = DEFAULT_CHOICE,
) -> list[str]:
    """The report-level statements, each a sentence a reader understands without the codes:
    the profile, then (a profile with stroke volumes) the DEFUSE 3 statement, the method, (with
    stroke volumes) the thresholds, (with a hemispheric comparison) the hemispheres, the
    constants and parameters, contrast, acquisition, motion, warnings and notes."""
    parameters = result.parameters
    statements = [
        profile.statement(),
        f"Method: {result.algorithm or 'not stated'} (deconvolution of tissue curves with the "
        f"arterial input function; software {settings.manufacturer} "
        f"{settings.software_version}, algorithm version {settings.algorithm_version}; "
        f"AIF {result.aif.selection}, VOF "
        f"{result.vof.selection if result.vof is not None else 'not used'}).",
    ]
    if profile.profile.stroke_volumes:
        core_percent = 100 * threshold(result, "core_rcbf_threshold")
        statements.insert(1, target_mismatch_statement(result))
        statements.append(
            f"Thresholds: ischemic core rCBF < {core_percent:g} % of the "
            f"{normal_reference_statement(result)}; hypoperfusion (which includes the core) "
            f"Tmax > {threshold(result, 'tmax_threshold_s'):g} s and Tmax > "
            f"{threshold(result, 'tmax_severe_threshold_s'):g} s."
        )
    if result.asymmetry is not None:
        statements += asymmetry_statements(result.asymmetry, parameters)
    if result.permeability is not None:
        statements += permeability_statements(
            result.permeability, enhancing_statistics(result), parameters
        )
    if result.user_region is not None:
        statements += user_region_statements(result.user_region, user_region_statistics(result))
    statements += [
        "Constants: brain density "
        f"{parameters.get('brain_density_g_ml', 1.04):g} g/ml, hematocrit factor "
        f"{parameters.get('hematocrit_factor', 0.73):g}.",
        "Parameters: "
        + ("; ".join(f"{k}={v:g}" for k, v in sorted(parameters.items())) or "not recorded"),
    ]
    facts = facts_lines(acquisition_facts)
    contrast = [line for line in facts if line.startswith(("Contrast", "Injection"))]
    if acquisition_facts is None or all(line.endswith("not recorded") for line in contrast):
        statements.append(
            "Contrast: agent, volume and injection rate are not recorded in the image headers."
        )
    else:
        statements.append("Contrast: " + "; ".join(contrast) + ".")
    statements.append(
        "Acquisition: "
        + "; ".join(line for line in facts if not line.startswith(("Contrast", "Injection")))
        + "."
    )
    statements.append(_motion_statement(result, motion_mm))
    statements += [f"Warning: {warning}" for warning in result.warnings]
    statements += [f"Note: {note}" for note in notes]
    if settings.version.statement():
        statements.insert(0, settings.version.statement())
    return statements


def _motion_statement(result: PerfusionResult, motion_mm: float | None) -> str:
    """What the practice parameter asks the report to state about movement during the cine."""
    if motion_mm is None and result.motion_mm is not None and np.size(result.motion_mm):
        motion_mm = float(np.max(result.motion_mm))
    if motion_mm is None:
        about_motion = [w for w in result.warnings if "motion" in w.lower()]
        return "Motion: " + " ".join(about_motion) if about_motion else "Motion: not assessed."
    statement = f"Motion: largest head displacement {motion_mm:.1f} mm"
    corrected, excluded = result.motion_corrected_frames, result.motion_excluded_frames
    if corrected:
        statement += f"; {len(corrected)} image(s) registered back (rigid, in-plane)"
    if excluded:
        frames = ", ".join(str(i + 1) for i in excluded)
        statement += (
            f"; {len(excluded)} image(s) could not be corrected and were replaced by "
            f"interpolation in time (images {frames}): the maps may be less reliable"
        )
    return statement + "."
