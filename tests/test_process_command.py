"""``ctp-node process`` on a folder as a user has it: a perfusion study among other series.

A series ``serve`` would not compute (an MR image, a Secondary Capture, a CT volume without
time points) is skipped with a line; a perfusion acquisition that gives no maps gets a failure
notice and the exit code 1; every series has a progress line; a header problem names the file.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

#: What a failure notice is: one Secondary Capture page and one SR.
NOTICE_OBJECTS = 2


def run_process(inputs: Path, out: Path) -> subprocess.CompletedProcess:
    """``ctp-node process INPUTS --out OUT`` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "ctp_node", "process", str(inputs), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )


def _copy_as_new_series(paths: list[Path], folder: Path, change=None) -> list[Path]:  # type: ignore[no-untyped-def]
    """Copies of ``paths`` in ``folder`` as another series (new series and instance UIDs)."""
    folder.mkdir(parents=True)
    series_uid = generate_uid()
    copies = []
    for number, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        if change is not None:
            change(ds)
        copies.append(folder / f"image-{number:03d}.dcm")
        ds.save_as(copies[-1])
    return copies


def _as_mr(ds: Dataset) -> None:
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.Modality = "MR"


def _secondary_capture(like: Path, path: Path) -> None:
    """A screenshot-like Secondary Capture of the same study, made from scratch."""
    source = pydicom.dcmread(like, stop_before_pixels=True)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "StudyTime"):
        setattr(ds, keyword, source.get(keyword, ""))
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.zeros((16, 16), np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _single_volume(paths: list[Path], folder: Path) -> None:
    """The first time point alone, as a series of its own: a CT volume without time points."""
    slices = len({float(pydicom.dcmread(p).ImagePositionPatient[2]) for p in paths[:40]})
    _copy_as_new_series(paths[:slices], folder)


def _truncated(paths: list[Path], folder: Path) -> list[str]:
    """A perfusion series cut after 4 time points, with two more images whose Image Position
    (Patient) is missing: ``serve`` gives it a job (the unreadable images may be what keeps it
    from being laid out), and it cannot give maps. Returns the two files' names."""
    slices = len({float(pydicom.dcmread(p).ImagePositionPatient[2]) for p in paths[:40]})
    copies = _copy_as_new_series(paths[: 5 * slices], folder)
    strays = copies[4 * slices : 4 * slices + 2]
    for path in copies[4 * slices :]:
        if path in strays:
            ds = pydicom.dcmread(path)
            del ds.ImagePositionPatient
            ds.save_as(path)
        else:
            path.unlink()
    return [path.name for path in strays]


def _series_uid(folder: Path) -> str:
    return str(pydicom.dcmread(next(folder.iterdir())).SeriesInstanceUID)


def test_what_serve_would_not_compute_is_skipped_with_a_line_and_exit_0(
    small_study, tmp_path: Path
) -> None:
    """A perfusion study beside an MR image, a Secondary Capture, a single CT volume and a text
    file: maps for the study, one skip line for each of the others, no failure notice, exit 0."""
    _, paths = small_study
    inputs = tmp_path / "in"
    shutil.copytree(paths[0].parent, inputs / "perfusion")
    _copy_as_new_series(paths[:1], inputs / "mr", _as_mr)
    _secondary_capture(paths[0], inputs / "sc" / "page.dcm")
    _single_volume(paths, inputs / "volume")
    (inputs / "readme.txt").write_text("not DICOM")

    result = run_process(inputs, tmp_path / "out")

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "skipped file" in output and "readme.txt: not a DICOM file" in output
    for number in range(1, 5):
        assert f"series {number} of 4: " in result.stdout, output
    assert f"{_series_uid(inputs / 'perfusion')} ({len(paths)} images)" in result.stdout
    skips = [line for line in result.stdout.splitlines() if line.startswith("  skipped: ")]
    assert len(skips) == 3, output
    assert any("MR Image Storage is not CT" in line for line in skips)
    assert any("Secondary Capture Image Storage is not CT" in line for line in skips)
    assert any("a single volume" in line for line in skips)
    assert "1 with maps, 0 failed, 3 skipped" in result.stdout
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert written == {_series_uid(inputs / "perfusion"), "results.json"}, written


def test_a_perfusion_series_without_maps_gets_a_notice_and_exit_1(
    small_study, tmp_path: Path
) -> None:
    """A truncated perfusion series (and an MR image beside it): a failure notice for the
    series only, a reason that names the files without an Image Position (Patient) in plain
    words, exit 1."""
    _, paths = small_study
    inputs = tmp_path / "in"
    strays = _truncated(paths, inputs / "truncated")
    _copy_as_new_series(paths[:1], inputs / "mr", _as_mr)

    result = run_process(inputs, tmp_path / "out")

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "series 1 of 2: " in output and "series 2 of 2: " in output
    (failed,) = [line for line in result.stdout.splitlines() if line.startswith("  failed: ")]
    assert "only 4 time point(s)" in failed
    for name in strays:
        assert f"file {name}: no Image Position (Patient) (0020,0032)" in failed
    assert "has no attribute" not in output and "FileDataset" not in output
    notice = list((tmp_path / "out" / _series_uid(inputs / "truncated")).glob("*.dcm"))
    assert len(notice) == NOTICE_OBJECTS
    assert not (tmp_path / "out" / _series_uid(inputs / "mr")).exists()
    assert "0 with maps, 1 failed, 1 skipped" in result.stdout


def test_a_series_with_no_usable_image_names_the_files_and_exits_1(
    small_study, tmp_path: Path
) -> None:
    """CT images none of which can be placed: not one usable image, said per file in plain
    words; nothing to attach a notice to; exit 1."""
    _, paths = small_study

    def no_position(ds: Dataset) -> None:
        del ds.ImagePositionPatient

    _copy_as_new_series(paths[:3], tmp_path / "in", no_position)
    result = run_process(tmp_path / "in", tmp_path / "out")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "failed: cannot be examined: no usable image" in result.stdout
    assert "file image-000.dcm: no Image Position (Patient) (0020,0032)" in result.stdout
    assert "has no attribute" not in output


def test_only_other_objects_is_exit_1_nothing_computed(small_study, tmp_path: Path) -> None:
    _, paths = small_study
    _copy_as_new_series(paths[:1], tmp_path / "in", _as_mr)
    result = run_process(tmp_path / "in", tmp_path / "out")
    assert result.returncode == 1
    assert "no perfusion acquisition among the inputs" in result.stderr
