"""Fine pixels are binned for processing and the outputs come back on the acquisition grid."""

from dataclasses import replace

import numpy as np
import pytest

from ctp_node.perfusion import compute_perfusion
from ctp_node.perfusion.resolution import bin_acquisition, block_factor
from ctp_node.phantom import PhantomSpec, make_phantom


def test_block_factor() -> None:
    assert block_factor((0.43, 0.43), 1.0) == 2
    assert block_factor((0.86, 0.86), 1.0) == 1
    assert block_factor((0.3, 0.3), 1.0) == 3
    assert block_factor((0.43, 0.43), 0.0) == 1


def test_binning_averages_blocks_and_scales_spacing() -> None:
    ph = make_phantom(PhantomSpec(matrix=33, slices=4, noise_hu=0.0, pixel_spacing_mm=6.0))
    acq = ph.acquisition
    binned = bin_acquisition(acq, 2)
    assert binned.hu.shape == (acq.hu.shape[0], 4, 17, 17)
    assert binned.pixel_spacing_mm == (12.0, 12.0)
    assert binned.hu[3, 1, 2, 5] == pytest.approx(acq.hu[3, 1, 4:6, 10:12].mean(), rel=1e-5)
    assert binned.voxel_volume_ml == pytest.approx(4 * acq.voxel_volume_ml)


def test_fine_acquisition_gives_full_size_maps_and_true_volumes() -> None:
    fine = make_phantom(PhantomSpec(matrix=512, slices=4, pixel_spacing_mm=0.43, noise_hu=2.0))
    res = compute_perfusion(fine.acquisition)
    assert res.parameters["processing_block_voxels"] == 2.0
    assert res.maps["CBF"].shape == res.tissue_mask.shape == (4, 512, 512)
    assert res.volumes.tmax6_ml == pytest.approx(fine.truth.tmax6_ml, rel=0.25)
    z, y, x = res.aif.voxels_zyx.T
    assert fine.truth.artery_mask[z, y, x].mean() > 0.5
    assert np.all(res.maps["CBF"][~res.tissue_mask] == 0)


def test_csf_pixels_inside_processing_blocks_are_not_counted_as_tissue() -> None:
    """A sulcus one acquisition pixel wide (CSF, no enhancement) on odd columns: every 2 × 2
    processing block it crosses is half tissue and reads as tissue; at the acquisition's own
    pixels the CSF is excluded again, and the volumes are counted at that voxel size."""
    fine = make_phantom(PhantomSpec(matrix=512, slices=4, pixel_spacing_mm=0.43, noise_hu=2.0))
    acq = fine.acquisition
    rng = np.random.default_rng(3)
    sulci = np.zeros(acq.hu.shape[1:], bool)
    sulci[:, 200:320, 241:290:8] = True  # one pixel wide, through both hemispheres' tissue
    sulci &= fine.truth.tissue_mask
    hu = acq.hu.copy()
    hu[:, sulci] = 5.0 + rng.normal(0, 2.0, (hu.shape[0], int(sulci.sum())))
    res = compute_perfusion(replace(acq, hu=hu))
    assert res.parameters["processing_block_voxels"] == 2.0
    # The blocks' tissue reaches the sulci (their neighbours in the block are tissue) ...
    beside = np.roll(sulci, 1, axis=2) & ~sulci
    assert res.tissue_mask[beside].mean() > 0.9
    # ... but the CSF pixels themselves are not tissue, nor have map values or lesion.
    assert res.tissue_mask[sulci].mean() < 0.02
    assert np.all(res.maps["CBF"][sulci & ~res.tissue_mask] == 0)
    assert not np.any(res.core_mask & ~res.tissue_mask)
    voxel_ml = acq.voxel_volume_ml
    assert res.volumes.core_ml == pytest.approx(res.core_mask.sum() * voxel_ml)
    assert res.volumes.tmax6_ml == pytest.approx(res.tmax6_mask.sum() * voxel_ml)


def _same_result(a, b) -> None:  # type: ignore[no-untyped-def]
    for name in a.maps:
        np.testing.assert_array_equal(a.maps[name], b.maps[name], err_msg=name)
    for mask in ("tissue_mask", "core_mask", "tmax6_mask", "tmax10_mask"):
        np.testing.assert_array_equal(getattr(a, mask), getattr(b, mask), err_msg=mask)
    assert a.volumes == b.volumes
    np.testing.assert_array_equal(a.aif.concentration_hu, b.aif.concentration_hu)


@pytest.mark.parametrize(
    "spec",
    [
        PhantomSpec(matrix=256, slices=4, pixel_spacing_mm=0.86, motion_mm=2.0, seed=4),
        PhantomSpec(matrix=512, slices=4, pixel_spacing_mm=0.43, motion_mm=2.0, seed=4),
    ],
    ids=["unbinned", "binned"],
)
def test_whole_hu_in_int16_give_the_same_result_as_float32(spec: PhantomSpec) -> None:
    """The loader keeps whole HU in int16 (half the memory of a wide-detector study); the
    engine's maps, masks, volumes and input curves are bit for bit those of float32 HU, with
    motion registered in place in the engine's own array."""
    phantom = make_phantom(spec).acquisition
    whole = replace(phantom, hu=np.rint(phantom.hu).astype(np.float32))
    as_int16 = replace(whole, hu=whole.hu.astype(np.int16))
    floats = compute_perfusion(whole)
    assert floats.motion_corrected_frames
    _same_result(compute_perfusion(as_int16), floats)
    np.testing.assert_array_equal(as_int16.hu, whole.hu)  # the caller's array is untouched
