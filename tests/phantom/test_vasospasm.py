"""The vasospasm phantom: one hemisphere's MTT prolonged, the head turned and shifted."""

from __future__ import annotations

import numpy as np
import pytest

from ctp_node.phantom.generator import PhantomSpec
from ctp_node.phantom.vasospasm import VasospasmSpec, make_vasospasm_phantom

QUICK = PhantomSpec(matrix=64, pixel_spacing_mm=3.44, slices=1, duration_s=30.0, noise_hu=0.0)


def test_the_affected_side_has_the_longer_mtt_and_the_head_its_pose() -> None:
    spec = VasospasmSpec(QUICK, mtt_increase_s=2.0, yaw_deg=10.0, offset_mm=(5.0, -8.0))
    truth = make_vasospasm_phantom(spec).truth
    affected = truth.affected_mask
    other = truth.tissue_mask & ~affected
    assert truth.mtt[affected].mean() - truth.mtt[other].mean() == pytest.approx(2.0, abs=0.05)
    # the head's centre of mass is where it was put, in mm from the image centre
    n, dx = QUICK.matrix, QUICK.pixel_spacing_mm
    zyx = np.argwhere(truth.intracranial_mask[0])
    centre = (zyx.mean(0) - (n - 1) / 2) * dx
    assert centre == pytest.approx(spec.offset_mm, abs=1.0)
    # the affected voxels lie on the +x side of the tilted midline
    t = np.deg2rad(spec.yaw_deg)
    y, x = (zyx - (n - 1) / 2).T * dx
    across = -np.sin(t) * y + np.cos(t) * x - truth.midline_offset_mm
    inside_affected = affected[0][tuple(zyx.T)]
    assert (across[inside_affected] > 0).all()


def test_without_an_increase_both_sides_are_equal() -> None:
    truth = make_vasospasm_phantom(VasospasmSpec(QUICK)).truth
    assert np.unique(truth.mtt[truth.tissue_mask]).tolist() == [4.0, 5.0]
