"""Rigid in-plane motion is measured, undone, reported; unregistrable frames are excluded."""

import numpy as np
import pytest
from scipy import ndimage

from ctp_node.perfusion import PhantomSpec, compute_perfusion, make_phantom
from ctp_node.perfusion.motion import correct_motion, estimate_motion

SPEC = PhantomSpec(matrix=96, slices=4, pixel_spacing_mm=2.3, noise_hu=5.0)


def test_translation_and_rotation_are_recovered() -> None:
    ph = make_phantom(
        PhantomSpec(**{**SPEC.__dict__, "motion_mm": 3.0, "motion_deg": 3.0, "seed": 1})
    )
    moved = ph.acquisition.times_s >= 0.75 * 60.0
    est = estimate_motion(ph.acquisition.hu, ph.acquisition.pixel_spacing_mm)
    assert np.abs(np.abs(est.rotation_deg[moved]) - 3.0).max() < 0.5
    assert np.abs(est.rotation_deg[~moved]).max() < 0.5
    # A 3 mm shift plus 3° about the centre moves the head by a few mm; still frames do not move.
    assert np.all(est.displacement_mm[moved] > 2.0)
    assert np.all(est.displacement_mm[~moved] < 0.5)
    assert not est.excluded.any()


def test_corrected_frames_match_the_still_head() -> None:
    still = make_phantom(PhantomSpec(**{**SPEC.__dict__, "noise_hu": 0.0}))
    ph = make_phantom(
        PhantomSpec(**{**SPEC.__dict__, "noise_hu": 0.0, "motion_mm": 3.0, "motion_deg": 2.0})
    )
    fixed, est = correct_motion(ph.acquisition)
    moved = np.flatnonzero(est.corrected)
    assert moved.size > 0
    brain = still.truth.tissue_mask
    before = np.abs(ph.acquisition.hu[moved][:, brain] - still.acquisition.hu[moved][:, brain])
    after = np.abs(fixed.hu[moved][:, brain] - still.acquisition.hu[moved][:, brain])
    assert after.mean() < 0.5 * before.mean()
    assert fixed.hu is not ph.acquisition.hu  # the input is left untouched


def test_a_frame_of_other_anatomy_is_excluded_and_interpolated() -> None:
    ph = make_phantom(SPEC)
    acq = ph.acquisition
    hu = acq.hu.copy()
    # Through-plane motion: frame 20 shows the head magnified (another level of the head).
    zoomed = ndimage.zoom(hu[20], (1, 1.15, 1.15), order=1)
    hu[20] = zoomed[:, : hu.shape[2], : hu.shape[3]]
    from dataclasses import replace

    fixed, est = correct_motion(replace(acq, hu=hu))
    assert list(np.flatnonzero(est.excluded)) == [20]
    expected = 0.5 * (hu[19] + hu[21])
    assert np.allclose(fixed.hu[20], expected, atol=1e-3)


def test_result_reports_motion_and_warns_above_the_limit() -> None:
    ph = make_phantom(
        PhantomSpec(**{**SPEC.__dict__, "motion_mm": 4.0, "motion_deg": 3.0, "seed": 2})
    )
    res = compute_perfusion(ph.acquisition)
    assert res.motion_mm is not None and res.motion_mm.shape == (ph.acquisition.hu.shape[0],)
    assert res.motion_mm.max() > 3.0
    assert len(res.motion_corrected_frames) > 0
    assert any("motion" in w.lower() for w in res.warnings)
    still = compute_perfusion(make_phantom(SPEC).acquisition)
    assert still.motion_mm is not None and still.motion_mm.max() < 0.5
    assert not any("motion" in w.lower() for w in still.warnings)
    # Corrected, the hypoperfusion volume is still found.
    assert res.volumes.tmax6_ml == pytest.approx(ph.truth.tmax6_ml, rel=0.3)
