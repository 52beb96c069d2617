"""A tiny dynamic CT series on disk and a hand-made result on its grid."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ctp_node.perfusion.acquisition import Acquisition, AcquisitionFacts
from ctp_node.perfusion.result import MAP_UNITS, InputCurve, PerfusionResult, StrokeVolumes
from ctp_node.phantom.dicom import StudyIdentity, write_ct_series
from tests.dicom_checks import dciodvfy_errors as dciodvfy_errors_of

N_T, N_Z, N_Y, N_X = 12, 3, 32, 32
FRAME_INTERVAL_S = 1.5


@pytest.fixture(scope="session")
def dciodvfy_errors() -> Callable[[Path], list[str]]:
    """A function giving the ``Error`` lines dciodvfy prints for a file (on stderr)."""
    if shutil.which("dciodvfy") is None:
        pytest.fail("dciodvfy (dicom3tools) is not installed: run .ci/run (installs it)")
    return dciodvfy_errors_of


@pytest.fixture(scope="session")
def identity() -> StudyIdentity:
    return StudyIdentity.new(study_datetime=datetime(2024, 5, 1, 14, 3, 0))


@pytest.fixture(scope="session")
def acquisition() -> Acquisition:
    rng = np.random.default_rng(7)
    hu = rng.normal(35.0, 6.0, size=(N_T, N_Z, N_Y, N_X)).astype(np.float32)
    return Acquisition(
        hu=hu,
        times_s=np.arange(N_T) * FRAME_INTERVAL_S,
        pixel_spacing_mm=(0.9, 0.8),
        slice_spacing_mm=5.0,
        slice_positions_mm=np.array([[-12.8, -14.4, 40.0 + 5.0 * z] for z in range(N_Z)]),
        facts=AcquisitionFacts(
            kvp=80.0,
            exposure_mas=150.0,
            ctdivol_mgy=190.0,
            contrast_agent="Iopamidol 370",
            contrast_volume_ml=40.0,
            contrast_rate_ml_s=5.0,
            patient_age_years=71.0,
        ),
    )


@pytest.fixture(scope="session")
def ct_paths(
    acquisition: Acquisition, identity: StudyIdentity, tmp_path_factory: pytest.TempPathFactory
) -> list[Path]:
    return write_ct_series(acquisition, tmp_path_factory.mktemp("ct"), identity=identity)


@pytest.fixture(scope="session")
def source_headers(ct_paths: list[Path]) -> list[pydicom.Dataset]:
    """The first time point's images, header only, as the pipeline passes them."""
    first_frame = ct_paths[:N_Z]
    return [pydicom.dcmread(path, stop_before_pixels=True) for path in first_frame]


@pytest.fixture(scope="session")
def result(acquisition: Acquisition) -> PerfusionResult:
    """Each map holds distinct, known values: its index, the slice and the pixel."""
    z, y, x = np.meshgrid(np.arange(N_Z), np.arange(N_Y), np.arange(N_X), indexing="ij")
    maps = {
        name: (10.0 * index + z + 0.01 * y + 0.0001 * x).astype(np.float32)
        for index, name in enumerate(MAP_UNITS)
    }
    maps["CBF"][0, :4, :4] = 0.0  # outside the tissue mask
    tissue = np.ones((N_Z, N_Y, N_X), dtype=bool)
    tissue[0, :4, :4] = False
    empty = np.zeros_like(tissue)
    aif = InputCurve(
        kind="AIF",
        voxels_zyx=np.array([[1, 16, 16]]),
        times_s=acquisition.times_s,
        hu=np.full(N_T, 40.0),
        concentration_hu=np.zeros(N_T),
        baseline_frames=3,
        arrival_s=4.5,
    )
    return PerfusionResult(
        maps=maps,
        tissue_mask=tissue,
        core_mask=empty,
        tmax6_mask=empty,
        tmax10_mask=empty,
        aif=aif,
        vof=None,
        volumes=StrokeVolumes(
            core_ml=12.5,
            tmax6_ml=80.0,
            tmax10_ml=30.0,
            mismatch_ml=67.5,
            mismatch_ratio=6.4,
            hypoperfusion_intensity_ratio=0.375,
            target_mismatch=True,
        ),
        normal_cbf=52.0,
        parameters={"core_rcbf_threshold": 0.3, "tmax_threshold_s": 6.0, "core_tmax_min_s": 4.0},
        algorithm="bcSVD test",
    )


def _dsrdump(path: Path) -> str:
    run = subprocess.run(["dsrdump", "+Pl", str(path)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.fixture(scope="session")
def dsrdump() -> Callable[[Path], str]:
    """A function giving DCMTK's ``dsrdump`` rendering of an SR file (asserting it succeeds)."""
    if shutil.which("dsrdump") is None:
        pytest.skip("dsrdump (DCMTK) is not installed")
    return _dsrdump
