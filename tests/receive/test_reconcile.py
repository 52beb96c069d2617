"""Start-up reconciliation of the spool with the database, after what a crash leaves behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import update

from ctp_node.receive.reconcile import Reconciliation, reconcile_spool
from ctp_node.store.ingest import find_instance, instance_paths, list_series
from ctp_node.store.models import Series, utcnow
from tests.conftest import free_port, node_config, start_node, stop_process, stored_count, storescu
from tests.receive.conftest import AE_TITLE


def _copy_with_new_uid(source: Path, target_folder: Path) -> tuple[Path, str]:
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    target = target_folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(target)
    return target, str(ds.SOPInstanceUID)


def test_what_a_crash_leaves_is_put_right(listener, small_series, tmp_path) -> None:
    port, spool, db = listener()
    assert stored_count(storescu(small_series, port, AE_TITLE)) == len(small_series)
    (series,) = list_series(db)
    uid = series.series_instance_uid
    recorded = instance_paths(db, uid)
    folder = (spool.root / recorded[0]).parent

    # A write interrupted before its rename.
    (spool.incoming / "0123abcd.part").write_bytes(b"half an image")
    # Written and renamed, but the crash came before the record: indexed.
    orphan, orphan_uid = _copy_with_new_uid(small_series[0], folder)
    # Garbage under an instance's name: quarantined.
    (folder / "1.2.826.0.1.3680043.8.498.7.dcm").write_bytes(b"not DICOM at all")
    # A second copy of a recorded instance: removed. The same UID, other bytes: quarantined.
    shutil.copy(spool.root / recorded[1], folder / (Path(recorded[1]).stem + "-0a1b2c.dcm"))
    colliding = pydicom.dcmread(spool.root / recorded[2])
    colliding.PixelData = bytes(len(colliding.PixelData))
    colliding.save_as(folder / (Path(recorded[2]).stem + "-3d4e5f.dcm"))
    colliding_bytes = (folder / (Path(recorded[2]).stem + "-3d4e5f.dcm")).read_bytes()
    # A recorded instance whose file is gone: its record is removed.
    (spool.root / recorded[3]).unlink()
    missing_uid = Path(recorded[3]).stem

    # A series retention purged on purpose: its records stay although its files are gone.
    purged_uid = _second_series(small_series, tmp_path, port)
    purged_paths = instance_paths(db, purged_uid)
    with db.session() as s:
        purge = update(Series).where(Series.series_instance_uid == purged_uid)
        s.execute(purge.values(purged_at=utcnow()))
    for path in purged_paths:
        (spool.root / path).unlink()

    result = reconcile_spool(spool, db)

    assert result == Reconciliation(
        partial_writes_removed=1,
        files_indexed=1,
        files_quarantined=2,
        copies_removed=1,
        missing_records_removed=1,
    )
    assert not list(spool.incoming.iterdir())
    indexed = find_instance(db, orphan_uid)
    assert indexed is not None and spool.root / indexed.path == orphan
    assert find_instance(db, missing_uid) is None
    counts = {s.series_instance_uid: s.instance_count for s in list_series(db)}
    assert counts == {uid: len(small_series), purged_uid: len(purged_paths)}
    assert sorted(instance_paths(db, uid)) == sorted(
        p.relative_to(spool.root).as_posix() for p in folder.iterdir()
    )
    quarantined = {p.read_bytes() for p in (spool.root / "quarantine").rglob("*.dcm")}
    assert quarantined == {b"not DICOM at all", colliding_bytes}
    assert instance_paths(db, purged_uid) == purged_paths

    assert reconcile_spool(spool, db) == Reconciliation()  # nothing left to do


def _second_series(small_series: list[Path], tmp_path: Path, port: int) -> str:
    """Two images of the series in another series, sent to the listener; returns its UID."""
    series_uid = generate_uid()
    folder = tmp_path / "second"
    folder.mkdir()
    files = []
    for path in small_series[:2]:
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / path.name)
        files.append(folder / path.name)
    assert stored_count(storescu(files, port, AE_TITLE)) == len(files)
    return series_uid


@pytest.mark.slow
def test_serve_reconciles_before_it_listens(small_series, tmp_path) -> None:
    root = tmp_path / "node"
    storage = root / "storage"
    ds = pydicom.dcmread(small_series[0], stop_before_pixels=True)
    folder = storage / "spool" / ds.StudyInstanceUID / ds.SeriesInstanceUID
    folder.mkdir(parents=True)
    shutil.copy(small_series[0], folder / f"{ds.SOPInstanceUID}.dcm")
    (storage / "spool" / ".incoming").mkdir()
    (storage / "spool" / ".incoming" / "beef.part").write_bytes(b"partial")

    node = start_node(root, node_config(root, free_port(), [], worker={"count": 0}))
    try:
        (series,) = node.status()["series"]
        assert series["series_instance_uid"] == ds.SeriesInstanceUID and series["instances"] == 1
        assert (
            "1 partial write(s) removed, 1 unrecorded file(s) indexed, 0 quarantined" in node.log()
        )
    finally:
        stop_process(node.process)
    assert not (storage / "spool" / ".incoming" / "beef.part").exists()
