"""A node's history built through the store's own functions, with real files on disk."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import update

from ctp_node.store import Database
from ctp_node.store.ingest import ReceivedInstance, decide_series, record_instance
from ctp_node.store.models import Export, ExportState, utcnow
from ctp_node.store.outbox import OutputObject, list_exports, mark_sent
from ctp_node.store.outbox import mark_attempt_failed as mark_failed
from ctp_node.store.queue import (
    VersionRecord,
    claim_job,
    claim_notice,
    enqueue_reprocessing,
    fail_job,
    finish_job,
    record_notice,
)
from ctp_node.store.retention import series_record

STUDY = "1.2.3"


def later(days: float) -> dt.datetime:
    """The clock ``days`` from now (naive UTC, as the database's times)."""
    return utcnow() + dt.timedelta(days=days)


class NodeHistory:
    """What a node received and did, as its receiver, scheduler, workers and sender record
    it, with the files they would write below ``root``.

    Parameters
    ----------
    size : bytes of every file written.
    """

    def __init__(self, db: Database, root: Path, size: int = 1000) -> None:
        self.db = db
        self.root = root
        self.size = size

    def receive(
        self, series: str, count: int = 3, study: str = STUDY, first: int = 0
    ) -> list[Path]:
        """``count`` instances of ``series`` (numbered from ``first``), written to the spool then
        recorded."""
        paths = []
        for n in range(first, first + count):
            relative = f"spool/{study}/{series}/{series}.{n}.dcm"
            self.write(relative)
            record_instance(
                self.db,
                ReceivedInstance(
                    sop_instance_uid=f"{series}.{n}",
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                    series_instance_uid=series,
                    study_instance_uid=study,
                    transfer_syntax_uid="1.2.840.10008.1.2.1",
                    modality="CT",
                    accession_number="ACC1",
                    series_number=4,
                    path=relative,
                    size_bytes=self.size,
                    calling_ae_title="CT1",
                ),
            )
            paths.append(self.root / relative)
        return paths

    def write(self, relative: str, data: bytes | None = None) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if data is not None else b"\0" * self.size)
        return path

    def decide(self, series: str, *, perfusion: bool = True) -> int | None:
        """The scheduler's decision on a stable series; the new job's id."""
        record = series_record(self.db, series)
        assert record is not None
        return decide_series(
            self.db,
            series,
            perfusion=perfusion,
            reason="test",
            expected_instance_count=record.instances,
        )

    def reprocess(self, series: str) -> int:
        return enqueue_reprocessing(self.db, series, "", "")

    def claim(self, job_id: int) -> None:
        job = claim_job(self.db, "worker", lease_s=600, max_attempts=3)
        assert job is not None and job.id == job_id

    def run(
        self,
        job_id: int,
        series: str,
        *,
        outcome: str = "done",
        outputs: int = 2,
        destinations: tuple[str, ...] = ("pacs",),
    ) -> Path:
        """A worker runs the job: ``outputs`` files in its results folder, exports queued to
        every destination, then the job done or failed with its notice ("failed")."""
        self.claim(job_id)
        folder = f"results/{series}/job-{job_id}"
        objects = [
            OutputObject(f"{series}.9{job_id}.{n}", "structured_report", f"{folder}/{n}.dcm")
            for n in range(outputs)
        ]
        for output in objects:
            self.write(output.path)
        exports = [(d, o) for d in destinations for o in objects]
        version = VersionRecord(f"digest-{job_id}", 3, job_id, f"key-{job_id}")
        if outcome == "done":
            finish_job(
                self.db,
                job_id,
                worker_id="worker",
                result_dir=folder,
                summary={},
                version=version,
                exports=exports,
            )
        else:
            fail_job(self.db, job_id, "no contrast", retry=False, max_attempts=3)
            assert claim_notice(self.db, job_id, "worker", lease_s=600)
            record_notice(
                self.db,
                job_id,
                worker_id="worker",
                result_dir=folder,
                version=version,
                exports=exports,
            )
        return self.root / folder

    def deliver(self, job_id: int, state: str = "sent", destination: str | None = None) -> None:
        """The sender's outcome for the job's exports (to one destination, or all)."""
        ids = [
            e.id
            for e in list_exports(self.db, job_id)
            if destination is None or e.destination == destination
        ]
        if state == ExportState.SENT:
            mark_sent(self.db, ids)
        elif state == ExportState.FAILED:
            mark_failed(self.db, ids, "refused", max_attempts=1, backoff_s=1, backoff_max_s=1)
        else:  # cancelled: a newer version replaced it
            with self.db.session() as s:
                s.execute(update(Export).where(Export.id.in_(ids)).values(state=state))

    def delivered_series(self, series: str, study: str = STUDY) -> tuple[list[Path], int, Path]:
        """A series received, processed and sent to PACS: its files, job id, results folder."""
        files = self.receive(series, study=study)
        job_id = self.decide(series)
        assert job_id is not None
        folder = self.run(job_id, series)
        self.deliver(job_id)
        return files, job_id, folder
