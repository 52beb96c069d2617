"""What the report stage needs to know besides the result: numbering and device identity."""

from __future__ import annotations

from dataclasses import dataclass, field

import ctp_node
from ctp_node.report.uids import derive_uid
from ctp_node.report.versions import ResultVersion


@dataclass(frozen=True)
class ReportSettings:
    """Settings for building the DICOM outputs.

    Attributes
    ----------
    series_number_start : SeriesNumber of the first output series; the others follow in order
        (Parametric Maps CBF, CBV, MTT, TTP, Tmax take ``start + 0 … start + 4``).
    manufacturer : Manufacturer of the outputs (the node is the device that created them).
    manufacturer_model_name : ManufacturerModelName of the outputs.
    software_version : SoftwareVersions of the outputs.
    algorithm_version : version of the method; part of every output UID, so a new version gives
        new series instead of overwriting the old ones in PACS.
    device_serial_number : DeviceSerialNumber (Type 1 in the Enhanced General Equipment module).
    institution_name : InstitutionName, or ``None`` to leave it out.
    content_qualification : ContentQualification, ``"RESEARCH"`` (default) or ``"PRODUCT"``:
        whether the outputs come from approved software.
    series_description_suffix : appended to the map name in SeriesDescription, e.g.
        ``"CBF (ctp-node)"``.
    version : which version of the series' result is being built: the output UIDs derive from
        its key, and a later version says what it supersedes.
    """

    series_number_start: int = 900
    manufacturer: str = "ctp-node"
    manufacturer_model_name: str = "ctp-node"
    software_version: str = ctp_node.__version__
    algorithm_version: str = ctp_node.__version__
    device_serial_number: str = "0"
    institution_name: str | None = None
    content_qualification: str = "RESEARCH"
    series_description_suffix: str = "(ctp-node)"
    version: ResultVersion = field(default_factory=ResultVersion)

    def uid(self, source_series_uid: str, kind: str, *parts: str, key: str | None = None) -> str:
        """The UID of an output ``kind`` (and ``parts``) of this version of the result, or of
        the version whose key is ``key``."""
        key = self.version.key if key is None else key
        return derive_uid(source_series_uid, kind, key or self.algorithm_version, *parts)

    def series_description(self, name: str) -> str:
        """SeriesDescription of an output: its name, the suffix and, from version 2 on, what it
        supersedes; at most 64 characters."""
        text = f"{name} {self.series_description_suffix}".strip() + self.version.series_suffix()
        return text[:64]

    def __post_init__(self) -> None:
        if self.series_number_start < 1:
            raise ValueError(
                f"series_number_start must be a positive integer; got {self.series_number_start}"
            )
        if self.content_qualification not in ("RESEARCH", "PRODUCT", "SERVICE"):
            raise ValueError(
                "content_qualification must be RESEARCH, PRODUCT or SERVICE; "
                f"got {self.content_qualification!r}"
            )
        if not self.algorithm_version:
            raise ValueError("algorithm_version must not be empty: it is part of every output UID")
