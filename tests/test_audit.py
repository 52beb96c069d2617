"""The audit trail end to end: DCMTK storescu sends a study to ``ctp-node serve``, the node
sends its results to Orthanc, someone calls the wrong AE title; ``ctp-node status --audit``
then says who sent and received which study, how many instances, and how each association
ended. And the node's log, which names the UIDs, names no patient."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from dataclasses import dataclass

import pytest

from tests.conftest import (
    Orthanc,
    ServedNode,
    echo_ok,
    free_port,
    node_config,
    orthanc_destination,
    start_node,
    start_orthanc,
    stop_process,
    stored_count,
    storescu,
    wait_until,
)

pytestmark = pytest.mark.slow

#: A patient the log must never name. The name is in one component (no "^"), as some
#: scanners write it: highdicom quotes such a name in a warning for every output it builds.
PATIENT_NAME = "QUIXOTE ZEBEDEE"
PATIENT_ID = "PID-7731-XQ"
BIRTH_DATE = dt.date(1923, 4, 17)
ACCESSION = "ACCAUDIT77"


@dataclass
class Exchange:
    node: ServedNode
    orthanc: Orthanc
    study_instance_uid: str
    series_instance_uid: str
    instances: int
    outputs: int


@pytest.fixture(scope="module")
def exchange(tmp_path_factory) -> Exchange:
    """One study in, its results out, one refused association: run once for this module."""
    from ctp_node.demo import write_phantom_study
    from ctp_node.phantom import PhantomSpec, make_phantom
    from ctp_node.phantom.dicom import StudyIdentity

    folder = tmp_path_factory.mktemp("audit")
    identity = StudyIdentity.new(
        patient_name=PATIENT_NAME,
        patient_id=PATIENT_ID,
        patient_birth_date=BIRTH_DATE,
        accession_number=ACCESSION,
    )
    phantom = make_phantom(PhantomSpec(matrix=64, slices=4, pixel_spacing_mm=220.0 / 64))
    paths = write_phantom_study(phantom, folder / "study", identity)
    orthanc = start_orthanc(folder / "orthanc")
    root = folder / "node"
    node = start_node(root, node_config(root, free_port(), [orthanc_destination(orthanc)]))
    try:
        sent = storescu(paths, node.port, node.ae_title, calling="SCANNER1")
        assert stored_count(sent) == len(paths), sent.stderr
        assert not echo_ok(node.port, "WRONGAE", calling="PROBE")

        def delivered() -> int:
            jobs = node.status()["jobs"]
            done = jobs and jobs[-1]["state"] == "done" and jobs[-1]["exports"]
            if not done or any(not key.endswith(":sent") for key in done):
                return 0
            return sum(done.values())

        outputs = int(wait_until(delivered, 300, "the results to reach Orthanc"))  # type: ignore[arg-type]
        yield Exchange(
            node,
            orthanc,
            identity.study_instance_uid,
            identity.series_instance_uid,
            len(paths),
            outputs,
        )
    finally:
        stop_process(node.process)
        stop_process(orthanc.process)


def _ctp_node(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ctp_node", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _audit_lines(exchange: Exchange, *options: str) -> list[dict]:
    config = str(exchange.node.config_path)
    result = _ctp_node("status", "--audit", "--json", "--config", config, *options)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_the_audit_trail_says_who_sent_and_received_which_study(exchange: Exchange) -> None:
    records = _audit_lines(exchange)
    received = [r for r in records if r["direction"] == "received" and r["instances"]]
    (study_in,) = received
    assert (study_in["peer_ae_title"], study_in["local_ae_title"], study_in["outcome"]) == (
        "SCANNER1",
        "CTPNODE",
        "released",
    )
    assert study_in["peer_address"].startswith("127.0.0.1:")
    assert study_in["started_at"].endswith("Z") and study_in["started_at"] <= study_in["ended_at"]
    assert (study_in["instances"], study_in["stored"], study_in["refused"]) == (
        exchange.instances,
        exchange.instances,
        0,
    )
    (series_in,) = study_in["series"]
    assert series_in == {
        "study_instance_uid": exchange.study_instance_uid,
        "series_instance_uid": exchange.series_instance_uid,
        "accession_number": ACCESSION,
        "modality": "CT",
        "instances": exchange.instances,
        "stored": exchange.instances,
        "duplicate": 0,
        "refused": 0,
    }

    sent = [r for r in records if r["direction"] == "sent"]
    assert sent and all(r["outcome"] == "released" for r in sent)
    assert {(r["peer_ae_title"], r["local_ae_title"]) for r in sent} == {("ORTHANC", "CTPNODE")}
    assert {r["peer_address"] for r in sent} == {f"127.0.0.1:{exchange.orthanc.dicom_port}"}
    assert sum(r["stored"] for r in sent) == exchange.outputs
    series_out = [s for r in sent for s in r["series"]]
    assert {s["study_instance_uid"] for s in series_out} == {exchange.study_instance_uid}
    assert exchange.series_instance_uid not in {s["series_instance_uid"] for s in series_out}

    (refused,) = [r for r in records if r["outcome"] == "refused"]
    assert (refused["direction"], refused["peer_ae_title"], refused["local_ae_title"]) == (
        "received",
        "PROBE",
        "WRONGAE",
    )
    assert "Called AE title not recognised" in refused["reason"]

    # --series and --failed choose as they do for status
    chosen = _audit_lines(exchange, "--series", exchange.series_instance_uid)
    assert [r["id"] for r in chosen] == [study_in["id"]]
    assert [r["id"] for r in _audit_lines(exchange, "--failed")] == [refused["id"]]


def test_status_audit_prints_a_readable_table(exchange: Exchange) -> None:
    result = _ctp_node("status", "--audit", "--config", str(exchange.node.config_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    (received,) = [line for line in lines if "received from SCANNER1" in line]
    assert "(called CTPNODE)  released" in received
    assert f"{exchange.instances} instances: {exchange.instances} stored" in received
    assert any(
        f"study {exchange.study_instance_uid}  acc {ACCESSION}  "
        f"series {exchange.series_instance_uid}  CT" in line
        for line in lines
    )
    assert any("sent to ORTHANC at 127.0.0.1:" in line and "released" in line for line in lines)
    (refused,) = [line for line in lines if "received from PROBE" in line]
    assert "(called WRONGAE)  refused" in refused and "Called AE title not recognised" in refused
    # the C-ECHO of start_node's readiness check is kept, but only listed in the JSON lines
    assert not any("received from ECHOSCU" in line for line in lines)
    assert any(r["peer_ae_title"] == "ECHOSCU" for r in _audit_lines(exchange))


def test_the_log_names_the_uids_and_no_patient(exchange: Exchange) -> None:
    log = exchange.node.log()
    (received,) = [line for line in log.splitlines() if "association from SCANNER1" in line]
    assert "released after" in received and f"{exchange.instances} stored" in received
    assert f"study {exchange.study_instance_uid} (accession {ACCESSION})" in received
    assert f"series {exchange.series_instance_uid} (CT)" in received
    for identifying in (*PATIENT_NAME.split(), PATIENT_ID, "19230417"):
        assert identifying not in log, identifying
