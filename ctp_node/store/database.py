"""Engine and sessions: SQLite by default, PostgreSQL to scale out."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ctp_node.file_modes import create_file, make_folders, restrict_file
from ctp_node.store.models import Base

log = logging.getLogger(__name__)


class Database:
    """One database the node's processes share.

    Parameters
    ----------
    url : SQLAlchemy URL, e.g. ``sqlite:////var/ctp-node/ctp-node.db`` or
        ``postgresql+psycopg://user@host/ctpnode``.
    password : put into ``url`` (``database.password_file`` or ``password_env``); kept
        only by the engine, which never shows it.
    """

    def __init__(self, url: str, password: str | None = None) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:" and not path.startswith("file:"):
                _owner_only_sqlite_file(Path(path.partition("?")[0]))
            self.engine: Engine = create_engine(
                url, connect_args={"timeout": 30, "check_same_thread": False}
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin_immediate)
        else:
            with_password = make_url(url).set(password=password) if password else url
            self.engine = create_engine(with_password, pool_pre_ping=True)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def insert(self):  # type: ignore[no-untyped-def]
        """The dialect's ``insert`` construct (it has ``on_conflict_do_nothing``)."""
        return sqlite_insert if self.is_sqlite else postgresql_insert

    def create_schema(self) -> None:
        """Create missing tables and add missing columns (idempotent).

        A database written by an earlier release of the node lacks the columns added since;
        they are added with their default value, so that upgrading keeps every record. Only
        additions are made: nothing is renamed or dropped.
        """
        Base.metadata.create_all(self.engine)
        added = _add_missing_columns(self.engine)
        if added:
            log.info("database upgraded: added %s", ", ".join(added))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        with self._sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


class DatabaseUnavailable(Exception):
    """The database cannot be used: its driver is not installed, it cannot be reached, or
    (for commands that only read what the node recorded) it does not exist. The message says
    why and what to do."""


def open_database(url: str, password: str | None = None, *, must_exist: bool = False) -> Database:
    """The database at ``url`` (with ``password`` put into it), its tables created or upgraded
    (:meth:`Database.create_schema`).

    With ``must_exist``, a SQLite file that does not exist is refused rather than created:
    ``status`` pointed at the wrong configuration must not answer from a new, empty database.

    Raises
    ------
    DatabaseUnavailable : see :func:`database_problem`; or the SQLite file is missing.
    """
    problem = database_problem(url)
    if problem is None and must_exist:
        missing = sqlite_file(url)
        if missing is not None and not missing.exists():
            problem = (
                f"there is no database at {missing}: the node has not run with this "
                "configuration, or database.url names another file; check --config"
            )
    if problem is not None:
        raise DatabaseUnavailable(problem)
    try:
        db = Database(url, password)
        db.create_schema()
    except OperationalError as exc:
        raise DatabaseUnavailable(_cannot_connect(url, exc)) from exc
    return db


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite ``url``; ``None`` for another database or an in-memory one."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def database_problem(url: str, password: str | None = None, *, connect: bool = False) -> str | None:
    """Why the database at ``url`` cannot be used, in a sentence that says what to do;
    ``None`` when it can. Without ``connect`` only whether SQLAlchemy knows the database and
    its driver is installed; with it, also whether a connection succeeds (within
    :data:`CONNECT_TIMEOUT_S`)."""
    try:
        parsed = make_url(url)
        parsed.get_dialect().import_dbapi()
    except NoSuchModuleError:
        return f"{_safe(url)} names a database SQLAlchemy does not know; {_SUPPORTED}"
    except ArgumentError:
        return f"{_safe(url)} is not a database URL; e.g. sqlite:////var/lib/ctp-node/ctp-node.db"
    except ImportError as exc:
        return f"the driver for {parsed.drivername} is not installed ({exc}); {_SUPPORTED}"
    if not connect or parsed.get_backend_name() == "sqlite":
        return None
    with_password = parsed.set(password=password) if password else parsed
    engine = create_engine(with_password, connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        return _cannot_connect(url, exc)
    finally:
        engine.dispose()
    return None


#: Seconds ``database_problem(connect=True)`` waits for the database server.
CONNECT_TIMEOUT_S = 5

_SUPPORTED = (
    "ctp-node works with SQLite (sqlite:////path/ctp-node.db) and PostgreSQL "
    "(postgresql+psycopg://user@host/db, with pip install 'ctp-node[postgres]')"
)


def _safe(url: str) -> str:
    """``url`` with any password in it masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "database.url"


def _cannot_connect(url: str, exc: OperationalError) -> str:
    """What a failed connection to ``url`` means, from the driver's first line."""
    why = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return (
            f"cannot open the SQLite database {parsed.database} ({why}); its folder must exist "
            "or be creatable, and be writable by the user the node runs as"
        )
    where = f"{parsed.host or 'localhost'}:{parsed.port or 'default port'}"
    return (
        f"cannot connect to the database at {where} ({why}); check that the server runs "
        "there and accepts connections, and database.url's host, port, user and database, "
        "and the password"
    )


def _add_missing_columns(engine: Engine) -> list[str]:
    """``ALTER TABLE … ADD COLUMN`` for every model column the database lacks; returns
    ``table.column`` of each one added."""
    added = []
    existing_tables = set(inspect(engine).get_table_names())
    with engine.begin() as connection:
        for table in Base.metadata.sorted_tables:
            if table.name not in existing_tables:
                continue
            present = {c["name"] for c in inspect(connection).get_columns(table.name)}
            for column in table.columns:
                if column.name in present:
                    continue
                kind = column.type.compile(dialect=engine.dialect)
                default = column.default.arg if column.default is not None else None
                clause = ""
                if isinstance(default, bool | int | float):
                    clause = f" DEFAULT {int(default) if isinstance(default, bool) else default}"
                elif isinstance(default, str):
                    clause = " DEFAULT '" + default.replace("'", "''") + "'"
                connection.exec_driver_sql(
                    f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}{clause}'
                )
                added.append(f"{table.name}.{column.name}")
    return added


def _owner_only_sqlite_file(path: Path) -> None:
    """Create the SQLite file owner-only before SQLite opens it (SQLite gives its -wal and
    -shm files the database file's mode), or make existing ones owner-only; logged once."""
    make_folders(path.parent)
    was = {}
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        try:
            mode = restrict_file(path.with_name(name))
        except PermissionError as exc:  # another user's file: SQLite will say if it matters
            log.error("cannot make %s owner-only: %s", path.with_name(name), exc.strerror)
            continue
        if mode is not None:
            was[name] = mode
    if was:
        log.warning(
            "database files made owner-only (0600), they were: %s",
            ", ".join(f"{name} {mode:04o}" for name, mode in was.items()),
        )
    try:
        os.close(create_file(path, os.O_RDWR | os.O_EXCL))
    except FileExistsError:
        pass


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets the receiver write while workers read; a busy timeout instead of "locked" errors.
    # synchronous=FULL: in WAL mode, NORMAL may roll back the last commits on power loss, and
    # the receiver answers Success only once the instance is recorded, so a commit must be on
    # disk when it returns.
    # Let SQLAlchemy, not the driver, emit BEGIN (SQLAlchemy's documented pysqlite recipe).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin_immediate(connection) -> None:  # type: ignore[no-untyped-def]
    # Take the write lock at BEGIN so that read-then-write transactions (record an instance,
    # claim a job) from concurrent threads and processes serialise instead of failing.
    connection.exec_driver_sql("BEGIN IMMEDIATE")
