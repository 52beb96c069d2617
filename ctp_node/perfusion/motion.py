"""Head motion: rigid in-plane registration of every frame to a reference, and its correction.

A head moves as one rigid body; in a perfusion scan (5 mm slices, 40 frames) the in-plane part
(translation along x and y, rotation about the table axis) dominates and is what can be undone
without through-plane interpolation. Each frame is reduced to one 2-D image — the mean over the
slices of the HU clipped to [−200, 300] HU, so that skull and scalp edges dominate and the
contrast bolus hardly changes it — and registered to the temporal median of those images (the
position the head holds most of the time) by phase correlation (translation, sub-pixel) over a
coarse-to-fine search of the rotation. Frames whose best alignment still correlates poorly with
the reference (through-plane motion, a new anatomy) cannot be corrected: they are replaced by
interpolation in time between their valid neighbours. Axis order ``(t, z, y, x)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import fft, ndimage

from ctp_node.perfusion.acquisition import Acquisition

#: Registration images are at most this many pixels wide (speed; edges suffice).
_REGISTRATION_PIXELS = 128
#: Displacements below this, in pixels of the acquisition, are left uncorrected.
_MIN_CORRECTION_PX = 0.2
#: A frame whose misfit to the reference after alignment exceeds this many times the median
#: misfit of all frames is not the same anatomy (through-plane motion) and is excluded.
_MAX_MISFIT_RATIO = 4.0
#: Rotations searched, ± degrees.
_MAX_ROTATION_DEG = 8.0


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


def _registration_images(hu: np.ndarray) -> tuple[np.ndarray, int]:
    """``(t, y', x')`` slice-mean of clipped HU, binned to at most ``_REGISTRATION_PIXELS``."""
    n_t, _, ny, nx = hu.shape
    factor = max(1, int(np.ceil(max(ny, nx) / _REGISTRATION_PIXELS)))
    cy, cx = ny // factor, nx // factor
    out = np.empty((n_t, cy, cx), np.float32)
    for t in range(n_t):
        image = np.clip(hu[t], -200.0, 300.0).mean(axis=0)
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
    that of its neighbouring frames (and of the median frame), or when its rotation lies at the
    edge of the search range (the true motion is larger than can be measured).
    """
    smooth_ref = ndimage.gaussian_filter(reference, 1.0)
    ref = smooth_ref - smooth_ref.mean()
    misfit = np.empty(images.shape[0])
    for t, image in enumerate(images):
        aligned = ndimage.shift(
            _rotate(image, rotation_deg[t]), shift_px[t], order=1, mode="nearest"
        )
        a = ndimage.gaussian_filter(aligned, 1.0)
        a = a - a.mean()
        misfit[t] = 1.0 - float((a * ref).sum() / np.sqrt((a * a).sum() * (ref * ref).sum()))
    # The bolus changes the images slowly over frames; a frame that cannot be aligned stands
    # out against its neighbours (the frame itself left out of their median).
    n = misfit.size
    local = np.array(
        [np.median(np.r_[misfit[max(0, t - 3) : t], misfit[t + 1 : t + 4]]) for t in range(n)]
    )
    floor = max(float(np.median(misfit)), 1e-6)
    return (misfit > _MAX_MISFIT_RATIO * np.maximum(local, floor)) | (
        np.abs(rotation_deg) >= _MAX_ROTATION_DEG - 0.5
    )


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


def correct_motion(acquisition: Acquisition) -> tuple[Acquisition, MotionEstimate]:
    """The acquisition with every moved frame registered back to the reference position.

    Frames that moved less than a fifth of a pixel are left as they are; frames that cannot be
    registered are replaced by linear interpolation in time of the nearest valid frames. The
    input is never modified (a copy is made when any frame changes).
    """
    hu = acquisition.hu
    estimate = estimate_motion(hu, acquisition.pixel_spacing_mm)
    spacing = np.asarray(acquisition.pixel_spacing_mm, float)
    _, _, ny, nx = hu.shape
    half_diagonal_px = 0.5 * np.hypot(ny, nx)
    moved_px = (
        np.hypot(*(estimate.shift_mm / spacing).T)
        + np.deg2rad(np.abs(estimate.rotation_deg)) * 0.5 * half_diagonal_px
    )
    correct = (moved_px > _MIN_CORRECTION_PX) & ~estimate.excluded
    excluded = estimate.excluded.copy()
    if excluded.all():
        excluded[:] = False
    if not correct.any() and not excluded.any():
        return acquisition, estimate
    out = hu.copy()
    centre = np.array([(ny - 1) / 2, (nx - 1) / 2])
    for t in np.flatnonzero(correct):
        theta = np.deg2rad(estimate.rotation_deg[t])
        # output(p) = frame(R(−θ)·(p − c) + c − shift): rotate by θ, then shift (as estimated).
        rot = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
        shift_px = estimate.shift_mm[t] / spacing
        matrix = np.eye(3)
        matrix[1:, 1:] = rot
        offset = np.zeros(3)
        offset[1:] = centre - rot @ (centre + shift_px)
        out[t] = ndimage.affine_transform(
            hu[t], matrix, offset=offset, order=1, mode="nearest", output=np.float32
        )
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
