"""Stroke volumes: the normal reference CBF and the lesion masks, on synthetic maps."""

import numpy as np
import pytest

from ctp_node.perfusion import PerfusionParameters
from ctp_node.perfusion.stroke import lesion_masks, normal_reference_cbf


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
    core, tmax6, _ = lesion_masks(cbf, tmax, tissue, 30.0, 0.001, p)
    assert core[:, 11:29, 16:24].all() and not core[:, :, :12].any()
    short = np.zeros_like(core)
    short[:, 10:20, 15:25] = True
    # The core's voxels with a short Tmax are hypoperfused all the same.
    assert (tmax6 >= core).all() and tmax6[short & core].all()
    assert tmax6[:, 9:31, 14:26].all() and not tmax6[:, :6].any()
