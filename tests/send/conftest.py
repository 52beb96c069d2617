"""What the sender tests share: files to send, and a node database with a job to export."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctp_node.store import Database
from ctp_node.store.ingest import ReceivedInstance, decide_series, record_instance


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> list[Path]:
    """Two CT files standing in for outputs (the sender sends any DICOM file as it is)."""
    import numpy as np

    from ctp_node.perfusion import Acquisition
    from ctp_node.phantom.dicom import StudyIdentity, write_ct_series

    acquisition = Acquisition(
        hu=np.zeros((1, 2, 16, 16), np.float32),
        times_s=np.array([0.0]),
        pixel_spacing_mm=(1.0, 1.0),
        slice_spacing_mm=5.0,
    )
    return write_ct_series(
        acquisition, tmp_path_factory.mktemp("out"), identity=StudyIdentity.new()
    )


def database_with_a_job(tmp_path: Path) -> tuple[Database, int]:
    """A node database with one finished series and its job, ready for exports."""
    db = Database(f"sqlite:///{tmp_path / 'node.db'}")
    db.create_schema()
    record_instance(
        db,
        ReceivedInstance(
            "1.2.3.4.1",
            "1.2.840.10008.5.1.4.1.1.2",
            "1.2.3.4",
            "1.2.3",
            "1.2.840.10008.1.2.1",
            "CT",
            "",
            1,
            "x",
            1,
            "CT",
        ),
    )
    job_id = decide_series(db, "1.2.3.4", perfusion=True, reason="", expected_instance_count=1)
    return db, job_id


def database_with_exports(tmp_path: Path, outputs: list[Path], destination: str) -> Database:
    """A node database whose outbox holds ``outputs`` (as parametric maps) for
    ``destination``, due now."""
    import pydicom

    from ctp_node.store.outbox import OutputObject, enqueue_exports

    db, job_id = database_with_a_job(tmp_path)
    enqueue_exports(
        db,
        job_id,
        [
            (
                destination,
                OutputObject(pydicom.dcmread(p).SOPInstanceUID, "parametric_maps", p.name),
            )
            for p in outputs
        ],
    )
    return db
