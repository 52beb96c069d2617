"""``/metrics``: the node's counts in Prometheus' text format (``prometheus_client``).

The counts live in the database, which workers in other processes or on other machines write
too, so a custom collector reads them at scrape time (:func:`ctp_node.store.counts.node_counts`)
instead of counting events in this process. Each ``Node`` has a registry of its own, so that
several nodes in one process (tests, the demo) do not clash.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from ctp_node.store import Database
from ctp_node.store.counts import (
    DoneJobTimes,
    NodeCounts,
    done_job_ids,
    done_job_times,
    node_counts,
)

#: Upper bounds (seconds) of the job-duration and stage-timing histograms: a small study
#: takes seconds, a whole-brain 320-slice one several minutes.
DURATION_BUCKETS_S = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class NodeCollector(Collector):
    """The node's state gauges, counters and histograms, read from the database at each
    scrape.

    Parameters
    ----------
    db : the node's database.
    free_bytes : the free bytes of the file system holding ``storage.root``.
    min_free_bytes : ``storage.min_free_bytes``, shown beside it.
    """

    def __init__(self, db: Database, free_bytes: Callable[[], int], min_free_bytes: int) -> None:
        self.db = db
        self.free_bytes = free_bytes
        self.min_free_bytes = min_free_bytes
        # Done jobs never change: their timings are read once (a summary is ~10 kB of JSON).
        self._done: dict[int, DoneJobTimes] = {}
        self._done_lock = threading.Lock()  # scrapes may run in parallel threads

    def collect(self) -> Iterator:
        counts = node_counts(self.db)
        yield from _received(counts)
        yield from _work(counts)
        done = self._done_jobs()
        yield _histogram(
            "ctp_node_job_duration_seconds",
            "Seconds from the last claim to the end of each done job",
            {(): [t.duration_s for t in done if t.duration_s is not None]},
            (),
        )
        stages: dict[tuple[str, ...], list[float]] = {}
        for times in done:
            for stage, seconds in times.stages_s.items():
                stages.setdefault((stage,), []).append(seconds)
        yield _histogram(
            "ctp_node_engine_stage_seconds",
            "Seconds each stage took in done jobs (load: reading the images; compute: the "
            "engine and quality checks; total: with writing the outputs)",
            dict(sorted(stages.items())),
            ("stage",),
        )
        disk = GaugeMetricFamily(
            "ctp_node_disk_free_bytes", "Free bytes of the file system holding storage.root"
        )
        disk.add_metric([], self.free_bytes())
        yield disk
        watermark = GaugeMetricFamily(
            "ctp_node_disk_min_free_bytes",
            "storage.min_free_bytes: below it C-STORE is refused (0xA700)",
        )
        watermark.add_metric([], self.min_free_bytes)
        yield watermark

    def _done_jobs(self) -> list[DoneJobTimes]:
        """The timings of every done job, reading only those not seen before."""
        with self._done_lock:
            ids = done_job_ids(self.db)
            self._done.update(done_job_times(self.db, ids - self._done.keys()))
            for gone in self._done.keys() - ids:  # (a database restored from a backup)
                del self._done[gone]
            return list(self._done.values())

    def describe(self) -> Iterator:
        return iter(())  # nothing to check at registration, and no database read then


def _received(counts: NodeCounts) -> Iterator:
    received = CounterMetricFamily(
        "ctp_node_received_instances",
        "Instances received in ended associations, by outcome (audit trail)",
        labels=["outcome"],
    )
    for outcome in ("stored", "duplicate", "refused"):
        received.add_metric([outcome], counts.received_instances.get(outcome, 0))
    yield received
    refused = CounterMetricFamily(
        "ctp_node_refusals",
        "What the listener refused, by kind (c-store, association, context, tls) and DICOM status",
        labels=["kind", "status"],
    )
    for (kind, status), n in sorted(counts.rejections.items()):
        refused.add_metric([kind, f"0x{status & 0xFFFF:04X}" if status > 0 else ""], n)
    yield refused


def _work(counts: NodeCounts) -> Iterator:
    for name, what, by_state in (
        ("ctp_node_series", "Series by state", counts.series),
        ("ctp_node_jobs", "Jobs by state", counts.jobs),
    ):
        family = GaugeMetricFamily(name, what, labels=["state"])
        for state, n in sorted(by_state.items()):
            family.add_metric([state], n)
        yield family
    exports = GaugeMetricFamily(
        "ctp_node_exports", "Exports by destination and state", labels=["destination", "state"]
    )
    for (destination, state), n in sorted(counts.exports.items()):
        exports.add_metric([destination, state], n)
    yield exports
    queue = GaugeMetricFamily("ctp_node_queue_depth", "Work due now, by queue", labels=["queue"])
    queue.add_metric(["jobs"], counts.jobs_due)
    queue.add_metric(["exports"], counts.exports_due)
    yield queue


def _histogram(
    name: str, documentation: str, samples: dict[tuple[str, ...], list[float]], labels: tuple
) -> HistogramMetricFamily:
    """A histogram with :data:`DURATION_BUCKETS_S` of each label set's values."""
    family = HistogramMetricFamily(name, documentation, labels=list(labels))
    for label_values, values in samples.items():
        ordered = sorted(values)
        buckets = [
            (f"{bound:g}", bisect.bisect_right(ordered, bound)) for bound in DURATION_BUCKETS_S
        ]
        buckets.append(("+Inf", len(ordered)))
        family.add_metric(list(label_values), buckets, sum(ordered))
    return family


def node_registry(
    db: Database, free_bytes: Callable[[], int], min_free_bytes: int
) -> CollectorRegistry:
    """A registry of its own for one node: :class:`NodeCollector` and this process's CPU,
    memory and open files (``process_*``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(db, free_bytes, min_free_bytes))
    ProcessCollector(registry=registry)
    return registry
