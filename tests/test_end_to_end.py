"""The whole node with real peers: DCMTK storescu → ctp-node serve → a real Orthanc.

Accuracy is judged against the phantom's truth, not against numbers copied from our output.
"""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import highdicom as hd
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
from tests.dicom_checks import (
    MAP_NAMES,
    PARAMETRIC_MAP,
    check_maps_against_truth,
    dciodvfy_errors,
    map_volume,
    parametric_maps_in,
)
from tests.study_objects import (
    PRIVATE_PROFILE,
    write_other_objects,
    write_series_without_bolus,
)

pytestmark = pytest.mark.slow

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
#: Issue 3's target for the Tmax > 6 s volume through the whole node.
TMAX6_VOLUME_TOLERANCE = 0.10


def run_process(inputs: Path, out: Path) -> None:
    """``ctp-node process INPUTS --out OUT`` as a user runs it."""
    result = subprocess.run(
        [sys.executable, "-m", "ctp_node", "process", str(inputs), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture(scope="module")
def offline(phantom_study, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The phantom study through ``ctp-node process``, once for the tests that read its outputs
    (none of them writes there)."""
    _, paths = phantom_study
    out = tmp_path_factory.mktemp("offline")
    run_process(paths[0].parent, out)
    return out


def _orthanc_objects_by_class(orthanc) -> dict[str, list[str]]:
    objects: dict[str, list[str]] = {}
    for instance_id in orthanc.get("/instances"):
        tags = orthanc.get(f"/instances/{instance_id}/simplified-tags")
        objects.setdefault(tags["SOPClassUID"], []).append(instance_id)
    return objects


def _sr_volumes_ml(report) -> dict[str, float]:
    volumes = {}
    for item in _walk(report.ContentSequence):
        if item.ValueType == "CONTAINER" and "ContentSequence" in item:
            tracking = [
                c.TextValue
                for c in item.ContentSequence
                if c.ValueType == "TEXT"
                and c.ConceptNameCodeSequence[0].CodeMeaning == "Tracking Identifier"
            ]
            numbers = [
                c
                for c in item.ContentSequence
                if c.ValueType == "NUM" and c.ConceptNameCodeSequence[0].CodeMeaning == "Volume"
            ]
            if tracking and numbers:
                volumes[tracking[0]] = float(numbers[0].MeasuredValueSequence[0].NumericValue)
    return volumes


def _walk(sequence):
    for item in sequence:
        yield item
        if "ContentSequence" in item:
            yield from _walk(item.ContentSequence)


def test_storescu_to_serve_to_orthanc(phantom_study, orthanc, serve_node) -> None:
    phantom, paths = phantom_study
    # The worker's poll is longer than the wait for the maps below: the scheduler wakes the
    # worker when it queues the job, the node does not wait a poll interval for it.
    node = serve_node([orthanc_destination(orthanc)], worker={"poll_interval_s": 600})
    shuffled = list(paths)
    random.Random(7).shuffle(shuffled)
    sent = storescu(shuffled, node.port, node.ae_title, calling="CT1")
    assert stored_count(sent) == len(paths), sent.stderr[-2000:]

    maps = wait_until(
        lambda: (m := parametric_maps_in(orthanc)) and len(m) == len(MAP_NAMES) and m,
        180,
        "five Parametric Maps in Orthanc",
    )
    study_uid = pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID
    check_maps_against_truth(maps, phantom, study_uid)
    status = node.status()
    (job,) = status["jobs"]
    assert job["state"] == "done"
    summary = json.loads((node.root / "storage" / job["result_dir"] / "results.json").read_text())
    kinds = Counter(o["kind"] for o in summary["outputs"])
    assert (
        kinds
        == {
            "parametric_maps": 5,
            "secondary_captures": kinds["secondary_captures"],
            "structured_report": 1,
        }
        and kinds["secondary_captures"] >= 3
    )
    wait_until(
        lambda: node.status()["jobs"][0]["exports"] == {"orthanc:sent": sum(kinds.values())},
        60,
        "every output to be sent",
    )
    assert status["series"][0]["instances"] == len(paths)

    by_class = _orthanc_objects_by_class(orthanc)
    # Every Secondary Capture renders in Orthanc's viewer.
    for instance_id in by_class[SECONDARY_CAPTURE]:
        png = orthanc.get_bytes(f"/instances/{instance_id}/preview")
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # The SR carries the volumes that were computed, against the phantom's truth.
    (sr_id,) = by_class[COMPREHENSIVE_3D_SR]
    report = hd.sr.srread(io.BytesIO(orthanc.get_bytes(f"/instances/{sr_id}/file")))
    volumes = _sr_volumes_ml(report)  # rounded to 0.1 ml, what the method supports
    assert volumes["Ischemic core (rCBF<30%)"] == pytest.approx(
        summary["volumes"]["core_ml"], abs=0.051
    )
    assert volumes["Hypoperfusion (Tmax>6s)"] == pytest.approx(
        summary["volumes"]["tmax6_ml"], abs=0.051
    )
    assert abs(volumes["Hypoperfusion (Tmax>6s)"] - phantom.truth.tmax6_ml) <= (
        TMAX6_VOLUME_TOLERANCE * phantom.truth.tmax6_ml
    )


def test_every_output_passes_dciodvfy(offline: Path) -> None:
    outputs = sorted(offline.glob("*.dcm"))
    assert len(outputs) >= 9
    for path in outputs:
        assert dciodvfy_errors(path) == [], path.name


def test_failure_notice_when_contrast_never_arrives(
    phantom_study, orthanc, serve_node, tmp_path
) -> None:
    phantom, _ = phantom_study
    paths = write_series_without_bolus(phantom.acquisition, tmp_path / "flat", seed=5)
    node = serve_node([orthanc_destination(orthanc)])
    assert stored_count(storescu(paths, node.port, node.ae_title)) == len(paths)

    def failed():
        jobs = node.status()["jobs"]
        return jobs and jobs[0]["state"] == "failed" and jobs[0]

    job = wait_until(failed, 180, "the job to fail")
    assert "contrast" in job["error"].lower()
    by_class = wait_until(
        lambda: (
            (o := _orthanc_objects_by_class(orthanc))
            and len(o.get(COMPREHENSIVE_3D_SR, [])) == 1
            and len(o.get(SECONDARY_CAPTURE, [])) == 1
            and o
        ),
        60,
        "the failure notice in Orthanc",
    )
    report = hd.sr.srread(
        io.BytesIO(orthanc.get_bytes(f"/instances/{by_class[COMPREHENSIVE_3D_SR][0]}/file"))
    )
    text = " ".join(str(i.TextValue) for i in _walk(report.ContentSequence) if "TextValue" in i)
    assert "no maps" in text.lower() and job["error"][:40] in text
    assert PARAMETRIC_MAP not in by_class


def test_jpeg_lossless_input_gives_the_same_maps(
    phantom_study, offline, orthanc, serve_node, tmp_path
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
        lambda: (m := parametric_maps_in(orthanc)) and len(m) == len(MAP_NAMES) and m,
        180,
        "five Parametric Maps in Orthanc",
    )
    received = node.root / "storage" / "spool"
    stored = pydicom.dcmread(next(received.rglob("*.dcm")), stop_before_pixels=True)
    assert stored.file_meta.TransferSyntaxUID == syntax  # kept as received
    # Lossless compression: the maps must equal those computed offline from the originals.
    originals = {
        str(ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0].LUTLabel): ds
        for ds in map(pydicom.dcmread, offline.glob("parametric_maps-*.dcm"))
    }
    positions = phantom.acquisition.slice_positions_mm
    for name in MAP_NAMES:
        np.testing.assert_array_equal(
            map_volume(maps[name], positions), map_volume(originals[name], positions)
        )


def test_process_gives_the_same_maps_as_serve(phantom_study, offline, orthanc, serve_node) -> None:
    __, paths = phantom_study
    assert (offline / "results.json").is_file() and (offline / "summary.png").is_file()
    offline_maps = list(offline.glob("parametric_maps-*.dcm"))
    assert len(offline_maps) == len(MAP_NAMES)

    node = serve_node([orthanc_destination(orthanc)])
    assert stored_count(storescu(paths, node.port, node.ae_title)) == len(paths)
    served = wait_until(
        lambda: (m := parametric_maps_in(orthanc)) and len(m) == len(MAP_NAMES) and m,
        180,
        "five Parametric Maps in Orthanc",
    )
    for ds in map(pydicom.dcmread, offline_maps):
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


def test_whole_study_send_gives_maps_and_lists_the_other_objects(
    phantom_study, orthanc, serve_node, tmp_path
) -> None:
    """A scanner sends the whole study: dose screen, dose SR, an MR image, a vendor's private
    object and a plain head CT beside the perfusion series. Nothing aborts, every object is
    acknowledged, the maps reach PACS, and the others are listed (and kept, as configured)."""
    phantom, paths = phantom_study
    others = write_other_objects(paths[0], tmp_path / "others")
    private = others.pop("private")
    files = [*paths, *(p for kind in others.values() for p in kind)]
    node = serve_node([orthanc_destination(orthanc)], ingest={"keep_other_objects": True})
    sent = storescu(files, node.port, node.ae_title, calling="CT1")
    assert sent.returncode == 0, sent.stderr[-2000:]
    assert stored_count(sent) == len(files), sent.stderr[-2000:]
    # storescu proposes a private SOP class only from a profile, as a routing rule would
    (tmp_path / "private.cfg").write_text(PRIVATE_PROFILE)
    profile = ("-xf", str(tmp_path / "private.cfg"), "P")
    sent = storescu(private, node.port, node.ae_title, calling="CT1", extra=profile)
    assert sent.returncode == 0 and stored_count(sent) == 1, sent.stderr[-2000:]

    maps = wait_until(
        lambda: (m := parametric_maps_in(orthanc)) and len(m) == len(MAP_NAMES) and m,
        180,
        "five Parametric Maps in Orthanc",
    )
    check_maps_against_truth(maps, phantom, str(pydicom.dcmread(paths[0]).StudyInstanceUID))
    status = node.status()
    other_objects = status["other_objects"]
    listed = {(o["sop_class"], o["modality"], o["objects"], o["kept"]) for o in other_objects}
    assert listed == {
        ("Secondary Capture Image Storage", "OT", 1, 1),
        ("X-Ray Radiation Dose SR Storage", "SR", 1, 1),
        ("MR Image Storage", "MR", 1, 1),
        ("1.3.12.2.1107.5.9.1", "OT", 1, 1),  # private: pydicom has no name for it
    }
    assert all("is not CT" in o["reason"] for o in other_objects)
    head = str(pydicom.dcmread(others["single_volume_ct"][0]).SeriesInstanceUID)
    states = {s["series_instance_uid"]: s for s in status["series"]}
    assert states[head]["instances"] == len(others["single_volume_ct"])
    wait_until(
        lambda: (
            {s["series_instance_uid"]: s["state"] for s in node.status()["series"]}[head]
            == "ignored"
        ),
        60,
        "the single-volume CT to be ignored",
    )
    kept = list((node.root / "storage" / "other").rglob("*.dcm"))
    assert len(kept) == 4
    assert status["rejections"] == []
