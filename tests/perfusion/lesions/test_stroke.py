"""Stroke volumes: the normal reference CBF and the lesion masks, on synthetic maps."""

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from ctp_node.perfusion import PerfusionParameters
from ctp_node.perfusion.lesions.stroke import (
    edge_preserving_mean,
    lesion_masks,
    normal_reference_cbf,
    window_pixels,
)

#: In-plane pixel of our phantom (mm): the majority filter's window is 3 pixels there.
PIXEL_MM = 1.72


def _brain() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grey (60) and white (20) matter, 1 : 3, normal delay (Tmax 1 s); tissue everywhere."""
    cbf = np.full((2, 40, 40), 20.0)
    cbf[:, :, :10] = 60.0
    return cbf, np.ones_like(cbf), np.ones(cbf.shape, bool)


def test_reference_is_the_mean_or_median_of_tissue_with_a_normal_delay() -> None:
    cbf, tmax, tissue = _brain()
    # A delayed (Tmax 8 s), low-flow territory is not part of the reference.
    cbf[:, 30:, 20:] = 5.0
    tmax[:, 30:, 20:] = 8.0
    normal = tmax < 4.0
    assert normal_reference_cbf(cbf, tmax, tissue, 4.0) == pytest.approx(cbf[normal].mean())
    assert normal_reference_cbf(cbf, tmax, tissue, 4.0, mean=False) == 20.0
    # Grey and white matter mixed: the mean (30) is 1.5 times the median (20) here.
    assert normal_reference_cbf(cbf, tmax, tissue, 4.0) > 1.4 * 20.0


def test_hypoperfusion_includes_the_core_even_where_its_tmax_reads_short() -> None:
    cbf, tmax, tissue = _brain()
    cbf[:, 10:30, 15:25] = 3.0  # core
    tmax[:, 8:32, 13:27] = 9.0  # its territory, delayed
    tmax[:, 10:20, 15:25] = 4.0  # ... but half the core's Tmax reads short (noise)
    p = PerfusionParameters()
    core, tmax6, _ = lesion_masks(cbf, tmax, tissue, 30.0, 0.001, p, PIXEL_MM)
    assert core[:, 11:29, 16:24].all() and not core[:, :, :12].any()
    short = np.zeros_like(core)
    short[:, 10:20, 15:25] = True
    # The core's voxels with a short Tmax are hypoperfused all the same.
    assert (tmax6 >= core).all() and tmax6[short & core].all()
    assert tmax6[:, 9:31, 14:26].all() and not tmax6[:, :6].any()


def test_low_flow_with_a_timely_bolus_is_not_core_but_a_delayed_core_with_noisy_tmax_is() -> None:
    rng = np.random.default_rng(0)
    cbf, tmax, tissue = _brain()
    cbf[:, 5:15, 25:35] = 4.0  # low flow, bolus on time (faint white matter's noise, old infarct)
    cbf[:, 25:37, 15:27] = 3.0  # acute core in a delayed territory
    tmax[:, 22:40, 12:30] = 9.0
    # 40 % of the core's own Tmax values scatter short (its faintest curves)
    noisy = rng.random(tmax.shape) < 0.4
    tmax[:, 25:37, 15:27] = np.where(noisy, 1.0, 9.0)[:, 25:37, 15:27]
    # The core touches the edge of the head: outside the tissue, Tmax is 0 and does not count.
    tissue[:, 37:, :] = False
    tmax[:, 37:, :] = 0.0
    p = PerfusionParameters()
    core, _, _ = lesion_masks(cbf, tmax, tissue, 30.0, 0.001, p, PIXEL_MM)
    acute = np.zeros_like(core)
    acute[:, 25:37, 15:27] = True
    # Without the gate, the timely low flow is counted as core too.
    ungated, _, _ = lesion_masks(
        cbf, tmax, tissue, 30.0, 0.001, PerfusionParameters(core_tmax_min_s=0.0), PIXEL_MM
    )
    assert ungated[:, 5:15, 25:35].mean() > 0.95
    # With it, only that goes: all of the acute core stays (but its corners, which the
    # majority filter trims either way).
    assert not core[:, 5:15, 25:35].any() and not (core & ~acute).any()
    assert np.array_equal(core[acute], ungated[acute]) and core[acute].mean() > 0.97


def test_a_lesion_in_gyri_between_sulci_keeps_its_border_voxels() -> None:
    """The majority filter counts tissue only: CSF in the sulci is no vote against the lesion.
    A filter that counted every voxel of the window would drop gyri one voxel wide altogether
    (3 votes of 9) and the corners of any lesion at the brain's surface."""
    cbf, tmax, tissue = _brain()
    territory = (slice(None), slice(20, 40), slice(12, 40))
    cbf[territory], tmax[territory] = 3.0, 9.0  # core in a delayed territory
    tissue[:, 24:37, 17:40:2] = False  # sulci (CSF): the gyri between them are one voxel wide
    tissue[:, 37:, :] = False  # ... and the territory reaches the brain's surface
    core, tmax6, tmax10 = lesion_masks(
        cbf, tmax, tissue, 30.0, 0.01, PerfusionParameters(), PIXEL_MM
    )
    lesion = np.zeros_like(tissue)
    lesion[territory] = True
    lesion &= tissue
    gyri = lesion.copy()
    gyri[:, :24] = False
    for mask in (core, tmax6):
        assert not (mask & ~lesion).any() and mask[gyri].all()
    assert not tmax10.any()


def test_majority_window_is_about_5_mm_wide_whatever_the_pixel() -> None:
    assert [window_pixels(5.0, mm) for mm in (1.72, 1.0, 0.875, 0.45)] == [3, 5, 5, 11]
    assert [window_pixels(15.0, mm) for mm in (1.72, 0.875)] == [9, 17]
    assert window_pixels(0.0, 0.875) == 1


def test_a_5_mm_majority_window_mislabels_less_of_a_noisy_core_at_fine_pixels() -> None:
    """At 0.875 mm pixels, a noisy core map (flow spread ±35 %, correlated over a pixel or so,
    as faint curves' flows are) inside a larger penumbra: a window of 3 pixels (2.6 mm) leaves
    flecks on both sides of the border; one of 5 (5 mm) leaves about half as many. The
    volume stays right with either: missed core and false core balance."""
    rng = np.random.default_rng(0)
    shape = (4, 96, 96)
    # (The majority filter alone: the edge-preserving mean before it averages most flecks
    # away with either window.)
    r = np.hypot(*np.mgrid[-48:48, -48:48])
    true_cbf = np.full(shape, 40.0)
    tmax = np.ones(shape)
    true_cbf[:, r < 36], tmax[:, r < 36] = 13.0, 9.0  # penumbra: 1.4 × the threshold (9)
    core = np.broadcast_to(r < 18, shape)
    true_cbf[core] = 6.0  # core: 0.67 × the threshold
    noise = ndimage.gaussian_filter(rng.normal(size=shape), (0, 0.7, 0.7))
    cbf = true_cbf * np.exp(0.35 * noise / noise.std())
    tissue = np.ones(shape, bool)
    p = PerfusionParameters(core_bilateral_iterations=0)

    def mislabelled(mm: float) -> tuple[float, float]:
        found, _, _ = lesion_masks(
            cbf, tmax, tissue, 30.0, 0.004, replace(p, lesion_majority_mm=mm), 0.875
        )
        return np.sum(found != core) / core.sum(), found.sum() / core.sum() - 1

    raw = np.sum((cbf < 9.0) != core) / core.sum()
    narrow, narrow_volume = mislabelled(2.6)
    wide, wide_volume = mislabelled(p.lesion_majority_mm)
    assert wide < 0.75 * narrow < 0.5 * raw
    assert abs(wide_volume) < 0.03 and abs(narrow_volume) < 0.05


def _delayed_disc(blur_px: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A core disc (rCBF 0.19, radius 10 pixels) in a delayed penumbra (rCBF 0.77), the way
    the engine hands it over: its edge blurred by ``blur_px`` (the curve filters upstream
    average a rim voxel with its neighbours), plus noise (σ 0.05). Normal reference 30."""
    shape = (3, 64, 64)
    r = np.hypot(*np.mgrid[-32:32, -32:32])
    core = np.broadcast_to(r < 10, shape)
    rcbf = np.where(core, 0.19, 0.77)
    rcbf = ndimage.gaussian_filter(rcbf, (0, blur_px, blur_px))
    rcbf = rcbf + 0.05 * np.random.default_rng(seed).normal(size=shape)
    return 30.0 * rcbf, np.full(shape, 9.0), core


def test_the_edge_preserving_mean_gives_back_a_core_rim_blurred_upstream() -> None:
    """Each blurred rim voxel is nearer the core's level than the penumbra's; the filter
    draws it back, so the core regains the rim a plain threshold loses."""
    cbf, tmax, core = _delayed_disc(blur_px=0.8)
    tissue = np.ones(core.shape, bool)
    p = PerfusionParameters()
    errors = {}
    for label, params in (("plain", replace(p, core_bilateral_iterations=0)), ("edge", p)):
        found, _, _ = lesion_masks(cbf, tmax, tissue, 30.0, 0.001, params, PIXEL_MM)
        errors[label] = found.sum() / core.sum() - 1
    assert errors["plain"] < -0.12  # the blurred rim is lost ...
    assert abs(errors["edge"]) < 0.4 * abs(errors["plain"])  # ... and mostly regained


def test_the_edge_preserving_mean_keeps_a_gradual_border_where_it_is() -> None:
    """On a smooth gradient — a real border, not a phantom's step — the weights are
    symmetric and the level where rCBF crosses 30 % does not move: the filter draws voxels
    to a step only where the data have one."""
    x = np.linspace(0.0, 0.8, 64)
    rcbf = np.broadcast_to(x, (2, 64, 64)).astype(np.float32)
    tissue = np.ones(rcbf.shape, bool)
    out = edge_preserving_mean(rcbf, tissue, 2.5 / 0.875, 0.14, 3)
    # Only where the tissue ends (the image's edge here: 3 passes × 6 pixels) is the mean
    # one-sided.
    assert np.abs(out - rcbf)[:, 18:46, 18:46].max() < 1e-3
    assert np.argmax(out[0, 32] >= 0.3) == np.argmax(rcbf[0, 32] >= 0.3)


def test_the_edge_preserving_mean_averages_noise_and_works_only_where_needed() -> None:
    rng = np.random.default_rng(1)
    flat = 0.4 + 0.05 * rng.normal(size=(2, 48, 48))
    tissue = np.ones(flat.shape, bool)
    tissue[:, :, :6] = False  # outside the tissue: left as it is, never averaged in
    flat[:, :, :6] = 5.0
    out = edge_preserving_mean(flat, tissue, 2.0, 0.14, 3)
    assert out[:, 10:38, 10:38].std() < 0.35 * flat[:, 10:38, 10:38].std()
    assert np.array_equal(out[:, :, :6], flat[:, :, :6]) and out[tissue].max() < 0.6
    needed = np.zeros_like(tissue)
    needed[1, 20:26, 30:34] = True
    part = edge_preserving_mean(flat, tissue, 2.0, 0.14, 3, needed=needed)
    assert np.allclose(part[needed], out[needed], atol=1e-6)
    assert np.array_equal(part[0], flat[0].astype(np.float32))  # slice 0 is not needed
