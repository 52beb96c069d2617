"""Head motion: rigid in-plane registration of every frame to a reference, and its correction.

A head moves as one rigid body; in a perfusion scan (5 mm slices, 40 frames) the in-plane part
(translation along x and y, rotation about the table axis) dominates and is what can be undone
without through-plane interpolation. Each frame is reduced to one 2-D image — the mean over the
slices of the HU clipped to [−200, 300] HU, so that skull and scalp edges dominate and the
contrast bolus hardly changes it — and registered to the temporal median of those images (the
position the head holds most of the time) by phase correlation (translation, sub-pixel) over a
coarse-to-fine search of the rotation. The frames that moved are then refined by least squares
on images that keep the bone (to a few hundredths of a pixel and degree), and resampled with the
soft tissue interpolated from soft tissue only, so that no bone is smeared into the cortex.
Frames whose best alignment still correlates poorly with the reference (through-plane motion, a
new anatomy) cannot be corrected: they are replaced by interpolation in time between their valid
neighbours. Axis order ``(t, z, y, x)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import fft, ndimage, optimize

from ctp_node.perfusion.acquisition import Acquisition
from ctp_node.perfusion.result import PerfusionResult

#: Registration images are at most this many pixels wide (speed; edges suffice).
_REGISTRATION_PIXELS = 128
#: Displacements below this, in pixels of the acquisition, are left uncorrected.
_MIN_CORRECTION_PX = 0.2
#: A frame whose misfit to the reference after alignment exceeds this many times the median
#: misfit of all frames is not the same anatomy (through-plane motion) and is excluded.
_MAX_MISFIT_RATIO = 4.0
#: ... and is at least this (a correlation below 0.995). A head that moved in plane is never
#: sampled exactly as the still head was: registered, its misfit is small (0.001–0.002 on the
#: independent phantom) but above that of frames that did not move (~0); through-plane motion
#: of 2 % of the head's size gives 0.016.
_MIN_EXCLUDED_MISFIT = 0.005
#: Above this HU a voxel is bone or a bright vessel, never enhancing soft tissue.
_SHARP_HU = 300.0
#: Rotations searched, ± degrees.
_MAX_ROTATION_DEG = 8.0
#: The refinement's images: at most this many pixels wide, HU clipped to this range only
#: (bone, the most rigid and brightest part of the head, then dominates), smoothed by this σ
#: in pixels (a smooth misfit surface), and compared over the head (reference above this HU).
_REFINE_PIXELS = 256
_REFINE_CLIP_HU = (-1000.0, 2000.0)
_REFINE_SIGMA_PX = 1.0
_REFINE_HEAD_HU = -100.0


@dataclass(frozen=True)
class MotionEstimate:
    """Per-frame rigid in-plane motion relative to the reference position.

    Attributes
    ----------
    shift_mm : ``(t, 2)`` translation along y and x, mm.
    rotation_deg : ``(t,)`` rotation about the image centre, degrees.
    displacement_mm : ``(t,)`` mean displacement of the head's voxels, mm.
    corrected : bool ``(t,)``, frames that were resampled.
    excluded : bool ``(t,)``, frames that could not be corrected (interpolated in time).
    """

    shift_mm: np.ndarray
    rotation_deg: np.ndarray
    displacement_mm: np.ndarray
    corrected: np.ndarray
    excluded: np.ndarray


def _registration_images(
    hu: np.ndarray, pixels: int = _REGISTRATION_PIXELS, clip_hu: tuple[float, float] = (-200, 300)
) -> tuple[np.ndarray, int]:
    """``(t, y', x')`` slice-mean of HU clipped to ``clip_hu``, binned to at most ``pixels``."""
    n_t, _, ny, nx = hu.shape
    factor = max(1, int(np.ceil(max(ny, nx) / pixels)))
    cy, cx = ny // factor, nx // factor
    out = np.empty((n_t, cy, cx), np.float32)
    for t in range(n_t):
        image = np.clip(hu[t], *clip_hu).mean(axis=0)
        out[t] = image[: cy * factor, : cx * factor].reshape(cy, factor, cx, factor).mean((1, 3))
    return out, factor


def _rotate(images: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rotate ``(..., y, x)`` images about their centre (linear interpolation)."""
    if angle_deg == 0:
        return images
    return ndimage.rotate(images, angle_deg, axes=(-1, -2), reshape=False, order=1, mode="nearest")


def _phase_correlation(spectra: np.ndarray, reference: np.ndarray, shape: tuple[int, int]):
    """Peak height and sub-pixel shift ``(dy, dx)`` aligning each image to the reference."""
    cross = reference[None] * np.conj(spectra)
    cross /= np.maximum(np.abs(cross), 1e-12)
    surface = fft.irfft2(cross, s=shape)
    n = surface.shape[0]
    flat = surface.reshape(n, -1).argmax(axis=1)
    iy, ix = np.unravel_index(flat, shape)
    rows = np.arange(n)
    peak = surface[rows, iy, ix]

    def refine(minus: np.ndarray, plus: np.ndarray) -> np.ndarray:
        curvature = minus - 2 * peak + plus
        return np.where(
            curvature < 0, 0.5 * (minus - plus) / np.where(curvature < 0, curvature, -1), 0
        )

    dy = iy + refine(surface[rows, (iy - 1) % shape[0], ix], surface[rows, (iy + 1) % shape[0], ix])
    dx = ix + refine(surface[rows, iy, (ix - 1) % shape[1]], surface[rows, iy, (ix + 1) % shape[1]])
    dy = np.where(dy > shape[0] / 2, dy - shape[0], dy)
    dx = np.where(dx > shape[1] / 2, dx - shape[1], dx)
    return peak, np.stack([dy, dx], axis=1)


def _poorly_aligned(
    images: np.ndarray, reference: np.ndarray, rotation_deg: np.ndarray, shift_px: np.ndarray
) -> np.ndarray:
    """Frames that still differ from the reference after alignment, bool ``(t,)``.

    The misfit is ``1 − correlation`` of the aligned and reference images (both slightly
    smoothed); a frame is poorly aligned when its misfit exceeds ``_MAX_MISFIT_RATIO`` times
    that of its neighbouring frames (and of the median frame) and ``_MIN_EXCLUDED_MISFIT``,
    or when its rotation lies at the edge of the search range (the true motion is larger than
    can be measured).
    """
    smooth_ref = ndimage.gaussian_filter(reference, 1.0)
    ref = smooth_ref - smooth_ref.mean()
    misfit = np.empty(images.shape[0])
    for t, image in enumerate(images):
        a = ndimage.gaussian_filter(_aligned(image, rotation_deg[t], shift_px[t]), 1.0)
        a = a - a.mean()
        misfit[t] = 1.0 - float((a * ref).sum() / np.sqrt((a * a).sum() * (ref * ref).sum()))
    # The bolus changes the images slowly over frames; a frame that cannot be aligned stands
    # out against its neighbours (the frame itself left out of their median).
    n = misfit.size
    local = np.array(
        [np.median(np.r_[misfit[max(0, t - 3) : t], misfit[t + 1 : t + 4]]) for t in range(n)]
    )
    floor = max(float(np.median(misfit)), 1e-6)
    poor = (misfit > _MAX_MISFIT_RATIO * np.maximum(local, floor)) & (misfit > _MIN_EXCLUDED_MISFIT)
    return poor | (np.abs(rotation_deg) >= _MAX_ROTATION_DEG - 0.5)


def _refine(
    hu: np.ndarray, frames: np.ndarray, rotation_deg: np.ndarray, shift_px: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The rigid motion (rotation in degrees, shift in pixels of ``hu``) of ``frames``, refined
    from the estimate by least squares: each frame aligned as :func:`correct_motion` aligns it
    is compared with the temporal median over the head, and (rotation, dy, dx) minimise the
    squared difference (scipy's least squares).

    Phase correlation on the clipped, binned images leaves errors of a few tenths of a pixel
    and of a degree; at the skull and at the vessels (the AIF, the sinus of the VOF) such an
    error moves hundreds of HU into or out of the curves of the frames it affects."""
    rotation_deg, shift_px = rotation_deg.copy(), shift_px.copy()
    if frames.size == 0:
        return rotation_deg, shift_px
    images, factor = _registration_images(hu, _REFINE_PIXELS, _REFINE_CLIP_HU)
    images = ndimage.gaussian_filter(images, (0, _REFINE_SIGMA_PX, _REFINE_SIGMA_PX))
    reference = np.median(images, axis=0)
    head = reference > _REFINE_HEAD_HU
    for t in frames:

        def residual(p: np.ndarray, t: int = t) -> np.ndarray:
            return (_aligned(images[t], p[0], p[1:]) - reference)[head]

        start = np.r_[rotation_deg[t], shift_px[t] / factor]
        best = optimize.least_squares(residual, start, diff_step=1e-3, xtol=1e-4)
        if 2 * best.cost < np.sum(np.square(residual(start))):
            rotation_deg[t], shift_px[t] = best.x[0], best.x[1:] * factor
    return rotation_deg, shift_px


def estimate_motion(
    hu: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    max_rotation_deg: float = _MAX_ROTATION_DEG,
) -> MotionEstimate:
    """Rigid in-plane motion of every frame of ``hu`` ``(t, z, y, x)`` (nothing corrected)."""
    images, factor = _registration_images(hu)
    n_t, ny, nx = images.shape
    window = np.outer(np.hanning(ny), np.hanning(nx)).astype(np.float32)
    reference = np.median(images, axis=0)
    level = float(np.median(reference))
    ref_spectrum = fft.rfft2((reference - level) * window)

    def evaluate(angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        peaks = np.empty((n_t, angles.shape[1]))
        shifts = np.empty((n_t, angles.shape[1], 2))
        for t in range(n_t):
            rotated = np.stack([_rotate(images[t], a) for a in angles[t]])
            spectra = fft.rfft2((rotated - level) * window)
            peaks[t], shifts[t] = _phase_correlation(spectra, ref_spectrum, (ny, nx))
        return peaks, shifts

    coarse = np.linspace(-max_rotation_deg, max_rotation_deg, 9)
    peaks, _ = evaluate(np.broadcast_to(coarse, (n_t, coarse.size)))
    best = coarse[peaks.argmax(axis=1)]
    step = coarse[1] - coarse[0]
    fine = best[:, None] + np.linspace(-step, step, 9)[None]
    peaks, shifts = evaluate(fine)
    i = np.clip(peaks.argmax(axis=1), 1, fine.shape[1] - 2)
    rows = np.arange(n_t)
    left, centre, right = peaks[rows, i - 1], peaks[rows, i], peaks[rows, i + 1]
    curvature = left - 2 * centre + right
    offset = np.where(
        curvature < 0, 0.5 * (left - right) / np.where(curvature < 0, curvature, -1), 0
    )
    offset = np.clip(offset, -1, 1)
    fine_step = fine[0, 1] - fine[0, 0]
    rotation = fine[rows, i] + offset * fine_step
    shift_px = shifts[rows, i]
    moved = _moved_px(rotation, shift_px * factor, hu.shape[-2:]) > _MIN_CORRECTION_PX
    rotation, shift_px = _refine(hu, np.flatnonzero(moved), rotation, shift_px * factor)
    shift_px /= factor

    spacing = np.asarray(pixel_spacing_mm, float) * factor
    shift_mm = shift_px * spacing
    # The registration image was rotated by +θ and then shifted: the frame's head sits at
    # the reference rotated by −θ and shifted by −shift.
    head = reference > 0.5 * (reference.max() + reference.min()) - 150
    ys, xs = np.nonzero(head)
    if ys.size == 0:
        ys, xs = np.nonzero(np.ones_like(reference, bool))
    py = (ys - (ny - 1) / 2) * spacing[0]
    px = (xs - (nx - 1) / 2) * spacing[1]
    theta = np.deg2rad(rotation)[:, None]
    moved_y = np.cos(theta) * py[None] + np.sin(theta) * px[None] - py[None] + shift_mm[:, :1]
    moved_x = -np.sin(theta) * py[None] + np.cos(theta) * px[None] - px[None] + shift_mm[:, 1:]
    displacement = np.hypot(moved_y, moved_x).mean(axis=1)
    excluded = _poorly_aligned(images, reference, rotation, shift_px)
    return MotionEstimate(
        shift_mm=shift_mm,
        rotation_deg=rotation,
        displacement_mm=displacement,
        corrected=np.zeros(n_t, bool),
        excluded=excluded,
    )


def _aligned(frame: np.ndarray, rotation_deg: float, shift_px: np.ndarray) -> np.ndarray:
    """``frame`` ``(..., y, x)`` registered back to the reference position, as estimated:
    output(p) = frame(R(−θ)·(p − c) + c − shift), the rotation about the image centre c
    (linear interpolation)."""
    ny, nx = frame.shape[-2:]
    centre = np.array([(ny - 1) / 2, (nx - 1) / 2])
    theta = np.deg2rad(rotation_deg)
    rot = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
    matrix = np.eye(frame.ndim)
    matrix[-2:, -2:] = rot
    offset = np.zeros(frame.ndim)
    offset[-2:] = centre - rot @ (centre + shift_px)
    return ndimage.affine_transform(
        frame, matrix, offset=offset, order=1, mode="nearest", output=np.float32
    )


def _moved_px(rotation_deg: np.ndarray, shift_px: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A bound on how far, in pixels, each frame's rigid motion moves the head's voxels (the
    shift plus the rotation's arc at a quarter of the image's diagonal)."""
    half_diagonal_px = 0.5 * np.hypot(*shape)
    return np.hypot(*shift_px.T) + np.deg2rad(np.abs(rotation_deg)) * 0.5 * half_diagonal_px


def _aligned_tissue(frame: np.ndarray, rotation_deg: float, shift_px: np.ndarray) -> np.ndarray:
    """:func:`_aligned`, with the soft tissue interpolated from soft tissue only.

    Interpolating between a bone voxel (1000–2000 HU) and the brain beside it puts tens of HU
    of bone into the cortex's curve in every corrected frame, more than the contrast adds to
    it: the frames that moved then read as late enhancement. Where most of a voxel's
    interpolation weight lies on voxels below ``_SHARP_HU``, only those are used (normalised
    interpolation); bone and bright vessels keep the plain interpolation."""
    plain = _aligned(frame, rotation_deg, shift_px)
    soft = (frame < _SHARP_HU).astype(np.float32)
    weight = _aligned(soft, rotation_deg, shift_px)
    values = _aligned(frame * soft, rotation_deg, shift_px)
    inside = weight > 0.5
    plain[inside] = values[inside] / weight[inside]
    return plain


def correct_motion(
    acquisition: Acquisition, *, in_place: bool = False
) -> tuple[Acquisition, MotionEstimate]:
    """The acquisition with every moved frame registered back to the reference position.

    Frames that moved less than a fifth of a pixel are left as they are; frames that cannot be
    registered are replaced by linear interpolation in time of the nearest valid frames. The
    input is not modified (a copy is made when any frame changes) unless ``in_place``: then
    its frames are replaced where they are, without a second array of the acquisition's size.
    """
    hu = acquisition.hu
    estimate = estimate_motion(hu, acquisition.pixel_spacing_mm)
    spacing = np.asarray(acquisition.pixel_spacing_mm, float)
    moved_px = _moved_px(estimate.rotation_deg, estimate.shift_mm / spacing, hu.shape[-2:])
    correct = (moved_px > _MIN_CORRECTION_PX) & ~estimate.excluded
    excluded = estimate.excluded.copy()
    if excluded.all():
        excluded[:] = False
    if not correct.any() and not excluded.any():
        return acquisition, estimate
    out = hu if in_place else hu.copy()
    for t in np.flatnonzero(correct):
        out[t] = _aligned_tissue(hu[t], estimate.rotation_deg[t], estimate.shift_mm[t] / spacing)
    if excluded.any():
        valid = np.flatnonzero(~excluded)
        times = acquisition.times_s
        for t in np.flatnonzero(excluded):
            after = valid[valid > t]
            before = valid[valid < t]
            if before.size and after.size:
                a, b = before[-1], after[0]
                w = (times[t] - times[a]) / (times[b] - times[a])
                out[t] = (1 - w) * out[a] + w * out[b]
            else:
                out[t] = out[before[-1] if before.size else after[0]]
    estimate = replace(estimate, corrected=correct, excluded=excluded)
    return replace(acquisition, hu=out), estimate


def with_motion(result: PerfusionResult, moved: MotionEstimate, limit_mm: float) -> PerfusionResult:
    """The result with the measured motion and, when the head moved visibly, a warning."""
    warnings = list(result.warnings)
    largest = float(moved.displacement_mm.max()) if moved.displacement_mm.size else 0.0
    excluded = tuple(int(i) for i in np.flatnonzero(moved.excluded))
    if largest > limit_mm:
        warnings.append(
            f"Head motion up to {largest:.1f} mm (limit {limit_mm:g} mm) in "
            f"{int((moved.displacement_mm > limit_mm).sum())} of {moved.displacement_mm.size} "
            "images; the frames were registered in-plane, but the maps may be degraded."
        )
    if excluded:
        warnings.append(
            f"{len(excluded)} image(s) could not be registered (through-plane motion?) and were "
            "replaced by interpolation in time: " + ", ".join(str(i) for i in excluded) + "."
        )
    return replace(
        result,
        warnings=tuple(warnings),
        motion_mm=moved.displacement_mm.astype(np.float32),
        motion_corrected_frames=tuple(int(i) for i in np.flatnonzero(moved.corrected)),
        motion_excluded_frames=excluded,
    )
