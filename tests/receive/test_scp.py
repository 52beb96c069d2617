"""The listener with real DCMTK peers: every accepted transfer syntax of CT, and the refusals
of a C-STORE (the associations' are in test_admission.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless, generate_uid

from ctp_node.assemble.headers import read_series
from ctp_node.assemble.layout import layout_acquisition
from ctp_node.assemble.loader import read_hu
from ctp_node.receive.intake import STATUS_DOES_NOT_MATCH_SOP_CLASS, STATUS_OUT_OF_RESOURCES
from ctp_node.store.ingest import instance_paths, list_rejections, list_series
from tests.conftest import dcmtk, stored_count, storescu
from tests.receive.conftest import AE_TITLE, send_with_pynetdicom


def _compress(paths: list[Path], folder: Path, how: str) -> list[Path]:
    folder.mkdir()
    out = []
    for path in paths:
        target = folder / path.name
        if how in ("jpeg-sv1", "jpeg-p14", "jpeg-ls", "deflated", "big-endian"):
            tool, option = {
                "jpeg-sv1": ("dcmcjpeg", "+e1"),
                "jpeg-p14": ("dcmcjpeg", "+el"),
                "jpeg-ls": ("dcmcjpls", "+el"),
                "deflated": ("dcmconv", "+td"),
                "big-endian": ("dcmconv", "+tb"),
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


def single_syntax_profile(syntax: str) -> str:
    """A storescu configuration (``-xf FILE Only``) that proposes CT in ``syntax`` alone.

    storescu has no flag that proposes JPEG process 14, and its flags for deflated and big
    endian also propose the other uncompressed syntaxes, which the node would prefer.
    """
    return f"""
[[TransferSyntaxes]]
[Only]
TransferSyntax1 = {syntax}
[[PresentationContexts]]
[CTOnly]
PresentationContext1 = CTImageStorage\\Only
[[Profiles]]
[Only]
PresentationContexts = CTOnly
"""


ONLY = ("-xf", "{profile}", "Only")


@pytest.mark.parametrize(
    ("how", "syntax", "proposal"),
    [
        ("uncompressed", "1.2.840.10008.1.2.1", ()),
        ("jpeg-sv1", "1.2.840.10008.1.2.4.70", ("-xs",)),
        ("jpeg-p14", "1.2.840.10008.1.2.4.57", ONLY),
        ("jpeg-ls", "1.2.840.10008.1.2.4.80", ("-xt",)),
        ("j2k", "1.2.840.10008.1.2.4.90", ("-xv",)),
        ("rle", "1.2.840.10008.1.2.5", ("-xr",)),
        ("deflated", "1.2.840.10008.1.2.1.99", ONLY),
        ("big-endian", "1.2.840.10008.1.2.2", ONLY),
    ],
)
def test_lossless_syntaxes_are_stored_as_received_and_decode_exactly(
    listener, small_series, tmp_path, how, syntax, proposal
) -> None:
    port, spool, db = listener()
    files = small_series if how == "uncompressed" else _compress(small_series, tmp_path / how, how)
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == syntax
    profile = tmp_path / "storescu.cfg"
    profile.write_text(single_syntax_profile(syntax))
    extra = tuple(arg.format(profile=profile) for arg in proposal)
    sent = storescu(files, port, AE_TITLE, extra=extra)
    assert stored_count(sent) == len(files), sent.stdout + sent.stderr

    (series,) = list_series(db)
    assert series.instance_count == len(files)
    stored = [spool.root / p for p in instance_paths(db, series.series_instance_uid)]
    assert {str(pydicom.dcmread(p).file_meta.TransferSyntaxUID) for p in stored} == {syntax}
    np.testing.assert_array_equal(_hu(stored), _hu(small_series))


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
    status = int(send_with_pynetdicom(port, ds).Status)
    assert status == STATUS_DOES_NOT_MATCH_SOP_CLASS
    (rejection,) = list_rejections(db)
    assert "Series Instance UID" in rejection.reason
    assert (spool.root / rejection.quarantine_path).is_file()
    assert list_series(db) == []


def test_node_keeps_serving_after_refusals(listener, small_series) -> None:
    port, _, db = listener()
    bad = pydicom.dcmread(small_series[0])
    del bad.StudyInstanceUID
    assert int(send_with_pynetdicom(port, bad).Status) == STATUS_DOES_NOT_MATCH_SOP_CLASS
    assert stored_count(storescu(small_series, port, AE_TITLE)) == len(small_series)
    assert list_series(db)[0].instance_count == len(small_series)
