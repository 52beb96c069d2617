"""Reading the receiver's facts from a header: tolerant of odd values, exact where it matters."""

from __future__ import annotations

import math

import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import CTImageStorage, EnhancedCTImageStorage, MRImageStorage

from ctp_node.receive.header import identity_problem, read_header


def _ct(**elements) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = "1.2.3"
    ds.StudyInstanceUID = "1.2"
    for keyword, value in elements.items():
        if isinstance(value, bytes):  # as received: converted (or not) when first read
            tag = Tag(keyword)
            ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(value), value, 0, True, True)
        else:
            setattr(ds, keyword, value)
    return ds


def test_slice_position_is_the_position_along_the_slice_normal() -> None:
    # Tilted 30° about x: rows along x, columns along (0, cos, -sin); normal (0, sin, cos).
    tilt = math.radians(30)
    header = read_header(
        _ct(
            ImagePositionPatient=[-100.0, 20.0, 40.0],
            ImageOrientationPatient=[1, 0, 0, 0, math.cos(tilt), -math.sin(tilt)],
        )
    )
    assert header.slice_position_mm == pytest.approx(20 * math.sin(tilt) + 40 * math.cos(tilt))
    assert header.frames == 1 and header.is_ct


def test_announced_size_is_read() -> None:
    header = read_header(_ct(NumberOfTemporalPositions=30, ImagesInAcquisition=480))
    assert (header.temporal_positions, header.images_in_acquisition) == (30, 480)


def test_multi_frame_objects_have_no_single_slice_position() -> None:
    ds = _ct(
        NumberOfFrames=16,
        ImagePositionPatient=[0, 0, 10],
        ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
    )
    ds.SOPClassUID = EnhancedCTImageStorage
    header = read_header(ds)
    assert (header.frames, header.slice_position_mm, header.is_ct) == (16, None, True)


@pytest.mark.parametrize(
    "elements",
    [
        {},
        {"ImagePositionPatient": [0, 0], "ImageOrientationPatient": [1, 0, 0, 0, 1, 0]},
        {"ImagePositionPatient": [0, 0, 1], "ImageOrientationPatient": [1, 0, 0, 0, 1]},
        {"ImagePositionPatient": b"0\\x\\1 ", "ImageOrientationPatient": [1, 0, 0, 0, 1, 0]},
        {"ImagePositionPatient": [0, 0, 1], "ImageOrientationPatient": b"1\\0\\0\\0\\1\\nan "},
    ],
)
def test_absent_or_odd_geometry_gives_no_position(elements) -> None:
    assert read_header(_ct(**elements)).slice_position_mm is None


def test_odd_counts_are_unknown_and_frames_default_to_one() -> None:
    header = read_header(
        _ct(NumberOfTemporalPositions=b"many", ImagesInAcquisition=b"0 ", NumberOfFrames=b"2.5 ")
    )
    assert header.temporal_positions is None and header.images_in_acquisition is None
    assert header.frames == 1


def test_uids_and_class_decide_acceptance() -> None:
    good = read_header(_ct())
    assert identity_problem(good, CTImageStorage) is None
    assert "does not match" in identity_problem(good, MRImageStorage)
    bad = read_header(_ct(SeriesInstanceUID="1.2.abc"))
    assert (
        identity_problem(bad, CTImageStorage) == "Series Instance UID is missing or not a valid UID"
    )
    assert not read_header(_ct(SOPClassUID=MRImageStorage)).is_ct
