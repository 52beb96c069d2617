"""The completion scheduler: complete by what the headers announce, and one series' trouble
never stops the others."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import update

from ctp_node.assemble.completion import (
    CompletionSettings,
    announced_complete,
    decide_complete_series,
)
from ctp_node.perfusion import Acquisition
from ctp_node.phantom.dicom import StudyIdentity, write_ct_series
from ctp_node.store import Database
from ctp_node.store.ingest import (
    AnnouncedSize,
    ReceivedInstance,
    announced_sizes,
    list_series,
    record_instance,
)
from ctp_node.store.models import Instance, Series, utcnow
from ctp_node.store.queue import list_jobs
from tests.dicom_checks import spoil_rows

T, Z = 12, 3


def _size(instances: int, **announced) -> AnnouncedSize:  # type: ignore[no-untyped-def]
    """What a series announces, quiet for 5 s unless ``quiet_s`` says otherwise."""
    return AnnouncedSize(
        quiet_s=announced.get("quiet_s", 5.0),
        instances=instances,
        images=instances * (announced.get("frames_per_instance") or 1),
        images_in_acquisition=announced.get("images_in_acquisition"),
        temporal_positions=announced.get("temporal_positions"),
        frames_per_instance=announced.get("frames_per_instance", 1),
        slice_positions_mm=announced.get("slice_positions_mm", ()),
    )


def test_images_in_acquisition_reached_is_complete() -> None:
    assert announced_complete(_size(36, images_in_acquisition=36))
    assert not announced_complete(_size(35, images_in_acquisition=36))
    assert not announced_complete(_size(1, images_in_acquisition=1))  # a single image says nothing


def test_every_slice_at_every_temporal_position_is_complete() -> None:
    full = tuple(float(z) * 5 for _ in range(T) for z in range(Z))
    assert announced_complete(_size(T * Z, temporal_positions=T, slice_positions_mm=full))
    # time points 0-10 of every slice, and the last one of two slices only
    partial = full[: (T - 1) * Z + 2]
    assert not announced_complete(
        _size(len(partial), temporal_positions=T, slice_positions_mm=partial)
    )
    # sent slice by slice: after the first slice, every position seen has all its time points;
    # only a pause in the sending tells that no other slice follows
    first_slice = tuple(0.0 for _ in range(T))
    assert not announced_complete(
        _size(T, temporal_positions=T, slice_positions_mm=first_slice, quiet_s=0.1)
    )
    assert not announced_complete(
        _size(T * Z, temporal_positions=T, slice_positions_mm=full, quiet_s=0.5)
    )
    # positions that differ by less than the tolerance are the same slice
    jittered = tuple(p + 0.01 * (i % 2) for i, p in enumerate(full))
    assert announced_complete(_size(T * Z, temporal_positions=T, slice_positions_mm=jittered))


def test_multi_frame_instances_one_per_time_point() -> None:
    assert announced_complete(_size(T, temporal_positions=T, frames_per_instance=Z))
    assert not announced_complete(_size(T - 1, temporal_positions=T, frames_per_instance=Z))


def test_nothing_announced_waits_for_the_quiet_time() -> None:
    assert not announced_complete(_size(36))


@pytest.fixture
def db(tmp_path: Path):
    database = Database(f"sqlite:///{tmp_path / 'node.db'}")
    database.create_schema()
    yield database
    database.dispose()


def _series_on_disk(root: Path, name: str) -> list[Path]:
    rng = np.random.default_rng(1)
    acquisition = Acquisition(
        hu=rng.normal(35, 10, size=(T, Z, 16, 16)).astype(np.float32),
        times_s=np.arange(T) * 1.5,
        pixel_spacing_mm=(1.0, 1.0),
        slice_spacing_mm=5.0,
        slice_positions_mm=np.array([[0.0, 0.0, 5.0 * z] for z in range(Z)]),
    )
    return write_ct_series(acquisition, root / name, identity=StudyIdentity.new())


def _record(db: Database, root: Path, paths: list[Path]) -> str:
    import pydicom

    series_uid = ""
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        series_uid = str(ds.SeriesInstanceUID)
        record_instance(
            db,
            ReceivedInstance(
                sop_instance_uid=str(ds.SOPInstanceUID),
                sop_class_uid=str(ds.SOPClassUID),
                series_instance_uid=series_uid,
                study_instance_uid=str(ds.StudyInstanceUID),
                transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                modality="CT",
                accession_number="",
                series_number=1,
                path=str(path.relative_to(root)),
                size_bytes=path.stat().st_size,
                calling_ae_title="CT1",
            ),
        )
        with db.engine.begin() as connection:  # what the receiver reads from the header
            connection.execute(
                update(Instance)
                .where(Instance.sop_instance_uid == str(ds.SOPInstanceUID))
                .values(
                    temporal_positions=int(ds.NumberOfTemporalPositions),
                    slice_position_mm=float(ds.ImagePositionPatient[2]),
                )
            )
    return series_uid


def test_a_series_whose_announced_images_arrived_is_queued_without_waiting(db, tmp_path) -> None:
    paths = _series_on_disk(tmp_path, "ct")
    series_uid = _record(db, tmp_path, paths[:-1])
    settings = CompletionSettings(stable_after_s=3600, min_time_points=10)
    assert decide_complete_series(db, tmp_path, settings) == []  # one image short, not quiet
    assert not announced_complete(announced_sizes(db, 3600)[series_uid])
    _record(db, tmp_path, paths[-1:])
    assert decide_complete_series(db, tmp_path, settings) == []  # still sending, maybe
    with db.engine.begin() as connection:  # the sender has been silent for 3 s
        connection.execute(
            update(Series).values(last_received_at=utcnow() - dt.timedelta(seconds=3))
        )
    assert len(decide_complete_series(db, tmp_path, settings)) == 1
    (series,) = list_series(db)
    assert series.state == "perfusion" and "all announced images arrived" in series.reason


def test_a_malformed_image_does_not_stop_the_other_series(db, tmp_path) -> None:
    bad = _series_on_disk(tmp_path, "bad")[:1]
    spoil_rows(bad[0])
    bad_uid = _record(db, tmp_path, bad)
    good_uid = _record(db, tmp_path, _series_on_disk(tmp_path, "good"))
    settings = CompletionSettings(stable_after_s=0.0, min_time_points=10)
    for _ in range(3):  # every pass, not only the first, goes on past the bad series
        decide_complete_series(db, tmp_path, settings)
    states = {s.series_instance_uid: (s.state, s.reason) for s in list_series(db)}
    assert states[good_uid][0] == "perfusion"
    assert states[bad_uid][0] == "error", states[bad_uid]
    assert "no usable image" in states[bad_uid][1] and "(0028,0010)" in states[bad_uid][1]
    assert [j.series_instance_uid for j in list_jobs(db)] == [good_uid]


def test_a_perfusion_series_with_an_unreadable_member_is_still_queued(db, tmp_path) -> None:
    paths = _series_on_disk(tmp_path, "ct")
    spoil_rows(paths[4])
    series_uid = _record(db, tmp_path, paths)
    settings = CompletionSettings(stable_after_s=0.0, min_time_points=10)
    assert len(decide_complete_series(db, tmp_path, settings)) == 1
    (series,) = list_series(db)
    assert series.series_instance_uid == series_uid and series.state == "perfusion"
    assert "1 image(s) cannot be used" in series.reason


def test_a_short_series_is_ignored_unless_unreadable_members_may_be_why(db, tmp_path) -> None:
    """Too few time points: ignored with the reason; the same with a member that cannot be
    read is queued (that member may be what is missing), the reason naming its file."""
    settings = CompletionSettings(stable_after_s=0.0, min_time_points=10)
    short = _series_on_disk(tmp_path, "short")[: 4 * Z]
    short_uid = _record(db, tmp_path, short)
    spoilt = _series_on_disk(tmp_path, "spoilt")[: 4 * Z + 1]
    spoil_rows(spoilt[-1])
    spoilt_uid = _record(db, tmp_path, spoilt)
    assert len(decide_complete_series(db, tmp_path, settings)) == 1
    states = {s.series_instance_uid: (s.state, s.reason) for s in list_series(db)}
    assert states[short_uid][0] == "ignored" and "only 4 time point(s)" in states[short_uid][1]
    assert states[spoilt_uid][0] == "perfusion", states[spoilt_uid]
    assert f"file {spoilt[-1].name}: Rows (0028,0010) cannot be decoded" in states[spoilt_uid][1]
