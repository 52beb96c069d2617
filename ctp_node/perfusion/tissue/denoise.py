"""Edge-preserving denoising of concentration curves: a time-profile bilateral filter (TIPS).

Each voxel becomes a weighted mean of its in-plane neighbours; the weight is a spatial Gaussian
times a Gaussian of the distance between the two time profiles, so neighbours across a tissue
boundary (different curves) hardly contribute. The profiles are given by their coefficients in
an orthonormal temporal basis (:mod:`ctp_node.perfusion.tissue.compress`): distances and
weighted means are the same as on the curves themselves, at a fraction of the cost. The weight
of a pair of voxels is symmetric, so it is computed once per pair of opposite offsets. Loops
over neighbour offsets only, each on contiguous memory.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ctp_node.perfusion.prepare.masks import in_plane_box


def tips(
    profiles: np.ndarray,
    mask: np.ndarray,
    radius: int,
    spatial_sigma_voxels: float,
    profile_sigma_hu: float,
    noise_distance_hu2: float = 0.0,
    frames: int = 1,
    guide_window: int = 3,
    guide_weights: np.ndarray | None = None,
) -> np.ndarray:
    """Filter one slice ``(c, y, x)`` of profiles; voxels outside ``mask`` neither change nor
    contribute.

    Parameters
    ----------
    profiles : curves ``(t, y, x)`` or their basis coefficients ``(r, y, x)``, HU.
    mask : bool ``(y, x)``, the voxels to filter.
    radius : neighbourhood radius in voxels (disc).
    spatial_sigma_voxels : width of the spatial Gaussian, voxels.
    profile_sigma_hu : width of the profile Gaussian, RMS HU per frame.
    noise_distance_hu2 : expected mean squared profile distance (HU² per frame) of two voxels
        with the same underlying curve; distances up to it count as equal.
    frames : number of frames the squared distance is averaged over (the curve length).
    guide_window : likeness is judged on the means of this many voxels square (3: raw, noisy
        curves); 1 judges each voxel's own curve (already denoised ones). A pair of voxels is
        compared on windows that do not overlap: each voxel's window is moved away from the
        other by half its width. Overlapping windows would share most of their voxels (six of
        nine for neighbours), so that two neighbours on either side of a tissue boundary would
        look alike — their difference diluted to a third and below the noise allowance, which
        assumes independent means — and the boundary would be blurred.
    guide_weights : ``(c,)`` weight of each coefficient in the squared distance (default 1);
        ``noise_distance_hu2`` must then be the weighted distance's.
    """
    if radius <= 0 or profile_sigma_hu <= 0 or not mask.any():
        return profiles
    # Work on the bounding box of the mask only (the brain is a fraction of the field of view).
    box = in_plane_box(mask)
    out = profiles.astype(np.float32, copy=True)
    out[:, box[0], box[1]] = _tips_box(
        out[:, box[0], box[1]],
        mask[box],
        radius,
        spatial_sigma_voxels,
        profile_sigma_hu,
        noise_distance_hu2,
        frames,
        guide_window,
        guide_weights,
    )
    return out


def tips_rows(rows: np.ndarray, mask: np.ndarray, radius: int, *args, **kwargs) -> np.ndarray:
    """:func:`tips` on the coefficients ``(n, r)`` of the ``n`` voxels of one slice's
    ``mask`` (C order), returned in the same layout; further arguments as :func:`tips`."""
    image = np.zeros((rows.shape[1], *mask.shape), np.float32)
    image[:, mask] = rows.T
    return tips(image, mask, radius, *args, **kwargs)[:, mask].T


def _half_offsets(radius: int) -> list[tuple[int, int]]:
    """One offset of every opposite pair inside the disc (the centre excluded)."""
    return [
        (dy, dx)
        for dy in range(0, radius + 1)
        for dx in range(-radius, radius + 1)
        if (dy > 0 or dx > 0) and dy * dy + dx * dx <= radius * radius
    ]


def _guide(
    c: np.ndarray, mask: np.ndarray, guide_window: int, guide_weights: np.ndarray | None
) -> np.ndarray:
    """The profiles similarity is judged on: ``c`` itself, or local means of the profiles (a
    cross-bilateral guide; a single raw voxel's profile is too noisy to tell core from
    penumbra, nine are not), each component weighted by ``guide_weights``."""
    guide = c
    if guide_window > 1:
        size = (1, guide_window, guide_window)
        inside = ndimage.uniform_filter(mask.astype(np.float32), guide_window, mode="constant")
        guide = ndimage.uniform_filter(c, size, mode="constant") / np.maximum(inside, 1e-6)
        guide = np.where(mask, guide, 0).astype(np.float32)
    if guide_weights is not None:
        guide = guide * np.sqrt(guide_weights, dtype=np.float32)[:, None, None]
    return guide


def _tips_box(
    c: np.ndarray,
    mask: np.ndarray,
    radius: int,
    spatial_sigma_voxels: float,
    profile_sigma_hu: float,
    noise_distance_hu2: float,
    frames: int,
    guide_window: int,
    guide_weights: np.ndarray | None,
) -> np.ndarray:
    n_c, ny, nx = c.shape
    shift = guide_window // 2
    pad = radius + shift
    width = nx + 2 * pad
    c = np.where(mask, c, 0).astype(np.float32)
    guide = _guide(c, mask, guide_window, guide_weights)

    # Padded images flattened row by row: the neighbour at (dy, dx) of every voxel is then
    # the one `dy · width + dx` further on, and each offset works on contiguous memory. The
    # padding (≥ radius + shift on every side) keeps every neighbour of a box voxel in its
    # own row, never wrapped into the next.
    def flat(image: np.ndarray) -> np.ndarray:
        return np.pad(image, ((0, 0), (pad, pad), (pad, pad))).reshape(image.shape[0], -1)

    c_flat = flat(c)
    g_flat = c_flat if guide is c else flat(guide)
    m_flat = flat(mask[None].astype(np.float32))[0]
    g_norm = np.einsum("cn,cn->n", g_flat, g_flat)
    start, n = pad * width, ny * width  # the box's rows
    here = slice(start, start + n)
    total = c_flat.copy()  # the centre voxel, weight 1
    weights = m_flat.copy()
    scratch = np.empty((n_c, n), np.float32)
    distance = np.empty(n, np.float32)
    pair = np.empty(n, np.float32)
    inv_frames = np.float32(1.0 / max(frames, 1))
    scale = np.float32(1.0 / profile_sigma_hu**2)
    for dy, dx in _half_offsets(radius):
        spatial = np.float32(np.exp(-(dy * dy + dx * dx) / (2 * spatial_sigma_voxels**2)))
        step = dy * width + dx
        there = slice(start + step, start + step + n)
        # The windows of p and p + d, each moved by `shift` away from the other.
        away = shift * (int(np.sign(dy)) * width + int(np.sign(dx)))
        g_there = slice(there.start + away, there.stop + away)
        g_here = slice(start - away, start - away + n)
        # ‖a − b‖² = ‖a‖² + ‖b‖² − 2 a·b: one pass over the profiles instead of two.
        np.einsum("cn,cn->n", g_flat[:, g_there], g_flat[:, g_here], out=distance)
        distance *= -2
        distance += g_norm[g_there]
        distance += g_norm[g_here]
        distance *= inv_frames
        distance -= np.float32(noise_distance_hu2)
        np.maximum(distance, 0, out=distance)
        distance *= -scale
        w = np.exp(distance, out=distance)
        np.multiply(m_flat[here], m_flat[there], out=pair)
        pair *= spatial
        w *= pair
        # voxel p gains its neighbour p+d, and p+d gains p, with the same weight.
        np.multiply(c_flat[:, there], w, out=scratch)
        total[:, here] += scratch
        weights[here] += w
        np.multiply(c_flat[:, here], w, out=scratch)
        total[:, there] += scratch
        weights[there] += w
    rows, columns = slice(pad, pad + ny), slice(pad, pad + nx)
    total = total.reshape(n_c, ny + 2 * pad, width)[:, rows, columns]
    weights = weights.reshape(ny + 2 * pad, width)[rows, columns]
    out = c.copy()
    inside = mask & (weights > 0)
    out[:, inside] = total[:, inside] / weights[inside]
    return out
