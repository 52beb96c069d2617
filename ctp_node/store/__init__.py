"""The database: instances, series, jobs and exports (SQLAlchemy; SQLite or PostgreSQL)."""

from ctp_node.store.database import (
    Database,
    DatabaseUnavailable,
    database_problem,
    open_database,
    sqlite_file,
)

__all__ = ["Database", "DatabaseUnavailable", "database_problem", "open_database", "sqlite_file"]
