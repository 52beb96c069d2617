"""The midline, the hemispheres and the per-map asymmetry on synthetic heads."""

from __future__ import annotations

import numpy as np
import pytest

from ctp_node.perfusion.asymmetry import (
    AsymmetryThresholds,
    EmptyHemisphereError,
    Midline,
    estimate_midline,
    hemispheric_asymmetry,
    patient_side_of_image_right,
    split_hemispheres,
)

LPS_AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def head(
    angle_deg: float,
    offset_yx_mm: tuple[float, float],
    spacing_mm: tuple[float, float] = (1.5, 1.5),
    shape: tuple[int, int, int] = (2, 128, 128),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A head symmetric about its own midline but not front to back (an egg with two
    ventricles, a frontal notch pair), turned by ``angle_deg`` and shifted: the HU image, the
    intracranial mask and the signed distance across the midline (mm, head frame)."""
    nz, ny, nx = shape
    y = (np.arange(ny) - (ny - 1) / 2) * spacing_mm[0] - offset_yx_mm[0]
    x = (np.arange(nx) - (nx - 1) / 2) * spacing_mm[1] - offset_yx_mm[1]
    y, x = np.meshgrid(y, x, indexing="ij")
    t = np.deg2rad(angle_deg)
    along, across = np.cos(t) * y + np.sin(t) * x, -np.sin(t) * y + np.cos(t) * x
    width = 60.0 + 8.0 * along / 80.0  # wider at the back: no front-back symmetry
    inside = (along / 80.0) ** 2 + (across / width) ** 2 <= 1.0
    image = np.where(inside, 35.0, -1000.0)
    ventricles = ((along + 5) / 18) ** 2 + ((np.abs(across) - 12) / 6) ** 2 <= 1
    image[ventricles & inside] = 5.0
    grey = inside & ((along / 70.0) ** 2 + (across / (width - 10)) ** 2 > 1.0)
    image[grey] = 45.0
    return (
        np.repeat(image[None], nz, 0),
        np.repeat(inside[None], nz, 0),
        np.repeat(across[None], nz, 0),
    )


@pytest.mark.parametrize(
    ("angle_deg", "offset_yx_mm", "spacing_mm"),
    [
        (0.0, (0.0, 0.0), (1.5, 1.5)),
        (12.0, (4.0, -9.0), (1.5, 1.5)),
        (-8.0, (0.0, 6.0), (1.2, 1.6)),
    ],
)
def test_a_turned_shifted_head_gives_its_midline_back(
    angle_deg: float, offset_yx_mm: tuple[float, float], spacing_mm: tuple[float, float]
) -> None:
    image, inside, _ = head(angle_deg, offset_yx_mm, spacing_mm)
    rng = np.random.default_rng(1)
    image = image + rng.normal(0, 5, image.shape)
    midline = estimate_midline(image, inside, spacing_mm)
    t = np.deg2rad(angle_deg)
    true_offset = -np.sin(t) * offset_yx_mm[0] + np.cos(t) * offset_yx_mm[1]
    assert midline.angle_deg == pytest.approx(angle_deg, abs=1.0)
    assert midline.offset_mm == pytest.approx(true_offset, abs=1.0)


def one_sided(increase_s: float, noise: float = 0.3):
    """An MTT map 4 s (+ ``increase_s`` on the head's image-right side) with noise, its tissue
    mask and the true midline of a head turned 10°."""
    _, inside, across = head(10.0, (3.0, -5.0))
    rng = np.random.default_rng(2)
    mtt = 4.0 + increase_s * (across > 0) + rng.normal(0, noise, inside.shape)
    cbf = 50.0 * 4.0 / mtt  # CBV kept: the flow falls as the transit time rises
    t = np.deg2rad(10.0)
    line = Midline(10.0, -np.sin(t) * 3.0 + np.cos(t) * -5.0, 1.0)
    return {"MTT": mtt, "delay": mtt, "cbf": cbf}, inside, line


def test_a_one_sided_mtt_prolongation_gives_the_side_the_difference_and_a_flag() -> None:
    maps, tissue, line = one_sided(2.0)
    halves = split_hemispheres(tissue, line, (1.5, 1.5), LPS_AXIAL)
    result = hemispheric_asymmetry(maps, halves)
    # image right is the patient's left in LPS: right − left is −2 s
    assert result["MTT"].difference == pytest.approx(-2.0, abs=0.1)
    assert result["MTT"].lower_side == "right"
    assert result["MTT"].flagged
    assert result["cbf"].lower_side == "left"
    assert result["cbf"].ratio == pytest.approx(4.0 / 6.0, abs=0.03)
    assert result["cbf"].flagged
    assert not result["delay"].flagged  # only the named time and flow maps are judged
    lenient = hemispheric_asymmetry(maps, halves, AsymmetryThresholds(2.5, 0.6))
    assert not lenient["MTT"].flagged and not lenient["cbf"].flagged


def test_sides_follow_the_direction_cosines() -> None:
    maps, tissue, line = one_sided(2.0)
    flipped = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert patient_side_of_image_right(LPS_AXIAL) == "left"
    assert patient_side_of_image_right(flipped) == "right"
    assert patient_side_of_image_right((0.0, 1.0, 0.0, 0.0, 0.0, -1.0)) is None
    right_is_right = hemispheric_asymmetry(
        maps, split_hemispheres(tissue, line, (1.5, 1.5), flipped)
    )
    assert right_is_right["MTT"].difference == pytest.approx(2.0, abs=0.1)
    unknown = hemispheric_asymmetry(maps, split_hemispheres(tissue, line, (1.5, 1.5)))
    assert set(unknown["MTT"].mean) == {"image left", "image right"}
    assert unknown["MTT"].difference == pytest.approx(2.0, abs=0.1)


def test_no_asymmetry_no_flag() -> None:
    maps, tissue, line = one_sided(0.0, noise=1.0)
    result = hemispheric_asymmetry(maps, split_hemispheres(tissue, line, (1.5, 1.5), LPS_AXIAL))
    assert not any(r.flagged for r in result.values())
    assert abs(result["MTT"].difference) < 0.1


def test_an_empty_hemisphere_is_a_clear_error() -> None:
    maps, tissue, _ = one_sided(2.0)
    far_right = Midline(0.0, 500.0, 1.0)
    halves = split_hemispheres(tissue, far_right, (1.5, 1.5), LPS_AXIAL)
    with pytest.raises(EmptyHemisphereError, match="left hemisphere holds no tissue"):
        hemispheric_asymmetry(maps, halves)
    with pytest.raises(EmptyHemisphereError, match="region is empty"):
        estimate_midline(maps["MTT"], np.zeros_like(tissue), (1.5, 1.5))
