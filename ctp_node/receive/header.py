"""What the receiver reads from a received object's header: who it is (UIDs), where it belongs,
and what it announces of its acquisition's size and of its place in it.

Reading is tolerant: an odd or unreadable value of the announced size, the series number or
the position gives ``None``, never a refusal, because an acquisition can be computed without
any of them. Only the identity (UIDs, SOP class) decides whether an object is refused, and that
check is :func:`identity_problem`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID, CTImageStorage, EnhancedCTImageStorage

from ctp_node.receive.spool import is_valid_uid

#: The storage SOP classes the node computes perfusion from; any other is an "other object".
CT_STORAGE_CLASSES: frozenset[str] = frozenset({CTImageStorage, EnhancedCTImageStorage})


def not_ct_reason(sop_class_uid: str) -> str | None:
    """Why an object of this SOP class gives no perfusion maps, or None for CT: the receiver's
    reason for an "other object" and ``process``'s for a series it skips."""
    if sop_class_uid in CT_STORAGE_CLASSES:
        return None
    name = UID(sop_class_uid).name if sop_class_uid else "an object without SOP Class UID"
    return f"{name} is not CT: the node computes perfusion from CT only"


#: An integer element outside this range is not a count or a series number anyone meant.
_INTEGER_LIMIT = 2**31


@dataclass(frozen=True)
class ReceivedHeader:
    """The facts the receiver records of one object.

    Attributes
    ----------
    sop_class_uid, sop_instance_uid, series_instance_uid, study_instance_uid : identity; ""
        when absent.
    modality, accession_number : as sent ("" when absent); the accession number is cut to
        16 characters, its VR's length.
    series_number : SeriesNumber, ``None`` when absent or not an integer ("1.5", "abc").
    temporal_positions : NumberOfTemporalPositions (0020,0105), ``None`` when absent or odd.
    images_in_acquisition : ImagesInAcquisition (0020,1002), ``None`` when absent or odd.
    frames : NumberOfFrames; 1 when absent or odd (a single-frame image).
    slice_position_mm : ImagePositionPatient projected on the slice normal (the cross product
        of the row and column direction cosines of ImageOrientationPatient), mm; ``None`` when
        either is absent or odd, and for multi-frame objects (their positions are per frame).
    """

    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    modality: str = ""
    accession_number: str = ""
    series_number: int | None = None
    temporal_positions: int | None = None
    images_in_acquisition: int | None = None
    frames: int = 1
    slice_position_mm: float | None = None

    @property
    def is_ct(self) -> bool:
        """CT Image Storage or Enhanced CT Image Storage: what perfusion is computed from."""
        return self.sop_class_uid in CT_STORAGE_CLASSES


def read_header(ds: Dataset, affected_sop_instance_uid: str = "") -> ReceivedHeader:
    """The receiver's facts of ``ds``.

    Parameters
    ----------
    ds : the received data set (or a file read with ``stop_before_pixels``).
    affected_sop_instance_uid : the C-STORE request's UID, used when the data set lacks one.

    Raises
    ------
    Exception : whatever pydicom raises when the identity elements cannot be decoded at all;
        the size and position elements never raise.
    """
    frames = _count(ds, "NumberOfFrames") or 1
    return ReceivedHeader(
        sop_class_uid=_text(ds, "SOPClassUID"),
        sop_instance_uid=_text(ds, "SOPInstanceUID") or str(affected_sop_instance_uid or ""),
        series_instance_uid=_text(ds, "SeriesInstanceUID"),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        modality=_text(ds, "Modality"),
        accession_number=_text(ds, "AccessionNumber")[:16],
        series_number=_tolerant(_integer, ds, "SeriesNumber"),
        temporal_positions=_count(ds, "NumberOfTemporalPositions"),
        images_in_acquisition=_count(ds, "ImagesInAcquisition"),
        frames=frames,
        slice_position_mm=_tolerant(_slice_position_mm, ds) if frames == 1 else None,
    )


def identity_problem(header: ReceivedHeader, context_sop_class_uid: str) -> str | None:
    """Why the object cannot be accepted as what it claims to be, or ``None``.

    The SOP class must be the presentation context's, and the SOP Instance, Series Instance
    and Study Instance UIDs must be valid UIDs (they also name the files).
    """
    if header.sop_class_uid != context_sop_class_uid:
        return (
            f"SOP Class UID in the data set ({header.sop_class_uid or 'missing'}) does not match "
            f"the presentation context ({context_sop_class_uid})"
        )
    for name, uid in (
        ("SOP Instance", header.sop_instance_uid),
        ("Series Instance", header.series_instance_uid),
        ("Study Instance", header.study_instance_uid),
    ):
        if not is_valid_uid(uid):
            return f"{name} UID is missing or not a valid UID"
    return None


def _text(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip()


def _tolerant(read, *args):  # type: ignore[no-untyped-def]
    # pydicom converts a raw element when it is first read, and may raise on a value that
    # cannot be converted; for these elements that means "unknown".
    try:
        return read(*args)
    except Exception:
        return None


def _integer(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword, None)
    if value is None or isinstance(value, MultiValue | list | tuple):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not number.is_integer() or abs(number) >= _INTEGER_LIMIT:
        return None
    return int(number)


def _count(ds: Dataset, keyword: str) -> int | None:
    number = _tolerant(_integer, ds, keyword)
    return number if number is not None and number > 0 else None


def _slice_position_mm(ds: Dataset) -> float | None:
    position = _floats(ds.get("ImagePositionPatient", None), 3)
    orientation = _floats(ds.get("ImageOrientationPatient", None), 6)
    if position is None or orientation is None:
        return None
    (rx, ry, rz), (cx, cy, cz) = orientation[:3], orientation[3:]
    normal = (ry * cz - rz * cy, rz * cx - rx * cz, rx * cy - ry * cx)
    return sum(p * n for p, n in zip(position, normal, strict=True))


def _floats(value: object, length: int) -> list[float] | None:
    if not isinstance(value, MultiValue | list | tuple) or len(value) != length:
        return None
    numbers = [float(v) for v in value]
    return numbers if all(math.isfinite(v) for v in numbers) else None
