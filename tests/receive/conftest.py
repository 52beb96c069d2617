"""The node's listener on 127.0.0.1 with a real SQLite file and spool, and a small CT series."""

from __future__ import annotations

import ssl
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE

from ctp_node.receive.scp import Caller, ListenerSettings, start_listener
from ctp_node.receive.spool import Spool
from ctp_node.store import Database
from tests.conftest import free_port

AE_TITLE = "CTPNODE"


@pytest.fixture
def listener(tmp_path):
    """A factory: ``listener(min_free_bytes=..., allowed=..., ssl_context=...)`` → (port,
    spool, db); other keywords are :class:`ListenerSettings` fields (the connection limits)."""
    servers = []

    def start(
        min_free_bytes: int = 0,
        allowed: tuple[Caller, ...] = (),
        keep_other_objects: bool = False,
        max_associations: int = 10,
        ssl_context: ssl.SSLContext | None = None,
        quarantine_max_bytes: int | None = None,
        **limits,
    ):
        db = Database(f"sqlite:///{tmp_path / 'node.db'}")
        db.create_schema()
        spool = Spool(tmp_path / "storage", min_free_bytes, quarantine_max_bytes)
        port = free_port()
        settings = ListenerSettings(
            AE_TITLE,
            "127.0.0.1",
            port,
            allowed_callers=allowed,
            max_associations=max_associations,
            keep_other_objects=keep_other_objects,
            **limits,
        )
        servers.append((start_listener(settings, spool, db, ssl_context), db))
        return port, spool, db

    yield start
    for server, db in servers:
        server.shutdown()
        db.dispose()


@pytest.fixture(scope="module")
def small_series(tmp_path_factory) -> list[Path]:
    """Three time points × two slices of a small CT series."""
    from ctp_node.perfusion import Acquisition
    from ctp_node.phantom.dicom import StudyIdentity, write_ct_series

    rng = np.random.default_rng(3)
    hu = rng.normal(40, 30, size=(3, 2, 48, 48)).astype(np.float32)
    hu[:, :, :4] = -1000.0  # air, to exercise the full stored range
    hu[:, :, -4:] = 1500.0  # bone
    acquisition = Acquisition(
        hu=hu,
        times_s=np.array([0.0, 1.5, 3.0]),
        pixel_spacing_mm=(0.5, 0.5),
        slice_spacing_mm=5.0,
        slice_positions_mm=np.array([[0, 0, 0.0], [0, 0, 5.0]]),
    )
    folder = tmp_path_factory.mktemp("small")
    return write_ct_series(acquisition, folder, identity=StudyIdentity.new())


def send_with_pynetdicom(port: int, ds: Dataset, calling: str = "TESTSCU") -> Dataset:
    """C-STORE ``ds`` in its own transfer syntax; returns the response's status data set."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        return assoc.send_c_store(ds)
    finally:
        assoc.release()
