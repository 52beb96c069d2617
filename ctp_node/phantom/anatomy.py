"""The phantom's head: its in-plane anatomy (scalp, skull, grey and white matter, ventricles,
partial-volume arteries and the superior sagittal sinus) and what each voxel ``(z, y, x)``
holds: a tissue label with its CBF, MTT and delay, the pre-contrast HU, the CBF × MTT grid's
regions (first slices) and the stroke's masks (last two slices). Lengths in mm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Pre-contrast attenuation in HU.
HU = {
    "air": -1000.0,
    "scalp": 40.0,
    "bone": 1000.0,
    "csf": 5.0,
    "gm": 38.0,
    "wm": 28.0,
    "grid": 33.0,
    "blood": 42.0,
}
#: CBF (ml/100g/min) and MTT (s) of the grid; of normal tissue; of the stroke compartments
#: (CBF, MTT, delay s).
GRID_CBF = (20.0, 35.0, 50.0, 65.0)
GRID_MTT_S = (3.0, 4.5, 6.0, 8.0)
#: Normal grey and white matter (CBF mL/100g/min, MTT s).
GREY_MATTER = (55.0, 4.0)
WHITE_MATTER = (22.0, 5.0)
_BACKGROUND = (25.0, 5.0)
_CORE = (6.0, 10.0, 12.0)
_PENUMBRA = (25.0, 8.0, 8.0)
_OLIGAEMIA = (38.0, 6.0, 4.5)


@dataclass(frozen=True)
class Head:
    """The in-plane anatomy, the same on every slice: pixel centres (mm, ``(y, x)``), the
    masks of the head's parts, and the vessels' partial-volume fractions (0–1)."""

    yy: np.ndarray
    xx: np.ndarray
    scalp: np.ndarray
    skull: np.ndarray
    brain: np.ndarray
    cortex: np.ndarray
    ventricles: np.ndarray
    sinus: np.ndarray
    artery_left: np.ndarray
    artery_right: np.ndarray

    @property
    def vessel(self) -> np.ndarray:
        return (self.sinus > 0) | (self.artery_left > 0) | (self.artery_right > 0)

    def outside_brain_hu(self) -> np.ndarray:
        """A slice's pre-contrast HU, float32 ``(y, x)``: air, scalp and bone; the brain is
        left at air for the phantom to fill."""
        hu = np.full(self.yy.shape, HU["air"], np.float32)
        hu[self.scalp] = HU["scalp"]
        hu[self.skull] = HU["bone"]
        return hu


def head_of(matrix: int, pixel_spacing_mm: float, artery_fraction: float) -> Head:
    """The head on a ``matrix`` × ``matrix`` grid of ``pixel_spacing_mm`` pixels; the arteries
    fill ``artery_fraction`` of their pixel at most."""
    n, dx = matrix, pixel_spacing_mm
    coords = (np.arange(n) - (n - 1) / 2) * dx
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    return head_at(yy, xx, dx, artery_fraction)


def head_at(
    yy: np.ndarray, xx: np.ndarray, pixel_spacing_mm: float, artery_fraction: float
) -> Head:
    """The head drawn at pixel centres given in its own frame (mm, ``(y, x)``, centred on the
    head, y along its midline): a turned or shifted head is drawn at turned or shifted
    coordinates."""
    dx = pixel_spacing_mm
    brain = ellipse(yy, xx, 0, 0, 85, 67)
    artery_left = _disc_fraction(yy, xx, 0.0, -57.0, 1.6, dx) * artery_fraction / 0.85
    artery_right = _disc_fraction(yy, xx, 0.0, 57.0, 1.6, dx) * artery_fraction / 0.85
    return Head(
        yy=yy,
        xx=xx,
        scalp=ellipse(yy, xx, 0, 0, 96, 78),
        skull=ellipse(yy, xx, 0, 0, 92, 74),
        brain=brain,
        cortex=brain & ~ellipse(yy, xx, 0, 0, 77, 59),
        ventricles=ellipse(yy, xx, -5, -12, 18, 6) | ellipse(yy, xx, -5, 12, 18, 6),
        sinus=_disc_fraction(yy, xx, 78.0, 0.0, 4.5, dx),
        artery_left=np.clip(artery_left, 0, 1),
        artery_right=np.clip(artery_right, 0, 1),
    )


@dataclass
class Layout:
    """What each voxel ``(z, y, x)`` holds: a tissue label (0: none) whose (CBF, MTT, delay) is
    ``params[label - 1]``, the pre-contrast HU, the grid's regions and the stroke's masks.
    Labels are numbered in the order the tissues are first met."""

    n_grid: int
    labels: np.ndarray
    base: np.ndarray
    region_labels: np.ndarray
    core: np.ndarray
    tmax6: np.ndarray
    csf: np.ndarray
    params: list[tuple[float, float, float]] = field(default_factory=list)
    region_values: list[tuple[float, float, float, float]] = field(default_factory=list)

    def label_of(self, p: tuple[float, float, float]) -> int:
        if p not in self.params:
            self.params.append(p)
        return self.params.index(p) + 1


def layout_of(slices: int, max_grid_delay_s: float, head: Head) -> Layout:
    """``slices`` slices of ``head``: the first ones hold the CBF × MTT grid, each at one delay
    (0 to ``max_grid_delay_s``); the last two (of four or more) the stroke."""
    nz, n = slices, head.yy.shape[0]
    n_grid = nz - (2 if nz >= 4 else 0)
    shape = (nz, n, n)
    layout = Layout(
        n_grid=n_grid,
        labels=np.zeros(shape, np.int32),
        base=np.full(shape, HU["air"], np.float32),
        region_labels=np.zeros(shape, np.int32),
        core=np.zeros(shape, bool),
        tmax6=np.zeros(shape, bool),
        csf=np.zeros(shape, bool),
    )
    delays = np.linspace(0.0, max_grid_delay_s, n_grid) if n_grid > 1 else np.zeros(n_grid)
    for z in range(nz):
        b = layout.base[z]
        b[:] = head.outside_brain_hu()
        b[head.brain] = HU["wm"]
        if z < n_grid:
            _grid_slice(layout, head, z, float(delays[z]))
        else:
            _stroke_slice(layout, head, z)
    return layout


def _grid_slice(layout: Layout, head: Head, z: int, delay_s: float) -> None:
    """A 4 × 4 grid of CBF × MTT blocks (20 mm, 3 mm apart) in background tissue."""
    yy, xx, lab = head.yy, head.xx, layout.labels[z]
    block_mm, gap_mm = 20.0, 3.0
    starts = -(4 * block_mm + 3 * gap_mm) / 2 + np.arange(4) * (block_mm + gap_mm)
    layout.base[z][head.brain] = HU["grid"]
    lab[head.brain] = layout.label_of((*_BACKGROUND, delay_s))
    for i, cbf in enumerate(GRID_CBF):
        for j, mtt in enumerate(GRID_MTT_S):
            block = (
                (yy >= starts[i])
                & (yy < starts[i] + block_mm)
                & (xx >= starts[j])
                & (xx < starts[j] + block_mm)
            )
            lab[block] = layout.label_of((cbf, mtt, delay_s))
            layout.region_values.append((cbf, cbf * mtt / 60.0, mtt, delay_s))
            layout.region_labels[z][block] = len(layout.region_values)


def _stroke_slice(layout: Layout, head: Head, z: int) -> None:
    """Grey and white matter with the ventricles, and in the image-right hemisphere a core
    inside a penumbra inside benign oligaemia."""
    yy, xx, brain, ventricles = head.yy, head.xx, head.brain, head.ventricles
    lab = layout.labels[z]
    layout.base[z][head.cortex] = HU["gm"]
    lab[brain] = layout.label_of((*WHITE_MATTER, 0.0))
    lab[head.cortex] = layout.label_of((*GREY_MATTER, 0.0))
    right = brain & (xx > 3.0)
    olig = right & ellipse(yy, xx, -5, 32, 42, 31)
    pen = right & ellipse(yy, xx, -5, 32, 33, 25)
    cor = right & ellipse(yy, xx, -5, 32, 20, 15)
    lab[olig] = layout.label_of(_OLIGAEMIA)
    lab[pen] = layout.label_of(_PENUMBRA)
    lab[cor] = layout.label_of(_CORE)
    layout.base[z][ventricles] = HU["csf"]
    lab[ventricles] = 0
    layout.csf[z] = ventricles
    layout.core[z] = cor & ~ventricles & ~head.vessel
    layout.tmax6[z] = pen & ~ventricles & ~head.vessel


def ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float):
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _disc_fraction(
    yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float, spacing: float
) -> np.ndarray:
    """Fraction of each pixel inside a disc (4 × 4 supersampling), all in mm."""
    offsets = (np.arange(4) + 0.5) / 4 - 0.5
    frac = np.zeros(yy.shape)
    for oy in offsets:
        for ox in offsets:
            frac += (yy + oy * spacing - cy) ** 2 + (xx + ox * spacing - cx) ** 2 <= r * r
    return frac / 16.0
