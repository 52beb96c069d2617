"""Processing resolution: fine in-plane voxels are averaged in blocks before curve analysis.

A 512 × 512 reconstruction with 0.43 mm pixels has four times the voxels of the same field of
view at 0.86 mm, each four times noisier, while the perfusion maps are limited by noise and the
slice thickness (≥ 5 mm), not by the pixel size. Averaging ``f × f`` blocks of pixels first (as
commercial software processes at a reduced matrix) divides the work by ``f²`` and the noise σ by
``f``; the maps and masks are then replicated back onto the acquisition's grid, so every output
keeps the acquisition's geometry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from ctp_node.perfusion.acquisition import Acquisition
from ctp_node.perfusion.lesions import stroke
from ctp_node.perfusion.parameters import PerfusionParameters
from ctp_node.perfusion.prepare import features, masks
from ctp_node.perfusion.result import InputCurve, PerfusionResult, Permeability


def block_factor(pixel_spacing_mm: tuple[float, float], processing_pixel_mm: float) -> int:
    """Largest integer ``f`` such that ``f`` pixels are at most ``processing_pixel_mm`` wide
    (at least 1: pixels coarser than that are never merged)."""
    finest = min(pixel_spacing_mm)
    if processing_pixel_mm <= 0 or finest <= 0:
        return 1
    return max(1, int(np.floor(processing_pixel_mm / finest + 1e-6)))


def bin_acquisition(acquisition: Acquisition, factor: int) -> Acquisition:
    """The acquisition with in-plane ``factor × factor`` blocks averaged (edge blocks padded
    by repeating the last row/column)."""
    if factor <= 1:
        return acquisition
    hu = acquisition.hu
    nt, nz, ny, nx = hu.shape
    py, px = -ny % factor, -nx % factor
    if py or px:
        hu = np.pad(hu, ((0, 0), (0, 0), (0, py), (0, px)), mode="edge")
    cy, cx = hu.shape[2] // factor, hu.shape[3] // factor
    binned = np.empty((nt, nz, cy, cx), np.float32)
    weight = np.float32(1.0 / factor**2)
    rows = np.empty((nz, cy, hu.shape[3]), np.float32)
    for t in range(nt):  # frame by frame: no second full-size copy
        # Rows first (whole contiguous rows added), then the columns of the row-binned image.
        _add_parts(hu[t].reshape(nz, cy, factor, hu.shape[3]), 2, rows)
        frame = binned[t]
        _add_parts(rows.reshape(nz, cy, cx, factor), 3, frame)
        frame *= weight
    dy, dx = acquisition.pixel_spacing_mm
    return replace(acquisition, hu=binned, pixel_spacing_mm=(dy * factor, dx * factor))


def _add_parts(blocks: np.ndarray, axis: int, out: np.ndarray) -> None:
    """``out`` = the sum of ``blocks`` along ``axis``, one slice added at a time (numpy's
    own sum over a short axis is several times slower)."""
    for k, part in enumerate(np.moveaxis(blocks, axis, 0)):
        if k == 0:
            np.copyto(out, part)
        else:
            out += part


def coarse_location(zyx: tuple[int, int, int] | None, factor: int):
    """A voxel of the acquisition on the binned grid."""
    if zyx is None or factor <= 1:
        return zyx
    z, y, x = (int(v) for v in zyx)
    return z, y // factor, x // factor


def expand_result(
    result: PerfusionResult,
    factor: int,
    acquisition: Acquisition,
    parameters: PerfusionParameters,
    release_source: Callable[[], None] | None = None,
) -> PerfusionResult:
    """The result of a binned acquisition on ``acquisition``'s own ``(z, y, x)`` grid, its
    tissue judged again at those pixels (:func:`native_tissue`) and the volumes counted there;
    ``release_source`` is called once ``acquisition.hu`` has been read."""
    report = dict(result.parameters)
    report["processing_block_voxels"] = float(factor)
    if factor <= 1:
        return replace(result, parameters=report)
    shape = acquisition.hu.shape[1:]

    def up(image: np.ndarray) -> np.ndarray:
        nz, cy, cx = image.shape
        big = np.empty((nz, cy, factor, cx, factor), image.dtype)
        big[...] = image[:, :, None, :, None]  # one pass, no intermediate copy
        big = big.reshape(nz, cy * factor, cx * factor)
        return np.ascontiguousarray(big[:, : shape[1], : shape[2]])

    def curve(c: InputCurve | None) -> InputCurve | None:
        if c is None:
            return None
        offsets = np.array([(0, i, j) for i in range(factor) for j in range(factor)])
        voxels = (c.voxels_zyx[:, None, :] * [1, factor, factor] + offsets[None]).reshape(-1, 3)
        inside = (voxels[:, 1] < shape[1]) & (voxels[:, 2] < shape[2])
        return replace(c, voxels_zyx=voxels[inside])

    tissue = native_tissue(up(result.tissue_mask), acquisition, result, parameters)
    if release_source is not None:
        release_source()
    outside = ~tissue
    maps = {}
    for name, image in result.maps.items():
        maps[name] = up(image)
        maps[name][outside] = 0  # a new array: cleared in place
    core, tmax6, tmax10 = (
        up(m) & tissue for m in (result.core_mask, result.tmax6_mask, result.tmax10_mask)
    )
    return replace(
        result,
        maps=maps,
        tissue_mask=tissue,
        core_mask=core,
        tmax6_mask=tmax6,
        tmax10_mask=tmax10,
        volumes=stroke.stroke_volumes(core, tmax6, tmax10, acquisition.voxel_volume_ml, parameters),
        aif=curve(result.aif),
        vof=curve(result.vof),
        parameters=report,
        unsupported={name: up(mask) & tissue for name, mask in result.unsupported.items()},
        permeability=_expanded_permeability(result, up, tissue, acquisition.voxel_volume_ml),
    )


def _expanded_permeability(
    result: PerfusionResult, up: Callable, tissue: np.ndarray, voxel_ml: float
) -> Permeability | None:
    """The enhancing region on the acquisition's grid, within its tissue, and its volume."""
    if result.permeability is None:
        return None
    region = up(result.permeability.enhancing_mask) & tissue
    return replace(
        result.permeability, enhancing_mask=region, enhancing_ml=float(region.sum() * voxel_ml)
    )


def native_tissue(
    tissue: np.ndarray,
    acquisition: Acquisition,
    result: PerfusionResult,
    parameters: PerfusionParameters,
) -> np.ndarray:
    """The expanded tissue mask ``tissue`` without the pixels whose own pre-contrast
    attenuation is not parenchyma's.

    A block that straddles a sulcus or a ventricle's edge has the mean attenuation of tissue,
    and expanded it would count its CSF pixels as tissue — and as core, where the block's curve
    is faint (an independent 512 × 512 phantom: 13 ml of CSF and vessel in a 540 ml tissue
    mask, 0.5 ml of it core). Each pixel is kept only where its baseline (the mean of the
    ``baseline_frames`` of ``result``, at the acquisition's resolution) is parenchyma by
    :func:`masks.parenchyma_mask`, judged on the pixel itself when that baseline is quiet
    enough. The maps and the reference CBF stay those of the blocks.
    """
    frames = max(int(result.parameters.get("baseline_frames", 1)), 1)
    noise = features.image_noise_hu(acquisition.hu, tissue) / np.sqrt(frames)
    own = masks.parenchyma_mask(
        acquisition.hu[:frames].mean(axis=0, dtype=np.float32),
        parameters.tissue_min_hu,
        parameters.tissue_max_hu,
        tissue,
        baseline_noise_hu=noise or None,
    )
    return tissue & own
