"""The console's audit trail on SQLite and PostgreSQL: recorded once, read back newest first,
texts cleaned; and a database of an earlier release gains the table on upgrade."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ctp_node.store import Database
from ctp_node.store.console_audit import (
    ConsoleActionRecord,
    list_console_actions,
    record_console_action,
)
from ctp_node.store.models import ConsoleActionKind


def test_actions_are_recorded_and_listed_newest_first(db) -> None:
    first = record_console_action(
        db, ConsoleActionRecord(ConsoleActionKind.SIGN_IN_FAILED, "mallory\x00\n", "10.0.0.9")
    )
    second = record_console_action(
        db,
        ConsoleActionRecord(
            ConsoleActionKind.REPROCESS,
            "alice",
            "10.0.0.7",
            series_instance_uid="1.2.3",
            job_id=4,
            detail="AIF 1,2,3, VOF auto",
        ),
    )
    assert second > first
    latest, earlier = list_console_actions(db)
    assert (latest.action, latest.user, latest.job_id, latest.detail) == (
        "reprocess",
        "alice",
        4,
        "AIF 1,2,3, VOF auto",
    )
    assert (earlier.user, earlier.outcome) == ("mallory", "done")  # control characters gone
    assert latest.at is not None and latest.at >= earlier.at
    assert [a.id for a in list_console_actions(db, latest=1)] == [second]


def test_an_earlier_database_gains_the_table(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    sqlite3.connect(path).execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY)").connection.close()
    database = Database(f"sqlite:///{path}")
    database.create_schema()
    record_console_action(database, ConsoleActionRecord(ConsoleActionKind.SIGN_OUT, "a", "::1"))
    assert len(list_console_actions(database)) == 1
    database.dispose()
