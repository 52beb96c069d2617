"""The listener with real DCMTK peers: every accepted transfer syntax, and every refusal."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless, RLELossless, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from ctp_node.assemble.headers import read_series
from ctp_node.assemble.layout import layout_acquisition
from ctp_node.assemble.loader import read_hu
from ctp_node.receive.scp import (
    STATUS_DOES_NOT_MATCH_SOP_CLASS,
    STATUS_OUT_OF_RESOURCES,
    Caller,
    ListenerSettings,
    start_listener,
)
from ctp_node.receive.spool import Spool
from ctp_node.store import Database
from ctp_node.store.ingest import instance_paths, list_rejections, list_series
from tests.conftest import dcmtk, echo_ok, free_port, stored_count, storescu

AE_TITLE = "CTPNODE"


@pytest.fixture
def listener(tmp_path):
    """A factory: ``listener(min_free_bytes=..., allowed=...)`` → (port, spool, db)."""
    servers = []

    def start(min_free_bytes: int = 0, allowed: tuple[Caller, ...] = ()):
        db = Database(f"sqlite:///{tmp_path / 'node.db'}")
        db.create_schema()
        spool = Spool(tmp_path / "storage", min_free_bytes)
        port = free_port()
        settings = ListenerSettings(AE_TITLE, "127.0.0.1", port, allowed_callers=allowed)
        servers.append((start_listener(settings, spool, db), db))
        return port, spool, db

    yield start
    for server, db in servers:
        server.shutdown()
        db.dispose()


@pytest.fixture(scope="module")
def small_series(tmp_path_factory) -> list[Path]:
    """Three time points × two slices of a small CT series."""
    from ctp_node.perfusion import Acquisition
    from ctp_node.phantom_dicom import StudyIdentity, write_ct_series

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


def _compress(paths: list[Path], folder: Path, how: str) -> list[Path]:
    folder.mkdir()
    out = []
    for path in paths:
        target = folder / path.name
        if how in ("jpeg-sv1", "jpeg-p14", "jpeg-ls"):
            tool, option = {
                "jpeg-sv1": ("dcmcjpeg", "+e1"),
                "jpeg-p14": ("dcmcjpeg", "+el"),
                "jpeg-ls": ("dcmcjpls", "+el"),
            }[how]
            subprocess.run(
                [dcmtk(tool), option, str(path), str(target)],
                check=True,
                capture_output=True,
                timeout=60,
            )
        else:
            ds = pydicom.dcmread(path)
            ds.compress({"j2k": JPEG2000Lossless, "rle": RLELossless}[how])
            ds.save_as(target)
        out.append(target)
    return out


def _hu(paths: list[Path]) -> np.ndarray:
    refs, _ = read_series(paths)
    return read_hu(layout_acquisition(refs, min_time_points=3))


# storescu has no flag that proposes JPEG process 14; a configuration profile does.
PROCESS14_PROFILE = """
[[TransferSyntaxes]]
[P14]
TransferSyntax1 = 1.2.840.10008.1.2.4.57
[[PresentationContexts]]
[CTP14]
PresentationContext1 = CTImageStorage\\P14
[[Profiles]]
[P14]
PresentationContexts = CTP14
"""


@pytest.mark.parametrize(
    ("how", "syntax", "proposal"),
    [
        ("uncompressed", "1.2.840.10008.1.2.1", ()),
        ("jpeg-sv1", "1.2.840.10008.1.2.4.70", ("-xs",)),
        ("jpeg-p14", "1.2.840.10008.1.2.4.57", ("-xf", "{profile}", "P14")),
        ("jpeg-ls", "1.2.840.10008.1.2.4.80", ("-xt",)),
        ("j2k", "1.2.840.10008.1.2.4.90", ("-xv",)),
        ("rle", "1.2.840.10008.1.2.5", ("-xr",)),
    ],
)
def test_lossless_syntaxes_are_stored_as_received_and_decode_exactly(
    listener, small_series, tmp_path, how, syntax, proposal
) -> None:
    port, spool, db = listener()
    files = small_series if how == "uncompressed" else _compress(small_series, tmp_path / how, how)
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == syntax
    profile = tmp_path / "storescu.cfg"
    profile.write_text(PROCESS14_PROFILE)
    extra = tuple(arg.format(profile=profile) for arg in proposal)
    sent = storescu(files, port, AE_TITLE, extra=extra)
    assert stored_count(sent) == len(files), sent.stdout + sent.stderr

    (series,) = list_series(db)
    assert series.instance_count == len(files)
    stored = [spool.root / p for p in instance_paths(db, series.series_instance_uid)]
    assert {str(pydicom.dcmread(p).file_meta.TransferSyntaxUID) for p in stored} == {syntax}
    np.testing.assert_array_equal(_hu(stored), _hu(small_series))


def test_echo_and_wrong_called_ae(listener) -> None:
    port, _, _ = listener()
    assert echo_ok(port, AE_TITLE)
    assert not echo_ok(port, "SOMEONEELSE")


def test_caller_not_allowed_is_rejected_and_recorded(listener, small_series) -> None:
    port, _, db = listener(allowed=(Caller("CT1", "127.0.0.1"),))
    assert echo_ok(port, AE_TITLE, calling="CT1")
    assert not echo_ok(port, AE_TITLE, calling="INTRUDER")
    assert stored_count(storescu(small_series, port, AE_TITLE, calling="INTRUDER")) == 0
    assert list_series(db) == []
    reasons = [r.reason for r in list_rejections(db)]
    assert any("'INTRUDER'" in r and "allowed_callers" in r for r in reasons)


def test_full_disk_refuses_with_out_of_resources(listener, small_series) -> None:
    port, spool, db = listener(min_free_bytes=1 << 62)  # more than any disk
    sent = storescu(small_series[:1], port, AE_TITLE)
    assert "Refused: OutOfResources" in sent.stderr
    assert list_series(db) == []
    (rejection,) = list_rejections(db)
    assert rejection.status == STATUS_OUT_OF_RESOURCES and "disk full" in rejection.reason
    assert not any(spool.root.joinpath("spool").rglob("*.dcm"))


def test_missing_series_uid_is_refused_and_quarantined(listener, small_series) -> None:
    port, spool, db = listener()
    ds = pydicom.dcmread(small_series[0])
    del ds.SeriesInstanceUID
    ds.SOPInstanceUID = generate_uid()
    status = _send_with_pynetdicom(port, ds)
    assert status == STATUS_DOES_NOT_MATCH_SOP_CLASS
    (rejection,) = list_rejections(db)
    assert "Series Instance UID" in rejection.reason
    assert (spool.root / rejection.quarantine_path).is_file()
    assert list_series(db) == []


def test_unsupported_sop_class_is_not_accepted(listener, small_series, tmp_path) -> None:
    port, _, db = listener()
    mr = tmp_path / "mr.dcm"
    ds = pydicom.dcmread(small_series[0])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR
    ds.save_as(mr)
    sent = storescu([mr], port, AE_TITLE)
    assert sent.returncode != 0 or "no presentation context" in (sent.stdout + sent.stderr).lower()
    assert list_series(db) == []


def test_node_keeps_serving_after_refusals(listener, small_series) -> None:
    port, _, db = listener()
    bad = pydicom.dcmread(small_series[0])
    del bad.StudyInstanceUID
    assert _send_with_pynetdicom(port, bad) == STATUS_DOES_NOT_MATCH_SOP_CLASS
    assert stored_count(storescu(small_series, port, AE_TITLE)) == len(small_series)
    assert list_series(db)[0].instance_count == len(small_series)


def _send_with_pynetdicom(port: int, ds: Dataset) -> int:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()
