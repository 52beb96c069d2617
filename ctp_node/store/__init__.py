"""The database: instances, series, jobs and exports (SQLAlchemy; SQLite or PostgreSQL)."""

from ctp_node.store.database import Database

__all__ = ["Database"]
