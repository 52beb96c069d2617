"""Acknowledged means readable: a received file is parsed far enough to know its identity, its
image geometry and the length of its pixel data before the node answers Success.

A peer can send a data set that pynetdicom accepts and that nobody can read back: an element
declaring more bytes than the data set holds (a 2 GB length), explicit-VR bytes under an
implicit-VR transfer syntax, sequences nested thousands deep, or an image whose pixel data is
shorter than its rows and columns say. Each is refused here with a specific reason:
:class:`Unreadable` carries the C-STORE status (0xC000 when the bytes cannot be decoded,
0xA900 when a CT image lacks what makes it one).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pydicom
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import UID

from ctp_node.receive.admission import printable
from ctp_node.receive.header import ReceivedHeader, read_header

STATUS_DOES_NOT_MATCH_SOP_CLASS = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000

#: Values larger than this (bytes) are not read while checking: their extent is.
_DEFER_BYTES = 65_536

_UNDEFINED_LENGTH = 0xFFFFFFFF
_PIXEL_DATA = 0x7FE00010

#: The two-letter value representations (PS3.5 6.2), to tell explicit VR from implicit.
_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL "
    b"UN UR US UT UV".split()
)


class Unreadable(Exception):
    """The received object cannot be read back; ``status`` is the C-STORE status to send."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def read_received(path: Path, affected_sop_instance_uid: str = "") -> ReceivedHeader:
    """The header of the received file at ``path`` once its whole structure was checked.

    Raises
    ------
    Unreadable : with the status and the reason to refuse it.
    """
    size = os.path.getsize(path)
    try:
        ds = pydicom.dcmread(path, defer_size=_DEFER_BYTES)
        _check_encoding(path, ds.file_meta)
        if ds.file_meta.TransferSyntaxUID.is_deflated:
            size = 2**63  # positions are in the inflated stream; zlib checked its end
        _convert_everything(ds, size)
        header = read_header(ds, affected_sop_instance_uid)
        _check_pixel_data(ds, header)
    except Unreadable:
        raise
    except RecursionError:
        raise Unreadable(STATUS_CANNOT_UNDERSTAND, "sequences nested too deep to read") from None
    except Exception as exc:
        raise Unreadable(STATUS_CANNOT_UNDERSTAND, _undecodable(exc)) from exc
    return header


def _undecodable(exc: Exception) -> str:
    """Why the data set cannot be decoded, naming the element pydicom names."""
    text = printable(str(exc))
    found = _TAG.search(text)
    if found is None:
        return f"the data set cannot be decoded: {text[:200]}"
    tag = Tag(int(found.group(1), 16), int(found.group(2), 16))
    name = keyword_for_tag(tag) or "element"
    return f"{name} {found.group(0)} cannot be decoded: {text[:200]}"


_TAG = re.compile(r"\(([0-9A-Fa-f]{4}),\s*([0-9A-Fa-f]{4})\)")


def _check_encoding(path: Path, meta: Dataset) -> None:
    """The first element of the data set is encoded as its transfer syntax says (explicit or
    implicit VR): pydicom guesses and reads on, but the file would lie to other readers."""
    with open(path, "rb") as handle:  # preamble, "DICM", group length element, file meta
        handle.seek(128 + 4 + 12 + int(meta.get("FileMetaInformationGroupLength", 0)))
        first = handle.read(6)
    syntax = UID(str(meta.get("TransferSyntaxUID", "")))
    if len(first) < 6 or not syntax.is_transfer_syntax or syntax.is_deflated:
        return
    looks_explicit = first[4:6] in _VRS
    if syntax.is_implicit_VR and looks_explicit:
        raise Unreadable(
            STATUS_CANNOT_UNDERSTAND,
            f"the data set is encoded with explicit VR but the transfer syntax is {syntax.name}",
        )
    if not syntax.is_implicit_VR and not looks_explicit:
        raise Unreadable(
            STATUS_CANNOT_UNDERSTAND,
            f"the data set is encoded with implicit VR but the transfer syntax is {syntax.name}",
        )


def _convert_everything(ds: Dataset, size: int) -> None:
    """Every element's value lies within the file, and every sequence decodes, to its deepest
    item. Other values are not converted: that checks nothing more and would have pydicom
    log the odd ones (a patient's name among them)."""
    for tag in list(ds.keys()):
        raw = ds._dict[tag]
        length = getattr(raw, "length", None)
        tell = getattr(raw, "value_tell", None)
        if length not in (None, _UNDEFINED_LENGTH) and tell is not None and tell + length > size:
            raise Unreadable(
                STATUS_CANNOT_UNDERSTAND,
                f"element {tag} declares {length} bytes but the data set ends "
                f"{max(size - tell, 0)} bytes after its start",
            )
        if getattr(raw, "value", 0) is None:
            continue  # deferred: a large value, not read
        if _is_sequence(raw):
            for item in ds[tag].value:
                _convert_everything(item, size)


def _is_sequence(raw: object) -> bool:
    vr = getattr(raw, "VR", None)
    if vr is None:  # implicit VR: the dictionary says
        try:
            vr = dictionary_VR(raw.tag)  # type: ignore[attr-defined]
        except KeyError:
            return False
    return vr == "SQ"


def _check_pixel_data(ds: Dataset, header: ReceivedHeader) -> None:
    """An image's pixel data holds at least Rows × Columns × samples × frames × bits; a CT
    image has pixel data and a geometry."""
    has_pixels = _PIXEL_DATA in ds._dict
    if header.is_ct:
        missing = [k for k in ("Rows", "Columns", "BitsAllocated") if k not in ds]
        if not has_pixels:
            missing.append("PixelData")
        if missing:
            raise Unreadable(
                STATUS_DOES_NOT_MATCH_SOP_CLASS,
                f"a CT image without {', '.join(missing)}",
            )
    if not has_pixels:
        return
    raw = ds._dict[_PIXEL_DATA]
    length = getattr(raw, "length", None)
    if length is None or length == _UNDEFINED_LENGTH:
        return  # encapsulated: its fragments were read to their delimiter
    expected = _expected_pixel_bytes(ds, header.frames)
    if expected is not None and length < expected:
        raise Unreadable(
            STATUS_CANNOT_UNDERSTAND,
            f"Pixel Data holds {length} bytes; Rows x Columns x SamplesPerPixel x frames x "
            f"BitsAllocated needs {expected}",
        )


def _expected_pixel_bytes(ds: Dataset, frames: int) -> int | None:
    if not all(k in ds for k in ("Rows", "Columns", "BitsAllocated")):
        return None
    bits = frames
    for keyword in ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel"):
        bits *= _single_number(ds, keyword) if keyword in ds else 1
    return (bits + 7) // 8


def _single_number(ds: Dataset, keyword: str) -> int:
    """The element's one integer value, or :class:`Unreadable` naming the element."""
    tag = Tag(keyword)
    try:
        value = ds[tag].value
        if isinstance(value, bytes | list | tuple) or value is None:
            raise ValueError(f"{value!r:.40}")
        return int(value)
    except Exception as exc:
        reason = _undecodable(exc)
        if reason.startswith("the data set"):  # pydicom named no element
            reason = f"{keyword} {tag} is not a single number: {printable(str(exc))[:80]}"
        raise Unreadable(STATUS_CANNOT_UNDERSTAND, reason) from None
