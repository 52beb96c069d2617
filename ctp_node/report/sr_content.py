"""Content items the node's SRs share: the device observer, TEXT qualitative evaluations, and
the input curves (location and samples) as text a reader can use.

TID 1500 lets a report carry, after its Imaging Measurements, a "Qualitative Evaluations"
container (UMLS C0034375) of CODE or TEXT items; highdicom builds the measurements but not that
container, so it is made here from highdicom's generic content items.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from ctp_node.perfusion.result import InputCurve
from ctp_node.qc import QualityFinding
from ctp_node.report.rounding import rounded
from ctp_node.report.settings import ReportSettings
from ctp_node.report.source_headers import declare_utf8
from ctp_node.report.uids import derive_uid

#: Concept name of TID 1500/1501 qualitative evaluations.
QUALITATIVE_EVALUATIONS = Code(
    value="C0034375", scheme_designator="UMLS", meaning="Qualitative Evaluations"
)

#: Voxels of a curve listed one by one in the SR.
MAX_LISTED_VOXELS = 50


def device_observer_context(settings: ReportSettings) -> hd.sr.ObserverContext:
    """The node as the observer (TID 1004 Device Observer Identifying Attributes)."""
    return hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=derive_uid(settings.manufacturer, "device", settings.device_serial_number),
            name=settings.manufacturer_model_name,
            manufacturer_name=settings.manufacturer,
            serial_number=settings.device_serial_number,
        ),
    )


def text_evaluation(text: str) -> hd.sr.TextContentItem:
    """One TEXT qualitative evaluation (CONTAINS)."""
    return hd.sr.TextContentItem(
        name=QUALITATIVE_EVALUATIONS,
        value=text,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )


def qualitative_evaluations_container(texts: Sequence[str]) -> hd.sr.ContainerContentItem:
    """The report-level "Qualitative Evaluations" container holding ``texts`` as TEXT items."""
    container = hd.sr.ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    container.ContentSequence = hd.sr.ContentSequence([text_evaluation(t) for t in texts])
    return container


def curve_location_text(curve: InputCurve, source_images: Sequence[pydicom.Dataset]) -> str:
    """Where a curve was taken: each voxel as (slice, row, column), 0-based voxel indices as
    ``ctp-node reprocess --aif`` takes them, and, when the source geometry is known, in patient
    coordinates (mm, DICOM LPS); and their centroid, which lies between vessels when the voxels
    come from several."""
    voxels = np.asarray(curve.voxels_zyx)
    z, y, x = curve.centre_zyx
    text = (
        f"{curve.kind} location ({curve.selection} selection): {len(voxels)} voxels averaged, "
        f"centroid at (slice, row, column) ({z}, {y}, {x}), 0-based"
    )
    centroid = patient_position_mm(voxels.mean(axis=0), source_images)
    if centroid is not None:
        text += ", patient position (x, y, z) = ({:.1f}, {:.1f}, {:.1f}) mm".format(*centroid)
    listed = []
    for voxel in voxels[:MAX_LISTED_VOXELS]:
        entry = f"({voxel[0]}, {voxel[1]}, {voxel[2]})"
        position = patient_position_mm(voxel, source_images)
        if position is not None:
            entry += " at ({:.1f}, {:.1f}, {:.1f}) mm".format(*position)
        listed.append(entry)
    more = (
        f"; and {len(voxels) - MAX_LISTED_VOXELS} more" if len(voxels) > MAX_LISTED_VOXELS else ""
    )
    return f"{text}; voxels (slice, row, column): {'; '.join(listed)}{more}"


def curve_samples_text(curve: InputCurve) -> str:
    """The curve used, as ``time s: HU`` pairs, with its baseline and arrival."""
    samples = "; ".join(
        f"{t:.2f}: {v:.1f}"
        for t, v in zip(np.asarray(curve.times_s), np.asarray(curve.concentration_hu), strict=True)
    )
    return (
        f"{curve.kind} curve, enhancement above baseline (HU) against time from the first image "
        f"(s); baseline {curve.baseline_frames} frames, arrival {curve.arrival_s:.2f} s; "
        f"time s: HU = {samples}"
    )


def patient_position_mm(
    zyx: np.ndarray, source_images: Sequence[pydicom.Dataset]
) -> tuple[float, float, float] | None:
    """Patient coordinates (mm) of a (fractional) voxel index ``(z, y, x)``, from the source
    headers (one image per slice, in the result's z order); ``None`` if they do not say."""
    z, y, x = (float(v) for v in zyx)
    lower = int(np.clip(np.floor(z), 0, len(source_images) - 1))
    upper = int(np.clip(lower + 1, 0, len(source_images) - 1))
    try:
        corners = []
        for index in (lower, upper):
            image = source_images[index]
            position = np.asarray(image.ImagePositionPatient, dtype=float)
            cosines = np.asarray(image.ImageOrientationPatient, dtype=float)
            row_spacing, column_spacing = (float(v) for v in image.PixelSpacing)
            corners.append(
                position + x * column_spacing * cosines[:3] + y * row_spacing * cosines[3:]
            )
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    weight = z - lower if upper != lower else 0.0
    point = (1 - weight) * corners[0] + weight * corners[1]
    return float(point[0]), float(point[1]), float(point[2])


def sr_document(
    report: hd.sr.MeasurementReport,
    source_images: Sequence[pydicom.Dataset],
    settings: ReportSettings,
    *,
    kind: str,
    series_number: int,
    description: str,
) -> hd.sr.Comprehensive3DSR:
    """The Comprehensive 3D SR object around a TID 1500 report, with deterministic UIDs
    derived from the source series, ``kind`` and the result's version; a later version lists
    the SR it supersedes in the Predecessor Documents Sequence."""
    source_series_uid = str(source_images[0].SeriesInstanceUID)
    document = hd.sr.Comprehensive3DSR(
        evidence=source_images,
        content=report,
        series_instance_uid=settings.uid(source_series_uid, kind),
        series_number=series_number,
        sop_instance_uid=settings.uid(source_series_uid, kind, "instance", "1"),
        instance_number=1,
        manufacturer=settings.manufacturer,
        institution_name=settings.institution_name,
        is_complete=True,
        previous_versions=predecessor_documents(source_images[0], settings),
    )
    document.SeriesDescription = settings.series_description(description)
    document.SoftwareVersions = settings.software_version
    document.ManufacturerModelName = settings.manufacturer_model_name
    return declare_utf8(document)


def predecessor_documents(
    source: pydicom.Dataset, settings: ReportSettings
) -> list[pydicom.Dataset] | None:
    """The SR of the version this one supersedes (a result's or a failure notice's), as
    highdicom's ``previous_versions`` wants it; None for a first version."""
    predecessor = settings.version.predecessor
    if predecessor is None:
        return None
    source_series_uid = str(source.SeriesInstanceUID)
    kind = predecessor.sr_kind
    return [
        settings.version.predecessor_reference(
            source,
            settings.uid(source_series_uid, kind, key=predecessor.key),
            settings.uid(source_series_uid, kind, "instance", "1", key=predecessor.key),
        )
    ]


#: Coding scheme of the node's own concepts (a private scheme: "99" + the node's name).
CTP_NODE_SCHEME = "99CTPNODE"
#: The acquisition quality-control container and the properties of each check.
QUALITY_CONTROL = Code(
    value="QC", scheme_designator=CTP_NODE_SCHEME, meaning="Acquisition quality control"
)
QUALITY_MEASURED_VALUE = Code(
    value="QC-VALUE", scheme_designator=CTP_NODE_SCHEME, meaning="Measured value"
)
QUALITY_LIMIT = Code(value="QC-LIMIT", scheme_designator=CTP_NODE_SCHEME, meaning="Limit")
QUALITY_SECTION = Code(
    value="QC-SECTION", scheme_designator=CTP_NODE_SCHEME, meaning="Practice parameter section"
)
QUALITY_DETAIL = Code(value="QC-DETAIL", scheme_designator=CTP_NODE_SCHEME, meaning="Finding")
#: The checks' results as codes.
QUALITY_RESULTS = {
    "pass": Code(value="QC-PASS", scheme_designator=CTP_NODE_SCHEME, meaning="pass"),
    "warn": Code(value="QC-WARN", scheme_designator=CTP_NODE_SCHEME, meaning="warn"),
    "not recorded": Code(
        value="QC-NOTREC", scheme_designator=CTP_NODE_SCHEME, meaning="not recorded"
    ),
}
#: Where the private codes come from (CodingSchemeIdentificationSequence item).
CODING_SCHEME_RESPONSIBLE = "ctp-node"


def coding_scheme_identification() -> pydicom.Dataset:
    """The CodingSchemeIdentificationSequence item that declares the node's private scheme."""
    item = pydicom.Dataset()
    item.CodingSchemeDesignator = CTP_NODE_SCHEME
    item.CodingSchemeName = "ctp-node acquisition quality control"
    item.CodingSchemeResponsibleOrganization = CODING_SCHEME_RESPONSIBLE
    return item


def quality_check_code(name: str) -> Code:
    """The concept of one check: its name as reported (e.g. ``"Tube voltage"``)."""
    value = "QC-" + "".join(c for c in name.upper() if c.isalnum())[:12]
    return Code(value=value, scheme_designator=CTP_NODE_SCHEME, meaning=name)


def quality_control_container(findings: Sequence[QualityFinding]) -> hd.sr.ContainerContentItem:
    """One "Acquisition quality control" container with one CODE item per check.

    Each item's concept is the check's name and its value the result (pass, warn, not
    recorded); it HAS PROPERTIES the measured value (NUM, UCUM unit; left out when nothing was
    measured), the limit, the practice parameter's section and the finding as TEXT.
    """
    container = hd.sr.ContainerContentItem(
        name=QUALITY_CONTROL,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    items = []
    for finding in findings:
        entry = hd.sr.CodeContentItem(
            name=quality_check_code(finding.name),
            value=QUALITY_RESULTS[finding.result],
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
        properties = []
        if finding.value is not None and np.isfinite(finding.value):
            properties.append(
                hd.sr.NumContentItem(
                    name=QUALITY_MEASURED_VALUE,
                    value=rounded(finding.value, finding.unit),
                    unit=Code(value=finding.unit, scheme_designator="UCUM", meaning=finding.unit),
                    relationship_type=hd.sr.RelationshipTypeValues.HAS_PROPERTIES,
                )
            )
        properties += [
            hd.sr.TextContentItem(
                name=concept,
                value=text,
                relationship_type=hd.sr.RelationshipTypeValues.HAS_PROPERTIES,
            )
            for concept, text in (
                (QUALITY_LIMIT, finding.limit),
                (QUALITY_SECTION, finding.section),
                (QUALITY_DETAIL, finding.detail),
            )
            if text
        ]
        entry.ContentSequence = hd.sr.ContentSequence(properties)
        items.append(entry)
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def quality_statement(findings: Sequence[QualityFinding]) -> str:
    """One sentence: how many checks warned and which (for the qualitative evaluations)."""
    warned = [f.name for f in findings if f.result == "warn"]
    unrecorded = [f.name for f in findings if f.result == "not recorded"]
    text = f"Acquisition quality (ACR-ASNR-SPR practice parameter): {len(findings)} checks, "
    text += f"{len(warned)} warning(s)" + (f": {', '.join(warned)}" if warned else "")
    if unrecorded:
        text += f"; not recorded: {', '.join(unrecorded)}"
    return text + "."
