"""What becomes of each received object, with real DCMTK and pynetdicom peers: a whole study's
other objects, UID collisions, odd header values, and a database that fails."""

from __future__ import annotations

import errno
import hashlib
import sqlite3
import threading
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select, text

from ctp_node.receive.intake import (
    STATUS_DUPLICATE_SOP_INSTANCE,
    STATUS_OUT_OF_RESOURCES,
    STATUS_PROCESSING_FAILURE,
    STATUS_SUCCESS,
    out_of_space,
)
from ctp_node.store.ingest import (
    instance_paths,
    list_rejections,
    list_series,
)
from ctp_node.store.models import Instance
from ctp_node.store.others import list_other_series
from tests.conftest import stored_count, storescu
from tests.dicom_checks import with_other_pixels
from tests.receive.conftest import AE_TITLE, send_with_pynetdicom
from tests.study_objects import PRIVATE_PROFILE, write_other_objects


@pytest.fixture(scope="module")
def whole_study(small_series, tmp_path_factory) -> dict[str, list[Path]]:
    """The small perfusion series and the other objects of its study."""
    others = write_other_objects(small_series[0], tmp_path_factory.mktemp("others"))
    return {"perfusion": small_series, **others}


def _files(study: dict[str, list[Path]]) -> list[Path]:
    return [path for paths in study.values() for path in paths]


def _instance(db, sop_uid: str) -> Instance:
    with db.session() as s:
        return s.scalars(select(Instance).where(Instance.sop_instance_uid == sop_uid)).one()


@pytest.mark.parametrize("keep", [False, True])
def test_whole_study_send_succeeds_and_other_objects_are_recorded(
    listener, whole_study, keep, tmp_path
) -> None:
    port, spool, db = listener(keep_other_objects=keep)
    files = _files({k: v for k, v in whole_study.items() if k != "private"})
    sent = storescu(files, port, AE_TITLE, calling="CT1")
    assert sent.returncode == 0
    assert stored_count(sent) == len(files), sent.stderr
    # storescu proposes a class it does not know (a vendor's private one) only from a
    # configuration profile, as a PACS routing rule would; the node accepts it as storage.
    profile = tmp_path / "private.cfg"
    profile.write_text(PRIVATE_PROFILE)
    private = storescu(
        whole_study["private"], port, AE_TITLE, calling="CT1", extra=("-xf", str(profile), "P")
    )
    assert private.returncode == 0 and stored_count(private) == 1, private.stderr

    series = {s.series_instance_uid: s.instance_count for s in list_series(db)}
    perfusion, head = (
        pydicom.dcmread(whole_study[k][0]) for k in ("perfusion", "single_volume_ct")
    )
    assert series == {
        perfusion.SeriesInstanceUID: len(whole_study["perfusion"]),
        head.SeriesInstanceUID: len(whole_study["single_volume_ct"]),
    }
    others = {o.sop_class_uid: o for o in list_other_series(db)}
    assert set(others) == {
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
        "1.2.840.10008.5.1.4.1.1.88.67",  # X-Ray Radiation Dose SR
        "1.2.840.10008.5.1.4.1.1.4",  # MR
        "1.3.12.2.1107.5.9.1",  # private: Siemens CSA Non-Image
    }
    mr = others["1.2.840.10008.5.1.4.1.1.4"]
    assert (mr.modality, mr.objects, mr.kept) == ("MR", 1, int(keep))
    assert mr.reason == "MR Image Storage is not CT: the node computes perfusion from CT only"
    assert list_rejections(db) == []

    kept = sorted((spool.root / "other").rglob("*.dcm")) if keep else []
    assert len(kept) == (4 if keep else 0)
    # kept as received: the same data set (its file meta is the node's)
    sent_others = [
        pydicom.dcmread(p)
        for k in ("secondary_capture", "dose_sr", "mr", "private")
        for p in whole_study[k]
    ]
    by_uid = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, kept)}
    if keep:
        assert by_uid == {ds.SOPInstanceUID: ds for ds in sent_others}
    if keep:  # a resend keeps no second copy
        storescu(whole_study["mr"], port, AE_TITLE)
        assert len(list((spool.root / "other").rglob("*.dcm"))) == 4


def test_announced_size_and_slice_position_are_recorded(listener, small_series) -> None:
    port, spool, db = listener()
    assert stored_count(storescu(small_series, port, AE_TITLE)) == len(small_series)
    for path in small_series:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        instance = _instance(db, ds.SOPInstanceUID)
        assert instance.temporal_positions == 3 == int(ds.NumberOfTemporalPositions)
        assert instance.images_in_acquisition is None  # not written by the phantom
        assert instance.frames == 1
        assert instance.slice_position_mm == pytest.approx(float(ds.ImagePositionPatient[2]))
        kept = (spool.root / instance.path).read_bytes()
        assert instance.sha256 == hashlib.sha256(kept).hexdigest()
        assert instance.size_bytes == len(kept)


@pytest.mark.parametrize("value", [b"1.5", b"abc", b"1\\2"])
def test_odd_series_number_is_stored_as_none(listener, small_series, tmp_path, value) -> None:
    port, _, db = listener()
    ds = pydicom.dcmread(small_series[0])
    ds.SeriesNumber = 77777777
    path = tmp_path / "odd.dcm"
    ds.save_as(path)
    # pydicom will not write such a value: put it into the file's bytes, same length.
    path.write_bytes(path.read_bytes().replace(b"77777777", value.ljust(8)))
    assert stored_count(storescu([path], port, AE_TITLE)) == 1
    (series,) = list_series(db)
    assert series.series_number is None and series.instance_count == 1


def test_same_uid_with_other_bytes_is_refused_and_the_first_kept(
    listener, small_series, tmp_path
) -> None:
    port, spool, db = listener()
    assert stored_count(storescu(small_series, port, AE_TITLE)) == len(small_series)
    (series,) = list_series(db)
    paths = instance_paths(db, series.series_instance_uid)
    before = {p: (spool.root / p).read_bytes() for p in paths}

    # The same bytes again: Success, nothing written or changed.
    again = storescu(small_series[:1], port, AE_TITLE)
    assert stored_count(again) == 1
    # The same UID with other bytes: refused, and storescu says so.
    other = with_other_pixels(small_series[0], tmp_path / "other.dcm")
    refused = storescu([other], port, AE_TITLE, calling="CT2")
    assert stored_count(refused) == 0
    assert "Unknown Status: 0x111" in refused.stderr

    (rejection,) = list_rejections(db)
    assert rejection.status == STATUS_DUPLICATE_SOP_INSTANCE
    assert rejection.calling_ae_title == "CT2" and rejection.peer_address == "127.0.0.1"
    size = _instance(db, rejection.sop_instance_uid).size_bytes
    assert f"{size} bytes in series" in rejection.reason
    assert f"now {rejection.size_bytes:.0f} bytes" in rejection.reason
    assert (spool.root / rejection.quarantine_path).is_file()
    (after,) = list_series(db)
    assert after.instance_count == len(small_series)
    assert after.last_received_at == series.last_received_at  # no re-armed timer either
    assert instance_paths(db, series.series_instance_uid) == paths
    assert {p: (spool.root / p).read_bytes() for p in paths} == before
    assert sorted(
        p.relative_to(spool.root).as_posix() for p in spool.root.glob("spool/*/*/*")
    ) == sorted(paths)


def test_duplicate_uid_in_a_second_series_disturbs_neither(listener, small_series) -> None:
    port, _, db = listener()
    first = pydicom.dcmread(small_series[0])
    assert int(send_with_pynetdicom(port, first).Status) == STATUS_SUCCESS
    second_series = generate_uid()
    borrowed = pydicom.dcmread(small_series[1])
    borrowed.SeriesInstanceUID = second_series
    borrowed.SOPInstanceUID = first.SOPInstanceUID  # the collision
    own = pydicom.dcmread(small_series[2])
    own.SeriesInstanceUID = second_series
    reply = send_with_pynetdicom(port, borrowed)
    assert int(reply.Status) == STATUS_DUPLICATE_SOP_INSTANCE
    assert "already received" in reply.ErrorComment
    assert int(send_with_pynetdicom(port, own).Status) == STATUS_SUCCESS

    counts = {s.series_instance_uid: s.instance_count for s in list_series(db)}
    assert counts == {first.SeriesInstanceUID: 1, second_series: 1}
    assert _instance(db, first.SOPInstanceUID).series_instance_uid == first.SeriesInstanceUID
    (rejection,) = list_rejections(db)
    assert f"series {first.SeriesInstanceUID} first" in rejection.reason
    assert f"in series {second_series};" in rejection.reason


def _send_together(port: int, datasets: list) -> list[int]:  # type: ignore[type-arg]
    statuses: list[int] = []
    threads = [
        threading.Thread(
            target=lambda ds=ds: statuses.append(int(send_with_pynetdicom(port, ds).Status))
        )
        for ds in datasets
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return statuses


def test_concurrent_associations_with_one_uid_record_exactly_one(listener, small_series) -> None:
    """The database insert decides; every loser removes its file and is told why."""
    port, spool, db = listener()
    variants = []
    for n in range(6):
        ds = pydicom.dcmread(small_series[0])
        pixels = bytearray(ds.PixelData)
        pixels[0] = n
        ds.PixelData = bytes(pixels)
        variants.append(ds)
    statuses = _send_together(port, variants)
    assert sorted(statuses) == [STATUS_SUCCESS] + [STATUS_DUPLICATE_SOP_INSTANCE] * 5
    (series,) = list_series(db)
    assert series.instance_count == 1
    files = list(spool.root.glob("spool/*/*/*.dcm"))
    assert [f.relative_to(spool.root).as_posix() for f in files] == instance_paths(
        db, series.series_instance_uid
    )
    recorded = _instance(db, variants[0].SOPInstanceUID)
    assert recorded.sha256 == hashlib.sha256(files[0].read_bytes()).hexdigest()
    assert len(list_rejections(db)) == 5


def test_failed_record_leaves_no_new_file_and_keeps_an_old_one(listener, small_series) -> None:
    port, spool, db = listener()
    ds = pydicom.dcmread(small_series[0])
    # An unrecorded file already under the instance's name (say, left by a crash).
    folder = spool.root / "spool" / ds.StudyInstanceUID / ds.SeriesInstanceUID
    folder.mkdir(parents=True)
    (folder / f"{ds.SOPInstanceUID}.dcm").write_bytes(b"left before")
    with db.engine.begin() as connection:  # the database refuses every new instance
        connection.execute(
            text(
                "CREATE TRIGGER refuse BEFORE INSERT ON instances "
                "BEGIN SELECT RAISE(ABORT, 'database unavailable'); END"
            )
        )
    reply = send_with_pynetdicom(port, ds)
    assert int(reply.Status) == STATUS_PROCESSING_FAILURE
    assert [p.name for p in folder.iterdir()] == [f"{ds.SOPInstanceUID}.dcm"]
    assert (folder / f"{ds.SOPInstanceUID}.dcm").read_bytes() == b"left before"
    assert not list((spool.root / "spool" / ".incoming").iterdir())
    (rejection,) = list_rejections(db)
    assert rejection.status == STATUS_PROCESSING_FAILURE
    assert "database unavailable" in rejection.reason


def test_a_full_disk_is_out_of_resources_not_a_processing_failure(
    listener, small_series, monkeypatch
) -> None:
    """A sender told 0xA700 sends again later; 0x0110 would say the node failed on the object."""
    port, spool, db = listener()
    first, second = (pydicom.dcmread(p) for p in small_series[:2])

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("ctp_node.receive.spool._fdatasync", full)  # the spool's file system
    assert int(send_with_pynetdicom(port, first).Status) == STATUS_OUT_OF_RESOURCES
    monkeypatch.undo()
    with db.engine.begin() as connection:  # the database's (SQLite's own words for it)
        connection.execute(
            text(
                "CREATE TRIGGER full BEFORE INSERT ON instances "
                "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
            )
        )
    assert int(send_with_pynetdicom(port, second).Status) == STATUS_OUT_OF_RESOURCES
    assert not list((spool.root / "spool").rglob("*.dcm"))
    assert not list((spool.root / "spool" / ".incoming").iterdir())
    rejections = list_rejections(db)
    assert [r.status for r in rejections] == [STATUS_OUT_OF_RESOURCES] * 2
    assert all(r.reason.startswith("disk full: ") for r in rejections)


def test_out_of_space_is_found_in_what_an_error_wraps() -> None:
    assert out_of_space(OSError(errno.ENOSPC, "No space left on device"))
    assert out_of_space(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not out_of_space(OSError(errno.EACCES, "Permission denied"))
    wrapped = RuntimeError("write failed")
    wrapped.__cause__ = sqlite3.OperationalError("database or disk is full")
    assert out_of_space(wrapped)
    assert not out_of_space(sqlite3.OperationalError("database is locked"))
    assert not out_of_space(None)


def test_instance_recorded_before_digests_is_compared_by_its_file(
    listener, small_series, tmp_path
) -> None:
    """A database upgraded from a release without digests: a resend is still recognised."""
    port, _, db = listener()
    ds = pydicom.dcmread(small_series[0])
    assert int(send_with_pynetdicom(port, ds).Status) == STATUS_SUCCESS
    with db.engine.begin() as connection:
        connection.execute(text("UPDATE instances SET sha256 = ''"))
    assert int(send_with_pynetdicom(port, ds).Status) == STATUS_SUCCESS
    other = pydicom.dcmread(with_other_pixels(small_series[0], tmp_path / "other.dcm"))
    assert int(send_with_pynetdicom(port, other).Status) == STATUS_DUPLICATE_SOP_INSTANCE


def test_digest_is_computed_as_the_data_set_arrives(listener, small_series, monkeypatch) -> None:
    """The recorded SHA-256 is the spool file's, and the received file is not read again."""

    def no_reading(path):  # type: ignore[no-untyped-def]
        raise AssertionError(f"{path} read again for its digest")

    monkeypatch.setattr("ctp_node.receive.intake.file_digest", no_reading)
    port, spool, db = listener()
    sent = storescu(small_series, port, AE_TITLE)
    assert stored_count(sent) == len(small_series), sent.stderr
    (series,) = list_series(db)
    for path in instance_paths(db, series.series_instance_uid):
        stored = (spool.root / path).read_bytes()
        uid = pydicom.dcmread(spool.root / path).SOPInstanceUID
        assert _instance(db, uid).sha256 == hashlib.sha256(stored).hexdigest()


def test_parallel_associations_are_all_recorded(listener, small_series) -> None:
    port, spool, db = listener()
    groups = [small_series[n::3] for n in range(3)]
    results: list = []  # type: ignore[type-arg]
    threads = [
        threading.Thread(target=lambda g=g: results.append(storescu(g, port, AE_TITLE)))
        for g in groups
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sum(stored_count(sent) for sent in results) == len(small_series)
    (series,) = list_series(db)
    assert series.instance_count == len(small_series)
    files = sorted(p.relative_to(spool.root).as_posix() for p in spool.root.glob("spool/*/*/*"))
    assert files == sorted(instance_paths(db, series.series_instance_uid))


def test_a_failed_group_commit_refuses_every_object_in_it_and_keeps_no_file(
    listener, small_series
) -> None:
    port, spool, db = listener()
    with db.engine.begin() as connection:  # the database refuses every new instance
        connection.execute(
            text(
                "CREATE TRIGGER refuse BEFORE INSERT ON instances "
                "BEGIN SELECT RAISE(ABORT, 'database unavailable'); END"
            )
        )
    statuses = _send_together(port, [pydicom.dcmread(f) for f in small_series])
    assert statuses == [STATUS_PROCESSING_FAILURE] * len(small_series)
    assert not list(spool.root.glob("spool/*/*/*"))
    assert not list((spool.root / "spool" / ".incoming").iterdir())
    assert len(list_rejections(db)) == len(small_series)
