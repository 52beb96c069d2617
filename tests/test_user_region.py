"""A region a person gives (``--region Z,Y,X,R``): parsed with clear errors, a sphere in mm
whatever the voxel spacing, refused when its centre lies outside the images; part of the
result's version only when given."""

from __future__ import annotations

import numpy as np
import pytest

from ctp_node.report.versions import content_digest
from ctp_node.user_region import UserRegion, parse_region


def test_parse_and_write_back() -> None:
    region = parse_region(" 3, 120,140 , 15 ")
    assert region == UserRegion((3, 120, 140), 15.0)
    assert region.text() == "3,120,140,15" and parse_region(region.text()) == region
    assert parse_region("") is None and parse_region(None) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3,120,140", "slice,row,column,radius_mm"),
        ("3,120,x,15", "slice,row,column,radius_mm"),
        ("3,120,140,0", "above 0 and at most 100 mm"),
        ("3,120,140,500", "above 0 and at most 100 mm"),
    ],
)
def test_a_wrong_region_is_a_sentence(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_region(text)


def test_the_sphere_is_in_mm_whatever_the_spacing() -> None:
    """Radius 5 mm on 0.5 mm pixels and 2 mm slices: the voxels within 5 mm of the centre,
    counted against the sphere's volume (4/3 π r³ = 523.6 mm³ = 1047 voxels of 0.5 mm³)."""
    region = UserRegion((10, 30, 30), 5.0)
    mask = region.mask((20, 60, 60), (0.5, 0.5), 2.0)
    assert abs(mask.sum() * 0.5 * 0.5 * 2.0 / (4 / 3 * np.pi * 125) - 1) < 0.05
    assert mask[10, 30, 30] and mask[10, 30, 39] and not mask[10, 30, 41]
    assert mask[12, 30, 30] and not mask[13, 30, 30]  # 4 mm in, 6 mm out along z


def test_a_centre_outside_the_images_is_named() -> None:
    region = UserRegion((9, 0, 0), 5.0)
    assert region.outside((10, 64, 64)) is None
    why = UserRegion((10, 0, 0), 5.0).outside((10, 64, 64))
    assert why is not None and "slice 0-9, row 0-63, column 0-63" in why


def test_a_region_changes_the_version_only_when_given() -> None:
    common = ("1.2.3", ["1.2.3.1", "1.2.3.2"])
    plain = content_digest(*common, algorithm_version="1")
    assert content_digest(*common, algorithm_version="1", region="") == plain
    assert content_digest(*common, algorithm_version="1", region="0,1,2,5") != plain
