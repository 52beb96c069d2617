"""``/metrics`` of a real ``serve``, parsed with prometheus_client's own parser: a study sent
with DCMTK's storescu is counted, processed and delivered to a real Orthanc."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import echo_ok, orthanc_destination, stored_count, storescu, wait_until

pytestmark = pytest.mark.slow


def _samples(node) -> dict[tuple[str, tuple], float]:  # type: ignore[no-untyped-def]
    """Every sample of ``/metrics`` by (name, sorted labels)."""
    code, body = node.http_get("/metrics")
    assert code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def test_metrics_count_a_study_from_arrival_to_delivery(small_study, orthanc, serve_node) -> None:
    _, paths = small_study
    node = serve_node([orthanc_destination(orthanc)], http=True)
    before = _samples(node)
    stored = ("ctp_node_received_instances_total", (("outcome", "stored"),))
    assert before[stored] == 0
    assert before[("ctp_node_job_duration_seconds_count", ())] == 0
    assert before[("ctp_node_disk_free_bytes", ())] > 0

    assert stored_count(storescu(paths, node.port, node.ae_title)) == len(paths)
    # the association's audit record is written once it has ended
    wait_until(lambda: _samples(node)[stored] == len(paths), 30, "the instances to be counted")
    assert not echo_ok(node.port, "NOTTHENODE")  # refused: a called AE title not the node's
    refused = ("ctp_node_refusals_total", (("kind", "association"), ("status", "")))
    wait_until(lambda: _samples(node).get(refused) == 1, 30, "the refusal to be counted")

    def delivered() -> dict | None:
        samples = _samples(node)
        sent = samples.get(("ctp_node_exports", (("destination", "orthanc"), ("state", "sent"))))
        pending = samples.get(
            ("ctp_node_exports", (("destination", "orthanc"), ("state", "pending"))), 0
        )
        return samples if sent and not pending else None

    after = wait_until(delivered, 240, "the results to be delivered")
    assert after[("ctp_node_series", (("state", "perfusion"),))] == 1
    assert after[("ctp_node_jobs", (("state", "done"),))] == 1
    assert after[("ctp_node_queue_depth", (("queue", "jobs"),))] == 0
    assert after[("ctp_node_queue_depth", (("queue", "exports"),))] == 0
    job = node.status()["jobs"][0]
    assert after[("ctp_node_exports", (("destination", "orthanc"), ("state", "sent")))] == sum(
        job["exports"].values()
    )
    assert len(orthanc.instances()) == sum(job["exports"].values())  # what PACS holds
    assert after[("ctp_node_job_duration_seconds_count", ())] == 1
    assert after[("ctp_node_job_duration_seconds_sum", ())] > 0
    for stage in ("load", "compute", "total"):
        assert after[("ctp_node_engine_stage_seconds_count", (("stage", stage),))] == 1
    total = after[("ctp_node_engine_stage_seconds_sum", (("stage", "total"),))]
    assert total >= after[("ctp_node_engine_stage_seconds_sum", (("stage", "compute"),))] > 0
    # the +Inf bucket holds every job, the buckets are cumulative
    assert after[("ctp_node_job_duration_seconds_bucket", (("le", "+Inf"),))] == 1
