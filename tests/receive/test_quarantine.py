"""The quarantine stays within ``storage.retention.quarantine_max_bytes`` as refused objects
arrive, from several associations at once: the oldest files go first, the refusals stay on
record, and an object larger than the bound is recorded without its bytes."""

from __future__ import annotations

import concurrent.futures
import logging
import os
from pathlib import Path

from ctp_node.receive.intake import STATUS_DUPLICATE_SOP_INSTANCE
from ctp_node.receive.spool import Spool
from ctp_node.retention.disk import files_below
from ctp_node.store.ingest import list_rejections
from tests.conftest import stored_count, storescu
from tests.dicom_checks import with_other_pixels
from tests.receive.conftest import AE_TITLE


def _other_bytes(files: list[Path], folder: Path) -> list[Path]:
    """The same SOP Instance UIDs with other pixels: each one a collision the node refuses."""
    folder.mkdir(parents=True, exist_ok=True)
    return [with_other_pixels(path, folder / path.name) for path in files]


def _quarantine(root: Path) -> dict[str, int]:
    return {
        path.relative_to(root).as_posix(): stat.st_size
        for path, stat in files_below(root / "quarantine")
    }


def test_many_refusals_at_once_keep_the_quarantine_within_its_bound(
    listener, small_series, tmp_path
) -> None:
    size = max(p.stat().st_size for p in small_series)
    bound = 3 * size + size // 2  # room for three refused objects
    port, spool, db = listener(quarantine_max_bytes=bound)
    assert stored_count(storescu(small_series, port, AE_TITLE)) == len(small_series)
    collisions = _other_bytes(small_series, tmp_path / "collisions")

    # Four senders at once, each refused for every object: 24 refusals.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        sent = list(pool.map(lambda n: storescu(collisions, port, AE_TITLE, f"CT{n}"), range(4)))
    assert all(stored_count(s) == 0 and "0x111" in s.stderr for s in sent)

    rejections = list_rejections(db)
    assert len(rejections) == 4 * len(collisions)  # every refusal stays on record
    assert {r.status for r in rejections} == {STATUS_DUPLICATE_SOP_INSTANCE}
    on_disk = _quarantine(spool.root)
    assert sum(on_disk.values()) <= bound
    assert len(on_disk) == 3  # the bound is used, not emptied
    assert spool.quarantine_bound.total_bytes == sum(on_disk.values())
    # The records of deleted files no longer point at them; the newest three still do.
    kept = [r.quarantine_path for r in rejections if r.quarantine_path]
    assert sorted(kept) == sorted(on_disk)


def test_an_object_larger_than_the_bound_is_recorded_without_its_bytes(
    listener, small_series, tmp_path, caplog
) -> None:
    size = min(p.stat().st_size for p in small_series)
    port, spool, db = listener(quarantine_max_bytes=size // 2)
    assert stored_count(storescu(small_series[:1], port, AE_TITLE)) == 1
    (collision,) = _other_bytes(small_series[:1], tmp_path / "collision")
    with caplog.at_level(logging.INFO):
        refused = storescu([collision], port, AE_TITLE, calling="CT2")
    assert stored_count(refused) == 0
    (rejection,) = list_rejections(db)
    assert rejection.quarantine_path == ""
    assert "bytes not quarantined" in rejection.reason
    assert "storage.retention.quarantine_max_bytes" in rejection.reason
    assert _quarantine(spool.root) == {}
    (line,) = [r.getMessage() for r in caplog.records if "not quarantined" in r.getMessage()]
    assert f"{rejection.sop_instance_uid} not quarantined" in line


def test_files_already_in_quarantine_are_counted_and_go_first(tmp_path) -> None:
    root = tmp_path / "storage"
    folder = root / "quarantine" / "20240101"
    folder.mkdir(parents=True)
    for age_s, name in ((300, "oldest"), (200, "older"), (100, "old")):
        path = folder / f"{name}.dcm"
        path.write_bytes(b"x" * 1000)
        then = path.stat().st_mtime - age_s
        os.utime(path, (then, then))

    spool = Spool(root, quarantine_max_bytes=3500)
    assert spool.quarantine_bound.total_bytes == 3000
    first = spool.quarantine(b"y" * 1000, "1.2.3")
    assert first.evicted == ("quarantine/20240101/oldest.dcm",)
    second = spool.quarantine(b"z" * 1500, "1.2.4")
    assert second.evicted == ("quarantine/20240101/older.dcm",)
    assert sorted(_quarantine(root)) == sorted(
        ["quarantine/20240101/old.dcm", first.path, second.path]
    )
    assert spool.quarantine_bound.total_bytes == 3500
