"""Wide-detector HU held in a file: same maps, pages released, nothing left on disk."""

from __future__ import annotations

import errno
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ctp_node.assemble import spill
from ctp_node.perfusion import compute_perfusion
from ctp_node.phantom import PhantomSpec, make_phantom


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_small_arrays_stay_in_memory(tmp_path: Path) -> None:
    small = spill.allocate((4, 8, 8), np.int16, tmp_path, resident_max_bytes=512)
    assert not spill.is_spilled(small)
    assert not spill.is_spilled(spill.allocate((100, 100), np.int16, None, 0))
    spill.release(small)  # nothing to release: no error


def test_large_array_lives_in_an_unlinked_file_and_its_pages_can_be_released(
    tmp_path: Path,
) -> None:
    shape = (8, 16, 512, 512)  # 64 MiB of int16
    hu = spill.allocate(shape, np.int16, tmp_path / "tmp", resident_max_bytes=2**20)
    assert spill.is_spilled(hu) and spill.is_spilled(hu[2:4])
    assert list((tmp_path / "tmp").iterdir()) == []  # unlinked: nothing to clean up
    before = _resident_bytes()
    hu[:] = np.arange(512, dtype=np.int16)
    written = _resident_bytes() - before
    assert written > 0.9 * hu.nbytes
    spill.release(hu[3])  # a view releases the whole mapping
    assert _resident_bytes() - before < 0.1 * hu.nbytes
    # The data are still there, read back from the file.
    assert int(hu[7, 15, 100, 511]) == 511
    np.testing.assert_array_equal(hu[5, 3, 7], np.arange(512, dtype=np.int16))


def test_spilled_acquisition_gives_the_same_result_and_is_released_twice(
    tmp_path: Path,
) -> None:
    """A binned acquisition read from a spill file: the engine's result is bit for bit that of
    the same HU in memory, and the engine lets the caller release the pages once it has its
    binned copy and once it has judged the tissue at the acquisition's own pixels."""
    phantom = make_phantom(PhantomSpec(matrix=512, slices=4, pixel_spacing_mm=0.43, seed=4))
    in_memory = np.rint(phantom.acquisition.hu).astype(np.int16)
    spilled = spill.allocate(in_memory.shape, np.int16, tmp_path, resident_max_bytes=0)
    spilled[:] = in_memory
    releases: list[int] = []

    def release() -> None:
        releases.append(1)
        spill.release(spilled)

    a = compute_perfusion(replace(phantom.acquisition, hu=in_memory))
    b = compute_perfusion(replace(phantom.acquisition, hu=spilled), release_source=release)
    assert len(releases) == 2
    for name in a.maps:
        np.testing.assert_array_equal(a.maps[name], b.maps[name], err_msg=name)
    np.testing.assert_array_equal(a.tissue_mask, b.tissue_mask)
    assert a.volumes == b.volumes
    np.testing.assert_array_equal(np.asarray(spilled), in_memory)  # the source is untouched


def test_a_full_disk_is_an_os_error_before_any_write(tmp_path: Path) -> None:
    """The blocks are reserved up front: a file system without room raises ENOSPC at once
    (here: more than any disk holds), instead of a SIGBUS when a page is first written."""
    with pytest.raises(OSError) as raised:
        spill.allocate((2**20, 2**20, 2**10), np.int16, tmp_path, resident_max_bytes=0)
    assert raised.value.errno in (errno.ENOSPC, errno.EFBIG)


def test_the_worker_spills_below_its_storage_root_at_the_configured_size(tmp_path: Path) -> None:
    from ctp_node.config import Config
    from ctp_node.pipeline import PipelineSettings
    from ctp_node.wiring import job_context

    config = Config.model_validate(
        {"storage": {"root": str(tmp_path)}, "worker": {"resident_hu_max_mb": 64}}
    )
    settings = job_context(config).settings
    assert settings.spill_dir == tmp_path / spill.SPILL_FOLDER
    assert settings.resident_hu_max_bytes == 64 * 2**20
    # The defaults agree: the configuration's 1024 MiB is the pipeline's own.
    default = job_context(Config.model_validate({"storage": {"root": str(tmp_path)}}))
    assert default.settings.resident_hu_max_bytes == PipelineSettings().resident_hu_max_bytes
