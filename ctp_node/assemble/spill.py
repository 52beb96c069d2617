"""Whole-resolution HU arrays too large to keep in memory while the engine runs.

A wide-detector study (512² × 320 slices × 20 time points) is 3.4 GB of int16 HU. The engine
works on its own binned copy (1 mm pixels, a quarter of the size) and reads the whole
resolution again only to judge each pixel's tissue after the maps are expanded and to draw a
few images in the reports. Such an array is allocated in an unlinked file below the node's
storage (not in ``/tmp``, which may be RAM) and mapped into memory: once the engine has its
copy, :func:`release` drops the array's pages from the process, and later reads fetch only
the pages they touch back from the file (or the page cache). The file's blocks are reserved
before the first write, so a full disk is an ``OSError`` (ENOSPC), which the worker treats
as transient, never a SIGBUS halfway through loading.
"""

from __future__ import annotations

import math
import mmap
import os
import tempfile
from pathlib import Path

import numpy as np

#: Folder below ``storage.root`` holding the (unlinked, so invisible) spill files.
SPILL_FOLDER = "tmp"
#: The default of ``worker.resident_hu_max_mb``, in bytes: every usual study stays in memory.
RESIDENT_MAX_BYTES = 1024 * 2**20


def allocate(
    shape: tuple[int, ...], dtype: type, folder: Path | None, resident_max_bytes: int | None
) -> np.ndarray:
    """An uninitialised array of ``shape``: in memory when it is at most
    ``resident_max_bytes`` (or no ``folder`` is given), else mapped from an unlinked file in
    ``folder`` (created if needed), its blocks reserved.

    Raises
    ------
    OSError : the file cannot be created or its blocks reserved (ENOSPC when the disk is full).
    """
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if folder is None or resident_max_bytes is None or nbytes <= resident_max_bytes:
        return np.empty(shape, dtype)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder, prefix="hu-") as handle:
        os.posix_fallocate(handle.fileno(), 0, nbytes)
        # The mapping keeps its own reference to the file: closing the handle is safe, and the
        # file's blocks are freed when the last view of the array is gone.
        return np.memmap(handle, dtype=dtype, mode="r+", shape=shape)


def is_spilled(array: np.ndarray) -> bool:
    """Whether ``array`` (or the array it is a view of) is mapped from a file."""
    return getattr(array, "_mmap", None) is not None


def release(array: np.ndarray) -> None:
    """Drop the memory pages of a file-mapped ``array`` from this process (the data stay in
    the file, which is shared and written back by the kernel); nothing for an ordinary array.
    """
    mapping = getattr(array, "_mmap", None)
    if mapping is not None and not mapping.closed:
        mapping.madvise(mmap.MADV_DONTNEED)
