"""Group commit of received instances: the records of every association that arrive while a
commit is running are written together, in the next transaction, with one commit.

A commit that is durable (SQLite ``synchronous=FULL``, PostgreSQL's default) costs a flush of
the log to the disk, milliseconds that do not grow with the number of records in it. With one
commit per instance, associations in parallel queue for the disk one record at a time; with
a group commit they share each flush.

There is no thread of its own: the first caller that finds no commit running leads, takes
every record waiting (its own and those queued meanwhile), commits them, and wakes their
callers; a caller that arrives during a commit waits for it, then either finds its record
committed by the next leader or leads itself. Each caller returns only once its own record is
committed (or its transaction failed), so the C-STORE it answers is acknowledged only when
the record is durable.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ctp_node.store.database import Database
from ctp_node.store.ingest import InstanceRecord, ReceivedInstance, record_instances


@dataclass
class _Arrival:
    item: ReceivedInstance
    done: bool = False
    earlier: InstanceRecord | None = None
    error: BaseException | None = None


class IndexWriter:
    """Records received instances in ``db``, those of concurrent callers in one transaction.

    Parameters
    ----------
    db : the node's database.
    max_batch : most records in one transaction (bounds how long a transaction holds the
        write lock).
    """

    def __init__(self, db: Database, max_batch: int = 64) -> None:
        self.db = db
        self.max_batch = max_batch
        self._changed = threading.Condition()
        self._waiting: list[_Arrival] = []
        self._committing = False

    def record(self, item: ReceivedInstance) -> InstanceRecord | None:
        """What :func:`ctp_node.store.ingest.record_instance` returns, once the record is
        committed: None when recorded now, else the earlier record of its SOP Instance UID.

        Raises
        ------
        Exception : whatever the database raised for the transaction that held this record;
            then no record of that transaction was written (each of its callers is told).
        """
        arrival = _Arrival(item)
        with self._changed:
            self._waiting.append(arrival)
        while True:
            with self._changed:
                while self._committing and not arrival.done:
                    self._changed.wait()
                if arrival.done:
                    break
                self._committing = True  # lead: the oldest records waiting, in order
                batch = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
            self._commit(batch)
        if arrival.error is not None:
            raise arrival.error
        return arrival.earlier

    def _commit(self, batch: list[_Arrival]) -> None:
        try:
            outcomes = record_instances(self.db, [a.item for a in batch])
        except BaseException as exc:  # every caller of this transaction is told
            for arrival in batch:
                arrival.error = exc
        else:
            for arrival, earlier in zip(batch, outcomes, strict=True):
                arrival.earlier = earlier
        finally:
            with self._changed:
                for arrival in batch:
                    arrival.done = True
                self._committing = False
                self._changed.notify_all()
