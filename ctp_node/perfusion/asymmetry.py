"""Hemispheric asymmetry (issue 34, vasospasm): the mid-sagittal line estimated from the images,
the two hemispheres of the tissue, and per-map left/right differences and ratios.

The engine calls it after its stages when ``hemispheric_asymmetry`` is on (the vasospasm
profile); it imports only numpy, scipy and :mod:`ctp_node.perfusion.errors`.

Geometry. Axis order ``(z, y, x)``, voxel indices; lengths in mm with the pixel spacing
``(dy, dx)`` respected. In-plane positions are measured in mm from the image centre
``((ny − 1) / 2, (nx − 1) / 2)``. The midline is the line ``n · p = offset_mm`` with the unit
normal ``n = (−sin θ, cos θ)`` in ``(y, x)``: ``θ`` (``angle_deg``) is the angle between the
midline and the image columns (0 = vertical; see :class:`Midline`), ``offset_mm`` its signed
distance from the image centre along ``n``. The side with ``n · p > offset_mm`` is the "image
right" one (higher column index for θ = 0).

Patient side. For an axial image in DICOM LPS whose row direction cosine points towards +x
(patient left, e.g. ImageOrientationPatient ``1\\0\\0\\0\\1\\0``, the usual radiological display),
image right is patient left. :func:`patient_side_of_image_right` derives it from the direction
cosines; when they are not given or the row direction has no left/right component, sides are
named "image left/right".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ctp_node.perfusion.errors import PerfusionError

#: Maps compared as differences (s) and as ratios (lower / higher).
TIME_MAPS = ("mtt", "ttp", "tmax")
FLOW_MAPS = ("cbf", "cbv")


class EmptyHemisphereError(PerfusionError):
    """One hemisphere holds no tissue voxel, so no asymmetry can be measured."""


@dataclass(frozen=True)
class Midline:
    """The mid-sagittal line of a study, one for all slices.

    Attributes
    ----------
    angle_deg : angle between the midline and the image columns (the y axis), degrees; the
        line's direction is ``(cos θ, sin θ)`` in ``(y, x)``: for positive θ the line moves
        towards +x going down the image.
    offset_mm : signed distance of the line from the image centre along the normal
        ``(−sin θ, cos θ)``, mm (positive: the line lies towards image right).
    symmetry : normalised correlation of the image with its mirror image about the line
        (1 = perfectly symmetric), a measure of confidence.
    """

    angle_deg: float
    offset_mm: float
    symmetry: float

    def signed_distance_mm(
        self, shape_yx: tuple[int, int], pixel_spacing_mm: tuple[float, float]
    ) -> np.ndarray:
        """Signed distance (mm) of every pixel centre from the line, ``(y, x)``; positive on
        the image-right side."""
        dy, dx = pixel_spacing_mm
        y = (np.arange(shape_yx[0]) - (shape_yx[0] - 1) / 2) * dy
        x = (np.arange(shape_yx[1]) - (shape_yx[1] - 1) / 2) * dx
        theta = np.deg2rad(self.angle_deg)
        return -np.sin(theta) * y[:, None] + np.cos(theta) * x[None, :] - self.offset_mm


def _rotated_stack(
    image: np.ndarray, theta: float, pixel_spacing_mm: tuple[float, float], step_mm: float
) -> np.ndarray:
    """The image resampled on an isotropic grid of ``step_mm`` whose x axis is the normal
    ``(−sin θ, cos θ)`` and y axis the line direction ``(cos θ, sin θ)``, both centred on the
    image centre; the grid's x index ``j`` is at ``(j − (m − 1)/2) · step_mm`` along the normal."""
    nz, ny, nx = image.shape
    dy, dx = pixel_spacing_mm
    m = int(np.ceil(np.hypot(ny * dy, nx * dx) / step_mm)) | 1
    c, s = np.cos(theta), np.sin(theta)
    # input index = centre_in + diag(1/dy, 1/dx) · M · step · (out − centre_out),
    # with M mapping (v_y, v_x) to (p_y, p_x): p_y = c·v_y − s·v_x, p_x = s·v_y + c·v_x.
    rot = np.array([[c / dy, -s / dy], [s / dx, c / dx]]) * step_mm
    centre_out = np.full(2, (m - 1) / 2)
    centre_in = np.array([(ny - 1) / 2, (nx - 1) / 2])
    matrix = np.eye(3)
    matrix[1:, 1:] = rot
    offset = np.zeros(3)
    offset[1:] = centre_in - rot @ centre_out
    return ndimage.affine_transform(
        image, matrix, offset=offset, output_shape=(nz, m, m), order=1, cval=0.0
    )


def _mirror_profile(rotated: np.ndarray) -> np.ndarray:
    """``S[k] = Σ f(y, j) · f(y, k − j)``: the overlap of the image with its mirror image about
    the column ``k / 2``, for every ``k`` (one FFT autoconvolution along x)."""
    m = rotated.shape[-1]
    spectrum = np.fft.rfft(rotated, n=2 * m, axis=-1)
    return np.fft.irfft(spectrum * spectrum, n=2 * m, axis=-1).sum(axis=(0, 1))[: 2 * m - 1]


def estimate_midline(
    image: np.ndarray,
    region: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    *,
    max_angle_deg: float = 30.0,
    coarse_step_deg: float = 1.0,
    fine_step_deg: float = 0.1,
    coarse_grid_mm: float = 2.0,
    fine_grid_mm: float = 1.0,
) -> Midline:
    """The mid-sagittal line that makes the head most symmetric (Liu, Collins and Rothfus,
    IEEE TMI 2001: the plane maximising the image's correlation with its mirror image).

    The image inside ``region`` (clipped to 0–100 HU so that bone, contrast and noise outliers
    do not dominate; 0 outside) is rotated on an isotropic grid for each candidate angle; for
    each angle, the overlap of the image with its reflection about every column is one FFT
    autoconvolution, so offsets are searched exhaustively. By Cauchy–Schwarz the overlap
    ``Σ f(p) f(mirror(p))`` never exceeds ``Σ f²`` and reaches it only at a symmetry line, so
    no normalisation is needed. One line for the whole study: all slices are summed (a
    consensus that a slice with a lesion or a streak cannot swing). Angles are searched in
    ``coarse_step_deg`` steps over ``±max_angle_deg``, then in ``fine_step_deg`` steps around
    the best; the offset is refined to sub-pixel by a parabola through the peak.

    Parameters
    ----------
    image : ``(z, y, x)`` pre-contrast (or baseline-mean) HU.
    region : bool ``(z, y, x)``, the intracranial region (or the head) to mirror.
    pixel_spacing_mm : ``(dy, dx)``, mm.
    max_angle_deg : widest head yaw searched, degrees (heads in a CT gantry rarely exceed 20°).
    coarse_step_deg, fine_step_deg : the angle search's steps, degrees.
    coarse_grid_mm, fine_grid_mm : the rotated grid's spacing in the coarse and the fine
        search, mm (the image's own pixel size when that is coarser). A head is ~150 mm
        wide: 2 mm and 1 mm resolve its symmetry line to a fraction of a degree
        (``bench/asymmetry.py``), at a cost that does not grow with the matrix (a 512² ×
        16-slice study took 41 s on the pixel grid, docs/measurements.md).

    Raises
    ------
    EmptyHemisphereError : when the region is empty.
    """
    if image.ndim != 3 or image.shape != region.shape:
        raise ValueError(
            f"image and region must be (z, y, x) of one shape, not {image.shape}, {region.shape}"
        )
    if not region.any():
        raise EmptyHemisphereError("the intracranial region is empty: no midline to estimate")
    f = np.where(region, np.clip(image, 0.0, 100.0), 0.0).astype(np.float32)
    pixel_mm = float(min(pixel_spacing_mm))

    def best_at(theta_deg: float, step_mm: float) -> tuple[float, float, float]:
        rotated = _rotated_stack(f, np.deg2rad(theta_deg), pixel_spacing_mm, step_mm)
        profile = _mirror_profile(rotated)
        k = int(np.argmax(profile))
        shift = 0.0
        if 0 < k < profile.size - 1:
            a, b, c = profile[k - 1 : k + 2]
            denom = a - 2 * b + c
            shift = 0.5 * (a - c) / denom if denom < 0 else 0.0
        m = rotated.shape[-1]
        offset = ((k + shift) / 2 - (m - 1) / 2) * step_mm
        return float(profile[k]) / float(np.sum(rotated**2)), theta_deg, offset

    coarse_mm, fine_mm = max(coarse_grid_mm, pixel_mm), max(fine_grid_mm, pixel_mm)
    angles = np.arange(-max_angle_deg, max_angle_deg + 1e-9, coarse_step_deg)
    _, centre, _ = max(best_at(a, coarse_mm) for a in angles)
    # The best angle lies within half a coarse step of the best coarse one.
    half = coarse_step_deg / 2
    fine_angles = np.arange(-half, half + 1e-9, fine_step_deg) + centre
    score, angle, offset = max(best_at(a, fine_mm) for a in fine_angles)
    return Midline(angle_deg=float(angle), offset_mm=float(offset), symmetry=float(score))


def patient_side_of_image_right(orientation: tuple[float, ...] | None) -> str | None:
    """``"left"`` or ``"right"``: the patient side towards which the column index grows, from
    the ImageOrientationPatient direction cosines (LPS: +x is the patient's left); None when
    they are not given or the row direction is mostly not left–right (sides are then "image
    left/right")."""
    if orientation is None:
        return None
    row_x = float(orientation[0])
    if abs(row_x) < 0.5:
        return None
    return "left" if row_x > 0 else "right"


@dataclass(frozen=True)
class Hemispheres:
    """The tissue split at the midline.

    Attributes
    ----------
    image_left, image_right : bool ``(z, y, x)``, tissue on each side (a band of
        ``2 · margin_mm`` about the midline belongs to neither).
    midline : the line used.
    image_right_is : ``"left"`` / ``"right"`` (patient side of image right) or None (unknown).
    """

    image_left: np.ndarray
    image_right: np.ndarray
    midline: Midline
    image_right_is: str | None

    def side(self, patient: str) -> np.ndarray:
        """The mask of patient ``"left"`` / ``"right"``, or ``"image left"`` / ``"image right"``."""
        if patient in ("image left", "image right"):
            return self.image_left if patient == "image left" else self.image_right
        if self.image_right_is is None:
            raise ValueError("the patient's sides are unknown: ask for 'image left/right'")
        return self.image_right if patient == self.image_right_is else self.image_left

    @property
    def names(self) -> tuple[str, str]:
        """``(first, second)`` side names in which differences are reported (second − first):
        ``("left", "right")`` when patient sides are known, else the image's."""
        if self.image_right_is is None:
            return ("image left", "image right")
        return ("left", "right")


def split_hemispheres(
    tissue: np.ndarray,
    midline: Midline,
    pixel_spacing_mm: tuple[float, float],
    orientation: tuple[float, ...] | None = None,
    *,
    margin_mm: float = 2.0,
) -> Hemispheres:
    """The tissue on either side of ``midline``; voxels within ``margin_mm`` (mm) of the line
    (the falx, the interhemispheric fissure, partial volume of both sides) are left out."""
    distance = midline.signed_distance_mm(tissue.shape[1:], pixel_spacing_mm)[None]
    left = tissue & (distance < -margin_mm)
    right = tissue & (distance > margin_mm)
    return Hemispheres(left, right, midline, patient_side_of_image_right(orientation))


@dataclass(frozen=True)
class AsymmetryThresholds:
    """When a map's asymmetry is flagged (to become configuration keys of the vasospasm
    profile).

    Attributes
    ----------
    time_difference_s : |right − left| of the hemispheric mean of MTT, TTP or Tmax above which
        the map is flagged, s. Default 1.5 s.
    flow_ratio : lower / higher hemispheric mean CBF or CBV below which the map is flagged.
        Default 0.8.

    Why these defaults: no asymmetry threshold is validated for vasospasm or delayed cerebral
    ischaemia (DCI) after subarachnoid haemorrhage (Lolli et al., Front. Radiol. 2024, review;
    Mir et al., AJNR 2014, meta-analysis pooling qualitative and quantitative readings).
    Absolute thresholds reported for DCI on grey-matter ROIs are CBF 35 mL/100 g/min and MTT
    5.5 s (Sanelli et al., AJNR 2011), against normal grey matter near 50–60 and 4 s: about a
    20–30 % fall in CBF and a 1.5 s rise in MTT. A hemispheric mean dilutes a territorial
    change, so 1.5 s and 0.8 are conservative starting points in that range; they are to be set
    per site.
    """

    time_difference_s: float = 1.5
    flow_ratio: float = 0.8


@dataclass(frozen=True)
class MapAsymmetry:
    """One map's hemispheric comparison.

    Attributes
    ----------
    name : the map (``"mtt"``, ``"cbf"``, ...).
    mean, median : per side, keyed by the side's name (see :attr:`Hemispheres.names`).
    difference : second − first side's mean (right − left), in the map's unit (s for the
        time maps).
    ratio : lower / higher mean (1 = symmetric).
    lower_side : the side with the lower mean.
    flagged : the time maps' |difference| above, or the flow maps' ratio below, the threshold.
    """

    name: str
    mean: dict[str, float]
    median: dict[str, float]
    difference: float
    ratio: float
    lower_side: str
    flagged: bool


def hemispheric_asymmetry(
    maps: dict[str, np.ndarray],
    hemispheres: Hemispheres,
    thresholds: AsymmetryThresholds = AsymmetryThresholds(),
) -> dict[str, MapAsymmetry]:
    """Per-hemisphere means and medians of each map over the tissue, the right − left
    difference and the lower / higher ratio, flagged: time maps (MTT, TTP, Tmax, s; names in
    any case) on the difference, flow maps (CBF, CBV) on the ratio; other maps (rCBF, delay)
    are reported, not flagged.
    Non-finite values are ignored.

    Raises
    ------
    EmptyHemisphereError : when a side holds no tissue voxel with a finite value.
    """
    first, second = hemispheres.names
    masks = {first: hemispheres.side(first), second: hemispheres.side(second)}
    result = {}
    for name, values in maps.items():
        mean, median = {}, {}
        for side, mask in masks.items():
            v = values[mask]
            v = v[np.isfinite(v)]
            if v.size == 0:
                raise EmptyHemisphereError(
                    f"the {side} hemisphere holds no tissue with a {name} value: check the "
                    "tissue mask and the midline"
                )
            mean[side], median[side] = float(v.mean()), float(np.median(v))
        lower = first if mean[first] <= mean[second] else second
        higher = second if lower == first else first
        ratio = mean[lower] / mean[higher] if mean[higher] != 0 else 1.0
        difference = mean[second] - mean[first]
        if name.lower() in TIME_MAPS:
            flagged = abs(difference) > thresholds.time_difference_s
        elif name.lower() in FLOW_MAPS:
            flagged = ratio < thresholds.flow_ratio
        else:
            flagged = False
        result[name] = MapAsymmetry(name, mean, median, difference, ratio, lower, flagged)
    return result


@dataclass(frozen=True)
class HemisphericComparison:
    """A study's hemispheric comparison, as the result carries it.

    Attributes
    ----------
    midline : the mid-sagittal line the hemispheres were split at.
    sides : the two sides' names, in the order differences are taken (second − first).
    maps : per map name (``"CBF"``, ...), its :class:`MapAsymmetry`.
    """

    midline: Midline
    sides: tuple[str, str]
    maps: dict[str, MapAsymmetry]

    @property
    def flagged(self) -> list[str]:
        """The names of the flagged maps, in map order."""
        return [name for name, item in self.maps.items() if item.flagged]


def compare_hemispheres(
    pre_contrast_hu: np.ndarray,
    intracranial: np.ndarray,
    tissue: np.ndarray,
    maps: dict[str, np.ndarray],
    pixel_spacing_mm: tuple[float, float],
    orientation: tuple[float, ...] | None,
    thresholds: AsymmetryThresholds,
    margin_mm: float = 2.0,
) -> HemisphericComparison:
    """The midline estimated from ``pre_contrast_hu`` inside ``intracranial``, the ``tissue``
    split at it (``margin_mm`` either side left out) and each of ``maps`` compared
    (:func:`hemispheric_asymmetry`; NaN values ignored)."""
    line = estimate_midline(pre_contrast_hu, intracranial, pixel_spacing_mm)
    halves = split_hemispheres(tissue, line, pixel_spacing_mm, orientation, margin_mm=margin_mm)
    per_map = hemispheric_asymmetry(maps, halves, thresholds)
    return HemisphericComparison(line, halves.names, per_map)


def mean_column_hemispheres(
    tissue: np.ndarray,
    intracranial: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    orientation: tuple[float, ...] | None = None,
) -> Hemispheres:
    """The engine's present split (``delayed_hemisphere``): at the mean column of the
    intracranial region, vertical — for comparison only."""
    columns = np.nonzero(intracranial)[2]
    middle = float(columns.mean())
    x = np.arange(tissue.shape[2])[None, None, :]
    line = Midline(0.0, (middle - (tissue.shape[2] - 1) / 2) * pixel_spacing_mm[1], float("nan"))
    return Hemispheres(
        tissue & (x < middle),
        tissue & (x > middle),
        line,
        patient_side_of_image_right(orientation),
    )
