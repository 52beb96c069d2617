"""Results → DICOM: Parametric Maps, summary Secondary Captures, the Structured Report, the
failure notice and deterministic UIDs."""

from ctp_node.report.failure_notice import build_failure_notice
from ctp_node.report.parametric_map import build_parametric_maps
from ctp_node.report.secondary_capture import build_secondary_captures
from ctp_node.report.settings import ReportSettings
from ctp_node.report.structured_report import build_structured_report
from ctp_node.report.uids import derive_uid

__all__ = [
    "ReportSettings",
    "build_failure_notice",
    "build_parametric_maps",
    "build_secondary_captures",
    "build_structured_report",
    "derive_uid",
]
