"""What PACS receives when a job cannot produce maps: a page and an SR that say so and why.

Without it a radiologist waiting for the perfusion results sees nothing arrive and cannot tell
"still running" from "failed". The notice is one Secondary Capture page (kind ``"FAIL-SC"``)
and one Comprehensive 3D SR (TID 1500 with no measurements and the reason as a qualitative
evaluation; kind ``"FAIL-SR"``), both in the source study with deterministic UIDs.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from ctp_node.report import pages
from ctp_node.report.secondary_capture import sc_page
from ctp_node.report.settings import ReportSettings
from ctp_node.report.sr_content import device_observer_context, sr_document, text_evaluation
from ctp_node.report.uids import derive_uid

#: SeriesNumber offsets relative to ``settings.series_number_start`` (same places as the
#: summary and the SR of a successful job, so a later success sits next to the notice).
SC_SERIES_NUMBER_OFFSET = 20
SR_SERIES_NUMBER_OFFSET = 10
HEADLINE = "CT perfusion: no maps could be computed"
#: Tracking identifier of the SR's one measurement group.
NO_MAPS = "CT perfusion: no maps"


def build_failure_notice(
    reason: str, source_images: Sequence[pydicom.Dataset], settings: ReportSettings
) -> list[pydicom.Dataset]:
    """A Secondary Capture page and an SR stating that no maps were computed, and why.

    Parameters
    ----------
    reason : why no maps could be computed, as a sentence for a radiologist (e.g. "The
        contrast bolus never arrives in the arteries."). Printed on the page and stored in the
        SR; it must not contain anything but the reason.
    source_images : images of the source series (headers suffice); patient and study are taken
        from the first.
    settings : numbering, device identity and the result's version.

    Returns
    -------
    ``[secondary_capture, structured_report]``, with UIDs derived from the source series UID,
    ``"FAIL-SC"`` / ``"FAIL-SR"`` and the version key (:meth:`ReportSettings.uid`).
    """
    reason = " ".join(str(reason).split())
    if not reason:
        raise ValueError("reason is empty: say why no maps could be computed")
    source_images = list(source_images)
    if not source_images:
        raise ValueError("source_images is empty: pass the CT images of the source series")
    source = source_images[0]
    page = sc_page(
        render_notice_page(reason, source, settings),
        source,
        settings,
        kind="FAIL-SC",
        number=1,
        series_number=settings.series_number_start + SC_SERIES_NUMBER_OFFSET,
        series_description=settings.series_description("CTP failed"),
        page_description=f"{HEADLINE}: {reason}",
        orientation=source.get("ImageOrientationPatient", (1, 0, 0, 0, 1, 0)),
    )
    return [page, _failure_report(reason, source_images, settings)]


def render_notice_page(
    reason: str, source: pydicom.Dataset, settings: ReportSettings
) -> np.ndarray:
    """The notice as an RGB uint8 page: headline, reason and what to do."""
    figure = pages.new_page()
    pages.draw_banner(
        figure,
        source,
        "CT perfusion: FAILED",
        f"{settings.manufacturer} {settings.software_version}",
        settings.content_qualification != "PRODUCT",
        settings.version.statement(),
    )
    figure.text(0.5, 0.74, HEADLINE, color="#ff7070", fontsize=30, ha="center", weight="bold")
    figure.text(0.08, 0.62, "Reason", color=pages.ACCENT, fontsize=20, weight="bold")
    figure.text(0.08, 0.59, pages.wrap(reason, 70), color=pages.FOREGROUND, fontsize=20, va="top")
    advice = (
        "No perfusion maps, volumes or mismatch result were produced for this acquisition. "
        "None will follow unless the series is sent again or reprocessed, and then as a new "
        "version that supersedes this notice. Read the source images directly."
    )
    figure.text(0.08, 0.3, pages.wrap(advice, 80), color=pages.FOREGROUND, fontsize=16, va="top")
    figure.text(
        0.08,
        0.12,
        f"Source: series {source.get('SeriesNumber', '-')} "
        f"{source.get('SeriesDescription', '') or ''}".strip(),
        color="#b0b0b0",
        fontsize=14,
    )
    return pages.to_rgb(figure)


def _failure_report(
    reason: str, source_images: list[pydicom.Dataset], settings: ReportSettings
) -> pydicom.Dataset:
    source_series_uid = str(source_images[0].SeriesInstanceUID)
    version = settings.algorithm_version
    # highdicom wants one measurement group: a group without measurements whose qualitative
    # evaluations (TID 1501, TEXT) state the outcome and the reason.
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=derive_uid(source_series_uid, "FAIL-SR-group", version),
            identifier=NO_MAPS,
        ),
        method=codes.DCM.PerfusionAnalysisByIVIodinatedContrastCTTechnique,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Brain)],
    )
    group[0].ContentSequence.extend(
        [text_evaluation(HEADLINE + "."), text_evaluation(f"Reason: {reason}")]
        + ([text_evaluation(settings.version.statement())] if settings.version.statement() else [])
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=device_observer_context(settings)
        ),
        procedure_reported=codes.SCT.ComputedTomographyOfHead,
        imaging_measurements=[group],
    )
    return sr_document(
        report,
        source_images,
        settings,
        kind="FAIL-SR",
        series_number=settings.series_number_start + SR_SERIES_NUMBER_OFFSET,
        description="CTP failed",
    )
