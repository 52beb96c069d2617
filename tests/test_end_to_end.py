"""The whole node with real peers: DCMTK storescu → ctp-node serve → a real Orthanc.

Accuracy is judged against the phantom's truth, not against numbers copied from our output.
"""

from __future__ import annotations

import io
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from tests.conftest import (
    FAST_TCP_ENV,
    dcmtk,
    orthanc_destination,
    stored_count,
    storescu,
    wait_until,
)

pytestmark = pytest.mark.slow

PARAMETRIC_MAP = "1.2.840.10008.5.1.4.1.1.30"
MAP_NAMES = ("CBF", "CBV", "MTT", "TTP", "Tmax")
UNITS = {"CBF": "ml/[100]g/min", "CBV": "ml/[100]g", "MTT": "s", "TTP": "s", "Tmax": "s"}
#: How far the median of a map in the phantom's tissue may be from the truth's median. This is
#: a plausibility bound for the path through DICOM; the engine's accuracy is measured against
#: the phantom's blocks in tests/perfusion and bench/accuracy.py.
MEDIAN_TOLERANCE = 0.30
TMAX_TOLERANCE_S = 2.0


def _parametric_maps(orthanc) -> dict[str, pydicom.Dataset]:
    maps = {}
    for instance_id in orthanc.get("/instances"):
        tags = orthanc.get(f"/instances/{instance_id}/simplified-tags")
        if tags.get("SOPClassUID") == PARAMETRIC_MAP:
            data = orthanc.get_bytes(f"/instances/{instance_id}/file")
            ds = pydicom.dcmread(io.BytesIO(data))
            label = (
                ds.RealWorldValueMappingSequence[0].LUTLabel
                if ("RealWorldValueMappingSequence" in ds)
                else ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0].LUTLabel
            )
            maps[str(label)] = ds
    return maps


def map_volume(ds: pydicom.Dataset, slice_positions_mm: np.ndarray) -> np.ndarray:
    """A Parametric Map's frames placed at the source slices by their positions (z, y, x)."""
    frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    volume = np.full((len(slice_positions_mm), ds.Rows, ds.Columns), np.nan, dtype=np.float32)
    for index, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        position = np.array([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])
        z = int(np.argmin(np.linalg.norm(slice_positions_mm - position, axis=1)))
        assert np.linalg.norm(slice_positions_mm[z] - position) < 0.01, "frame off any slice"
        volume[z] = frames[index]
    assert not np.isnan(volume).any(), "a source slice has no frame"
    return volume


def _check_maps_against_truth(maps: dict[str, pydicom.Dataset], phantom, study_uid: str) -> dict:
    truth = phantom.truth
    positions = phantom.acquisition.slice_positions_mm
    volumes = {}
    for name in MAP_NAMES:
        ds = maps[name]
        assert ds.StudyInstanceUID == study_uid
        assert str(ds.SeriesDescription).startswith(name)
        mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
        assert mapping.LUTLabel == name
        assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == UNITS[name]
        volume = map_volume(ds, positions)
        assert volume.shape == truth.cbf.shape
        assert np.isfinite(volume).all()
        if name != "Tmax":  # a residue peak may precede the AIF's: Tmax can be negative
            assert (volume >= 0).all(), f"{name} has negative values"
        volumes[name] = volume
    tissue = truth.tissue_mask & ~truth.core_mask
    for name, true_map in (("CBF", truth.cbf), ("CBV", truth.cbv), ("MTT", truth.mtt)):
        measured = float(np.median(volumes[name][tissue]))
        expected = float(np.median(true_map[tissue]))
        assert abs(measured - expected) <= MEDIAN_TOLERANCE * expected, (
            f"{name}: median in tissue {measured:.2f}, truth {expected:.2f}"
        )
    tmax_error_s = abs(
        float(np.median(volumes["Tmax"][tissue])) - float(np.median(truth.delay[tissue]))
    )
    assert tmax_error_s <= TMAX_TOLERANCE_S, f"median Tmax off the true delay by {tmax_error_s} s"
    return volumes


def test_storescu_to_serve_to_orthanc(phantom_study, orthanc, serve_node) -> None:
    phantom, paths = phantom_study
    node = serve_node([orthanc_destination(orthanc)])
    shuffled = list(paths)
    random.Random(7).shuffle(shuffled)
    sent = storescu(shuffled, node.port, node.ae_title, calling="CT1")
    assert stored_count(sent) == len(paths), sent.stderr[-2000:]

    maps = wait_until(
        lambda: (m := _parametric_maps(orthanc)) and len(m) == len(MAP_NAMES) and m,
        180,
        "five Parametric Maps in Orthanc",
    )
    study_uid = pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID
    _check_maps_against_truth(maps, phantom, study_uid)
    status = node.status()
    (job,) = status["jobs"]
    assert job["state"] == "done"
    assert job["exports"] == {"orthanc:sent": len(MAP_NAMES)}
    assert status["series"][0]["instances"] == len(paths)


def test_jpeg_lossless_input_gives_the_same_maps(
    phantom_study, orthanc, serve_node, tmp_path
) -> None:
    phantom, paths = phantom_study
    compressed = tmp_path / "jpeg"
    compressed.mkdir()
    for path in paths:
        subprocess.run(
            [dcmtk("dcmcjpeg"), "+e1", str(path), str(compressed / path.name)],
            check=True,
            capture_output=True,
            timeout=60,
        )
    syntax = pydicom.dcmread(compressed / paths[0].name).file_meta.TransferSyntaxUID
    assert syntax == "1.2.840.10008.1.2.4.70"  # JPEG Lossless SV1

    node = serve_node([orthanc_destination(orthanc)])
    sent = storescu(
        sorted(compressed.iterdir()), node.port, node.ae_title, extra=("-xs",)
    )  # propose JPEG lossless
    assert stored_count(sent) == len(paths), sent.stderr[-2000:]
    maps = wait_until(
        lambda: (m := _parametric_maps(orthanc)) and len(m) == len(MAP_NAMES) and m,
        180,
        "five Parametric Maps in Orthanc",
    )
    received = node.root / "storage" / "spool"
    stored = pydicom.dcmread(next(received.rglob("*.dcm")), stop_before_pixels=True)
    assert stored.file_meta.TransferSyntaxUID == syntax  # kept as received
    # Lossless compression: the maps must equal those computed offline from the originals.
    out = tmp_path / "offline"
    result = subprocess.run(
        [sys.executable, "-m", "ctp_node", "process", str(paths[0].parent), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    offline = {
        str(ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0].LUTLabel): ds
        for ds in map(pydicom.dcmread, out.glob("parametric_maps-*.dcm"))
    }
    positions = phantom.acquisition.slice_positions_mm
    for name in MAP_NAMES:
        np.testing.assert_array_equal(
            map_volume(maps[name], positions), map_volume(offline[name], positions)
        )


def test_process_gives_the_same_maps_as_serve(phantom_study, orthanc, serve_node, tmp_path) -> None:
    __, paths = phantom_study
    out = tmp_path / "offline"
    result = subprocess.run(
        [sys.executable, "-m", "ctp_node", "process", str(paths[0].parent), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "results.json").is_file() and (out / "summary.png").is_file()
    offline = list(out.glob("parametric_maps-*.dcm"))
    assert len(offline) == len(MAP_NAMES)

    node = serve_node([orthanc_destination(orthanc)])
    assert stored_count(storescu(paths, node.port, node.ae_title)) == len(paths)
    served = wait_until(
        lambda: (m := _parametric_maps(orthanc)) and len(m) == len(MAP_NAMES) and m,
        180,
        "five Parametric Maps in Orthanc",
    )
    for ds in map(pydicom.dcmread, offline):
        label = str(ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0].LUTLabel)
        other = served[label]
        assert other.SOPInstanceUID == ds.SOPInstanceUID  # deterministic output UIDs
        np.testing.assert_array_equal(other.pixel_array, ds.pixel_array)


def test_single_volume_ct_is_ignored_with_reason(phantom_study, orthanc, serve_node) -> None:
    _, paths = phantom_study
    one_volume = [p for p in paths if p.name.startswith("t000_")]
    node = serve_node([orthanc_destination(orthanc)])
    assert stored_count(storescu(one_volume, node.port, node.ae_title)) == len(one_volume)

    def decided():
        series = node.status()["series"]
        return series and series[0]["state"] != "receiving" and series[0]

    series = wait_until(decided, 60, "the series to be decided")
    assert series["state"] == "ignored"
    assert "single volume" in series["reason"]
    assert node.status()["jobs"] == []


def test_invalid_configuration_is_refused_with_key_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("node:\n  port: 70000\n  ae_titel: X\ndestinations:\n  - name: pacs\n")
    for command in (["serve", "--config", str(bad)], ["config", "check", str(bad)]):
        result = subprocess.run(
            [sys.executable, "-m", "ctp_node", *command],
            capture_output=True,
            text=True,
            timeout=60,
            env=FAST_TCP_ENV,
        )
        assert result.returncode != 0
        output = result.stdout + result.stderr
        assert "node.port" in output and "node.ae_titel" in output
        assert "destinations.0.ae_title" in output
        assert "Traceback" not in output
