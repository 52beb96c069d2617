"""Versions of a series' result: what the output UIDs derive from, and what a new version says.

A series may be computed more than once: more images arrived after it was reported, a person
chose the arterial input, the engine or its settings changed. Each computation whose inputs
differ from the last reported one is a new **version**: it gets new output series and instances
(nothing hides under the old UIDs), its SeriesDescription and pages say which result it
supersedes and why, and its SR names its predecessor (Predecessor Documents Sequence).

Computing the same inputs again (a job retried after a crash, a study sent twice) gives the
same version key, hence the same UIDs: PACS sees a harmless duplicate.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import pydicom

#: SR kinds whose instance a later version names as its predecessor.
RESULT_SR_KIND = "SR"
FAILURE_SR_KIND = "FAIL-SR"


def content_digest(
    source_series_uid: str,
    sop_instance_uids: Iterable[str],
    *,
    algorithm_version: str,
    settings: str = "",
    aif_zyx: tuple[int, int, int] | None = None,
    vof_zyx: tuple[int, int, int] | None = None,
    region: str = "",
) -> str:
    """SHA-256 (hex) of everything a result depends on.

    Parameters
    ----------
    source_series_uid : the dynamic CT series.
    sop_instance_uids : every instance of the series given to the computation (order does not
        matter; a repeated UID counts once).
    algorithm_version : version of the method.
    settings : a stable text of the engine's parameters (e.g. their ``repr``); other parameters
        give another result, hence another version.
    aif_zyx, vof_zyx : voxel indices ``(slice, row, column)``, 0-based, of a person's choice of
        the arterial input and venous output; ``None`` = automatic.
    region : a region a person gave for the reports (``"Z,Y,X,R"``); "" = none, and then it is
        not part of the digest (a result without one keeps the digest it always had).
    """
    digest = hashlib.sha256()
    for part in (
        source_series_uid,
        algorithm_version,
        settings,
        "aif=" + (",".join(map(str, aif_zyx)) if aif_zyx else "auto"),
        "vof=" + (",".join(map(str, vof_zyx)) if vof_zyx else "auto"),
        *(["region=" + region] if region else []),
        *sorted(set(sop_instance_uids)),
    ):
        encoded = part.encode()
        digest.update(len(encoded).to_bytes(4, "big") + encoded)
    return digest.hexdigest()


def version_key(digest: str, predecessor_key: str | None) -> str:
    """The key a version's output UIDs derive from: its inputs and the version it supersedes.

    Chaining the predecessor makes a result that returns to earlier inputs (inputs A, then B,
    then A again) a new version with new UIDs rather than a copy of the first, which PACS
    already holds under an older version.
    """
    return hashlib.sha256(f"{digest}/{predecessor_key or ''}".encode()).hexdigest()[:40]


@dataclass(frozen=True)
class Predecessor:
    """The result a new version supersedes.

    Attributes
    ----------
    key : its version key (its output UIDs derive from it).
    number : its version number.
    reported_at : when it was computed, local time of the node; None if unknown.
    extent : what it was computed from, e.g. ``"25 of 41 time points"``.
    sr_kind : ``"SR"`` for a result, ``"FAIL-SR"`` for a failure notice.
    """

    key: str
    number: int
    reported_at: dt.datetime | None = None
    extent: str = ""
    sr_kind: str = RESULT_SR_KIND


@dataclass(frozen=True)
class ResultVersion:
    """Which version of a series' result the outputs are.

    Attributes
    ----------
    number : 1 for the first result of a series, then 2, 3…
    key : what the output UIDs derive from (see :func:`version_key`); "" derives them from the
        algorithm version alone (outputs built outside the node's queue, e.g. in tests).
    predecessor : the result this version supersedes, None for the first.
    reason : why there is a new version, a short phrase (e.g. ``"more images arrived"``).
    """

    number: int = 1
    key: str = ""
    predecessor: Predecessor | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        if self.number < 1:
            raise ValueError(f"a version number starts at 1; got {self.number}")
        if (self.predecessor is None) != (self.number == 1):
            raise ValueError("version 1 has no predecessor, and every later version has one")

    def series_suffix(self) -> str:
        """Appended to SeriesDescription: "" for version 1, else e.g. ``" v2 supersedes 14:05"``."""
        if self.predecessor is None:
            return ""
        when = _clock(self.predecessor.reported_at)
        return f" v{self.number}" + (f" supersedes {when}" if when else "")

    def statement(self) -> str:
        """One sentence for the pages and the SR; "" for version 1."""
        if self.predecessor is None:
            return ""
        previous = (
            "the failure notice" if self.predecessor.sr_kind == FAILURE_SR_KIND else ("the result")
        )
        when = _clock(self.predecessor.reported_at)
        text = f"Version {self.number}: supersedes {previous}"
        text += f" of {when}" if when else f" (version {self.predecessor.number})"
        if self.predecessor.extent:
            text += f" from {self.predecessor.extent}"
        if self.reason:
            text += f"; {self.reason}"
        return text + "."

    def predecessor_reference(
        self, source: pydicom.Dataset, series_uid: str, instance_uid: str
    ) -> pydicom.Dataset:
        """What highdicom needs to list the predecessor SR in the Predecessor Documents
        Sequence: its class and UIDs (``series_uid``/``instance_uid`` derived from the
        predecessor's key by the caller), in the source study."""
        reference = pydicom.Dataset()
        reference.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
        reference.SOPInstanceUID = instance_uid
        reference.SeriesInstanceUID = series_uid
        reference.StudyInstanceUID = str(source.StudyInstanceUID)
        return reference


def _clock(moment: dt.datetime | None) -> str:
    return moment.strftime("%H:%M") if moment is not None else ""
