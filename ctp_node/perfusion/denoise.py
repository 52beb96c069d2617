"""Edge-preserving denoising of concentration curves: a time-profile bilateral filter (TIPS).

Each voxel becomes a weighted mean of its in-plane neighbours; the weight is a spatial Gaussian
times a Gaussian of the distance between the two time profiles, so neighbours across a tissue
boundary (different curves) hardly contribute. Loops over neighbour offsets only.
"""

from __future__ import annotations

import numpy as np


def tips(
    concentration: np.ndarray,
    mask: np.ndarray,
    radius: int,
    spatial_sigma_voxels: float,
    profile_sigma_hu: float,
) -> np.ndarray:
    """Filter one slice ``(t, y, x)`` of concentration curves; voxels outside ``mask`` neither
    change nor contribute. ``profile_sigma_hu`` is the profile-distance scale (RMS HU)."""
    if radius <= 0 or profile_sigma_hu <= 0 or not mask.any():
        return concentration
    # Work on the bounding box of the mask only (the brain is a fraction of the field of view).
    ys_, xs_ = np.nonzero(mask)
    box = (slice(ys_.min(), ys_.max() + 1), slice(xs_.min(), xs_.max() + 1))
    out = concentration.astype(np.float32, copy=True)
    out[:, box[0], box[1]] = _tips_box(
        out[:, box[0], box[1]], mask[box], radius, spatial_sigma_voxels, profile_sigma_hu
    )
    return out


def _tips_box(
    c: np.ndarray,
    mask: np.ndarray,
    radius: int,
    spatial_sigma_voxels: float,
    profile_sigma_hu: float,
) -> np.ndarray:
    nt, ny, nx = c.shape
    # Profile distance on temporally smoothed curves: less noisy, same shape.
    smooth = c.copy()
    smooth[1:-1] = (c[:-2] + c[1:-1] + c[2:]) / 3
    pad = radius
    c_pad = np.pad(c, ((0, 0), (pad, pad), (pad, pad)))
    s_pad = np.pad(smooth, ((0, 0), (pad, pad), (pad, pad)))
    m_pad = np.pad(mask, pad)
    total = np.zeros_like(c)
    scratch = np.empty_like(c)
    weights = np.zeros((ny, nx), np.float32)
    # Smoothed noise variance: 3-point mean of white noise has variance σ²/3 per frame.
    noise_floor = 2.0 * profile_sigma_hu**2 / 3.0 / 4.0
    scale = np.float32(1.0 / (profile_sigma_hu**2 / 3.0))
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx > radius * radius:
                continue
            spatial = np.float32(np.exp(-(dy * dy + dx * dx) / (2 * spatial_sigma_voxels**2)))
            ys, xs = slice(pad + dy, pad + dy + ny), slice(pad + dx, pad + dx + nx)
            diff = np.subtract(s_pad[:, ys, xs], smooth, out=scratch)
            np.multiply(diff, diff, out=diff)
            distance = diff.sum(axis=0) / np.float32(nt)
            w = spatial * np.exp(-np.maximum(distance - noise_floor, 0) * scale)
            w = np.where(m_pad[ys, xs] & mask, w, 0).astype(np.float32)
            np.multiply(c_pad[:, ys, xs], w, out=scratch)
            total += scratch
            weights += w
    out = c.copy()
    inside = weights > 0
    out[:, inside] = total[:, inside] / weights[inside]
    return out
