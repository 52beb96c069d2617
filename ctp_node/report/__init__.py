"""Results → DICOM: Parametric Maps, the Structured Report and deterministic UIDs."""

from ctp_node.report.parametric_map import build_parametric_maps
from ctp_node.report.settings import ReportSettings
from ctp_node.report.structured_report import build_structured_report
from ctp_node.report.uids import derive_uid

__all__ = ["ReportSettings", "build_parametric_maps", "build_structured_report", "derive_uid"]
