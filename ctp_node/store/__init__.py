"""The database: instances, series, jobs and exports (SQLAlchemy; SQLite or PostgreSQL)."""

from ctp_node.store.database import Database, open_database

__all__ = ["Database", "open_database"]
