"""Acute-stroke volumes as a Comprehensive 3D SR (TID 1500 Measurement Report).

One measurement group (TID 1501) per finding, identified by its tracking identifier:

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
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import pydicom
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from ctp_node.perfusion.result import PerfusionResult
from ctp_node.report.settings import ReportSettings
from ctp_node.report.uids import derive_uid

#: UCUM millilitre and dimensionless ratio.
MILLILITRE = Code(value="ml", scheme_designator="UCUM", meaning="milliliter")
RATIO = codes.UCUM.Ratio
#: How the volumes were measured.
CT_PERFUSION_METHOD = codes.DCM.PerfusionAnalysisByIVIodinatedContrastCTTechnique

CORE = "Ischemic core (rCBF<30%)"
TMAX6 = "Hypoperfusion (Tmax>6s)"
TMAX10 = "Hypoperfusion (Tmax>10s)"
MISMATCH = "Mismatch"

#: SeriesNumber of the SR relative to ``settings.series_number_start`` (the maps take +0…+4).
SERIES_NUMBER_OFFSET = 10


def build_structured_report(
    result: PerfusionResult,
    source_images: Sequence[pydicom.Dataset],
    settings: ReportSettings,
) -> pydicom.Dataset:
    """A TID 1500 Comprehensive 3D SR with the stroke volumes of ``result``.

    Parameters
    ----------
    result : the engine's result; its ``volumes`` are reported (mL, ratios unitless).
    source_images : images of the source series (headers suffice), recorded as evidence;
        patient and study are taken from them.
    settings : numbering, device identity and algorithm version.

    Returns
    -------
    A ``highdicom.sr.Comprehensive3DSR`` with deterministic Series and SOP Instance UIDs.
    """
    source_images = list(source_images)
    if not source_images:
        raise ValueError("source_images is empty: pass the CT images of the source series")
    source_series_uid = str(source_images[0].SeriesInstanceUID)
    version = settings.algorithm_version
    volumes = result.volumes

    algorithm = hd.sr.AlgorithmIdentification(
        name=f"ctp-node {result.algorithm}".strip()[:64],
        version=version,
        parameters=[f"{name}={value:g}" for name, value in sorted(result.parameters.items())]
        or None,
    )

    def group(
        identifier: str, volume_ml: float, ratio: float | None = None
    ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
        measurements = [
            hd.sr.Measurement(
                name=codes.SCT.Volume,
                value=float(volume_ml),
                unit=MILLILITRE,
                method=CT_PERFUSION_METHOD,
                algorithm_id=algorithm,
            )
        ]
        if ratio is not None:
            measurements.append(
                hd.sr.Measurement(
                    name=codes.DCM.VolumeRatio,
                    value=float(ratio),
                    unit=RATIO,
                    method=CT_PERFUSION_METHOD,
                    algorithm_id=algorithm,
                )
            )
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=derive_uid(source_series_uid, "SR-group", version, identifier),
                identifier=identifier,
            ),
            method=CT_PERFUSION_METHOD,
            algorithm_id=algorithm,
            finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Brain)],
            measurements=measurements,
        )

    groups = [
        group(CORE, volumes.core_ml),
        group(TMAX6, volumes.tmax6_ml),
        group(TMAX10, volumes.tmax10_ml, volumes.hypoperfusion_intensity_ratio),
        group(MISMATCH, volumes.mismatch_ml, volumes.mismatch_ratio),
    ]
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=derive_uid(settings.manufacturer, "device", settings.device_serial_number),
            name=settings.manufacturer_model_name,
            manufacturer_name=settings.manufacturer,
            serial_number=settings.device_serial_number,
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.ComputedTomographyOfHead,
        imaging_measurements=groups,
    )
    document = hd.sr.Comprehensive3DSR(
        evidence=source_images,
        content=report,
        series_instance_uid=derive_uid(source_series_uid, "SR", version),
        series_number=settings.series_number_start + SERIES_NUMBER_OFFSET,
        sop_instance_uid=derive_uid(source_series_uid, "SR", version, "instance", "1"),
        instance_number=1,
        manufacturer=settings.manufacturer,
        institution_name=settings.institution_name,
        is_complete=True,
    )
    document.SeriesDescription = f"Stroke volumes {settings.series_description_suffix}".strip()
    document.SoftwareVersions = settings.software_version
    document.ManufacturerModelName = settings.manufacturer_model_name
    return document
