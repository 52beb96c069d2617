"""Group commit of received instances, on SQLite and PostgreSQL: the arrivals of concurrent
callers share one transaction, each caller learns its own outcome, and a failed transaction
fails every caller in it and records none of them."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
from sqlalchemy import event

from ctp_node.store import index_writer
from ctp_node.store.index_writer import IndexWriter
from ctp_node.store.ingest import find_instance, list_series, record_instances
from tests.store.test_store import _instance


def _commits(db) -> list[int]:
    """A list that grows by one at each commit of ``db``."""
    commits: list[int] = []
    event.listen(db.engine, "commit", lambda connection: commits.append(1))
    return commits


def _together(writer: IndexWriter, arrivals, monkeypatch) -> dict[str, object]:
    """Record ``arrivals`` from one thread each, the first transaction held until every other
    arrival waits for the next one; returns each arrival's outcome (or error) by digest."""
    first = threading.Event()

    def held(db, items):  # type: ignore[no-untyped-def]
        if not first.is_set():
            first.set()
            deadline = time.monotonic() + 30
            while len(writer._waiting) < len(arrivals) - 1 and time.monotonic() < deadline:
                time.sleep(0.01)
        return record_instances(db, items)

    monkeypatch.setattr(index_writer, "record_instances", held)
    outcomes: dict[str, object] = {}

    def record(item) -> None:  # type: ignore[no-untyped-def]
        try:
            outcomes[item.sha256] = writer.record(item)
        except Exception as exc:
            outcomes[item.sha256] = exc

    threads = [threading.Thread(target=record, args=(a,)) for a in arrivals]
    threads[0].start()
    first.wait(timeout=30)
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def test_concurrent_arrivals_share_a_commit_and_each_learns_its_outcome(db, monkeypatch):
    arrivals = [
        dataclasses.replace(_instance(n, series=f"1.2.3.{n % 3 + 1}"), sha256=f"{n:064d}")
        for n in range(1, 13)
    ]
    # two more arrivals of the second UID, with other bytes, in the same transaction as it
    arrivals += [
        dataclasses.replace(arrivals[1], sha256=f"{n:064d}", path=f"x{n}") for n in (98, 99)
    ]
    commits = _commits(db)
    outcomes = _together(IndexWriter(db), arrivals, monkeypatch)

    assert len(commits) == 2  # the held first arrival, then all the others together
    contenders = [arrivals[1].sha256, f"{98:064d}", f"{99:064d}"]
    (winner,) = [sha for sha in contenders if outcomes[sha] is None]
    recorded = find_instance(db, arrivals[1].sop_instance_uid)
    assert recorded.sha256 == winner
    assert [outcomes[sha] for sha in contenders if sha != winner] == [recorded, recorded]
    assert all(outcomes[a.sha256] is None for a in arrivals[2:12] + arrivals[:1])
    assert {s.series_instance_uid: s.instance_count for s in list_series(db)} == {
        "1.2.3.1": 4,
        "1.2.3.2": 4,
        "1.2.3.3": 4,
    }


def test_a_failed_transaction_fails_every_arrival_in_it_and_records_none(db, monkeypatch):
    good = [dataclasses.replace(_instance(n), sha256=f"{n:064d}") for n in range(1, 6)]
    # NOT NULL refused by the database, in the middle of the second transaction
    bad = dataclasses.replace(_instance(9, series="1.2.3.9"), sop_class_uid=None, sha256="9" * 64)
    writer = IndexWriter(db)
    outcomes = _together(writer, [good[0], *good[1:3], bad, *good[3:]], monkeypatch)

    assert outcomes.pop(good[0].sha256) is None  # its own transaction, committed
    assert len(outcomes) == 5
    assert all(isinstance(error, Exception) for error in outcomes.values()), outcomes
    assert [s.instance_count for s in list_series(db)] == [1]
    assert all(find_instance(db, item.sop_instance_uid) is None for item in [*good[1:], bad])
    # and the writer goes on
    assert writer.record(good[1]) is None


@pytest.mark.parametrize("max_batch", [1, 3])
def test_batches_are_bounded_and_every_arrival_is_recorded(db, monkeypatch, max_batch):
    arrivals = [dataclasses.replace(_instance(n), sha256=f"{n:064d}") for n in range(1, 11)]
    commits = _commits(db)
    outcomes = _together(IndexWriter(db, max_batch=max_batch), arrivals, monkeypatch)
    assert list(outcomes.values()) == [None] * len(arrivals)
    assert len(commits) == 1 + -(-(len(arrivals) - 1) // max_batch)
    (series,) = list_series(db)
    assert series.instance_count == len(arrivals)
