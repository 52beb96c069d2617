"""Acknowledged means readable: malformed data sets that pynetdicom takes in are refused with a
specific status, one log line and a record, and the listener keeps serving."""

from __future__ import annotations

import io
import logging
import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config

from ctp_node.receive.intake import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_DOES_NOT_MATCH_SOP_CLASS,
    STATUS_SUCCESS,
)
from ctp_node.receive.readable import Unreadable, read_received
from ctp_node.store.ingest import list_rejections, list_series
from tests.conftest import stored_count, storescu
from tests.dicom_checks import spoil_rows
from tests.receive.conftest import AE_TITLE


def _file(ds: pydicom.Dataset, body: bytes, syntax: str, folder: Path, name: str) -> Path:
    """A DICOM file whose meta says ``syntax`` and whose data set is ``body``, as it is."""
    ds.file_meta.TransferSyntaxUID = syntax
    out = io.BytesIO()
    out.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(out, ds.file_meta, enforce_standard=True)
    path = folder / name
    path.write_bytes(out.getvalue() + body)
    return path


def _body(path: Path) -> bytes:
    """The data set bytes of a file, after its meta."""
    meta = pydicom.filereader.read_file_meta_info(path)
    return path.read_bytes()[128 + 4 + 12 + int(meta.FileMetaInformationGroupLength) :]


def _nested_sequences(depth: int) -> bytes:
    """(0008,1140) SQ nested ``depth`` deep, undefined lengths (explicit VR little endian)."""
    open_sq = b"\x08\x00\x40\x11SQ\0\0" + struct.pack("<L", 0xFFFFFFFF)
    open_item = b"\xfe\xff\x00\xe0" + struct.pack("<L", 0xFFFFFFFF)
    close_item = b"\xfe\xff\x0d\xe0\0\0\0\0"
    close_sq = b"\xfe\xff\xdd\xe0\0\0\0\0"
    return (open_sq + open_item) * depth + (close_item + close_sq) * depth


@pytest.fixture
def malformed(small_series, tmp_path) -> dict[str, tuple[Path, int, str]]:
    """name: (file, the status it must get, a word of the reason)."""
    source = small_series[0]
    body = _body(source)

    def fresh() -> pydicom.Dataset:
        ds = pydicom.dcmread(source)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        return ds

    cases: dict[str, tuple[Path, int, str]] = {}
    ds = fresh()
    huge = b"\xe1\x7f\x10\x10OB\0\0" + struct.pack("<L", 0x7FFFFFF0) + b"abc"
    cases["2 GB element"] = (
        _file(ds, _body_of(ds) + huge, ExplicitVRLittleEndian, tmp_path, "huge.dcm"),
        STATUS_CANNOT_UNDERSTAND,
        "declares 2147483632 bytes",
    )
    ds = fresh()
    cases["explicit under implicit"] = (
        _file(ds, _body_of(ds), ImplicitVRLittleEndian, tmp_path, "vr.dcm"),
        STATUS_CANNOT_UNDERSTAND,
        "explicit VR",
    )
    ds = fresh()
    plain = _body_of(ds)
    at = plain.index(b"\x20\x00\x0d\x00")  # before (0020,000D): tags stay in order
    deep = plain[:at] + _nested_sequences(5000) + plain[at:]
    cases["deep sequences"] = (
        _file(ds, deep, ExplicitVRLittleEndian, tmp_path, "deep.dcm"),
        STATUS_CANNOT_UNDERSTAND,
        "nested too deep",
    )
    ds = fresh()
    ds.PixelData = ds.PixelData[:100]
    cases["short pixel data"] = (
        _file(ds, _body_of(ds), ExplicitVRLittleEndian, tmp_path, "short.dcm"),
        STATUS_CANNOT_UNDERSTAND,
        "Pixel Data holds 100 bytes",
    )
    ds = fresh()
    del ds.PixelData
    cases["CT without pixels"] = (
        _file(ds, _body_of(ds), ExplicitVRLittleEndian, tmp_path, "nopixels.dcm"),
        STATUS_DOES_NOT_MATCH_SOP_CLASS,
        "without PixelData",
    )
    ds = fresh()
    truncated = _body_of(ds)[:-5000]
    cases["truncated"] = (
        _file(ds, truncated, ExplicitVRLittleEndian, tmp_path, "cut.dcm"),
        STATUS_CANNOT_UNDERSTAND,
        "",
    )
    ds = fresh()
    spoiled = spoil_rows(_file(ds, _body_of(ds), ExplicitVRLittleEndian, tmp_path, "rows.dcm"))
    cases["Rows 3 bytes long"] = (spoiled, STATUS_CANNOT_UNDERSTAND, "(0028,0010)")
    assert body  # the source itself is readable (checked below)
    return cases


def _body_of(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return _body_from_bytes(out.getvalue())


def _body_from_bytes(data: bytes) -> bytes:
    (length,) = struct.unpack_from("<L", data, 128 + 4 + 8)
    return data[128 + 4 + 12 + length :]


def test_a_well_formed_ct_image_is_readable(small_series) -> None:
    header = read_received(small_series[0])
    assert header.is_ct and header.frames == 1


def test_each_malformed_data_set_gets_its_status_and_reason(malformed) -> None:
    for name, (path, status, words) in malformed.items():
        with pytest.raises(Unreadable) as refused:
            read_received(path)
        assert refused.value.status == status, name
        assert words in refused.value.reason, (name, refused.value.reason)


def send_raw(port: int, path: Path, called: str = AE_TITLE) -> int:
    """C-STORE the file's data set bytes as they are (no decoding by the sender)."""
    meta = pydicom.filereader.read_file_meta_info(path)
    ae = AE(ae_title="FUZZER")
    ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        reply = assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
        assoc.release()
    return int(reply.Status)


def test_malformed_data_sets_are_refused_one_line_each_and_the_node_serves(
    listener, malformed, small_series, caplog
) -> None:
    port, spool, db = listener()
    with caplog.at_level(logging.WARNING):
        statuses = {name: send_raw(port, path) for name, (path, _, _) in malformed.items()}
    assert statuses == {name: status for name, (_, status, _) in malformed.items()}
    rejections = list_rejections(db)
    assert len(rejections) == len(malformed)
    assert all(r.quarantine_path and (spool.root / r.quarantine_path).is_file() for r in rejections)
    refused = [r for r in caplog.records if "refused (0x" in r.getMessage()]
    assert len(refused) == len(malformed) and not any(r.exc_info for r in caplog.records)
    assert "Traceback" not in caplog.text
    assert not list((spool.root / "spool" / ".incoming").iterdir())
    assert stored_count(storescu(small_series, port, AE_TITLE)) == len(small_series)
    assert list_series(db)[0].instance_count == len(small_series)
    assert send_raw(port, small_series[0]) == STATUS_SUCCESS  # the same bytes again
