"""The result's small parts a reader sees: where an input curve is said to be."""

from __future__ import annotations

import numpy as np

from ctp_node.perfusion.result import InputCurve


def curve(voxels: list[tuple[int, int, int]]) -> InputCurve:
    times = np.arange(5.0)
    return InputCurve("AIF", np.asarray(voxels), times, times, times, 1, 1.0)


def test_the_location_of_a_curve_is_one_of_its_voxels_on_its_main_slice() -> None:
    # Two arteries, one in each hemisphere, mostly on slice 3: their rounded mean (3, 50, 50)
    # is brain between them, no artery.
    left = [(3, 50, 20), (3, 51, 20), (3, 50, 21)]
    right = [(3, 50, 80), (3, 50, 79), (2, 50, 80)]
    centre = curve(left + right).centre_zyx
    assert centre in left + right
    assert centre[0] == 3
    assert centre != (3, 50, 50)


def test_the_location_of_a_single_voxel_curve_is_that_voxel() -> None:
    assert curve([(1, 2, 3)]).centre_zyx == (1, 2, 3)


def test_the_location_is_the_voxel_nearest_the_mean_on_the_main_slice() -> None:
    voxels = [(0, 10, 10), (0, 10, 11), (0, 10, 12), (1, 10, 11)]
    assert curve(voxels).centre_zyx == (0, 10, 11)
