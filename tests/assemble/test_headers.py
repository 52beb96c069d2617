"""A header that cannot place an image is said in words, naming the file and the element."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from ctp_node.assemble.headers import UnreadableImageError, _plain_problem, image_refs


@pytest.mark.parametrize(
    ("exc", "said"),
    [
        (
            AttributeError("'FileDataset' object has no attribute 'FrameOfReferenceUID'"),
            "no Frame of Reference UID (0020,0052)",
        ),
        (KeyError(Tag("PixelSpacing")), "no Pixel Spacing (0028,0030)"),
        (
            ValueError("no AcquisitionDateTime, AcquisitionTime or ContentTime"),
            "image geometry or timing cannot be read: no AcquisitionDateTime, AcquisitionTime",
        ),
    ],
)
def test_a_library_error_becomes_words(exc: Exception, said: str) -> None:
    assert _plain_problem(exc).startswith(said)


def test_an_image_without_position_names_its_file_and_the_element() -> None:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    ds.Rows = ds.Columns = 16
    ds.AcquisitionTime = "120000"
    with pytest.raises(UnreadableImageError) as raised:
        image_refs(Path("/somewhere/IM0042.dcm"), ds)
    assert str(raised.value) == "file IM0042.dcm: no Image Position (Patient) (0020,0032)"
