"""The SQLite backend of the store: schema, group commit, retention and the queries behind ``Store``."""

from .store import SqliteStore

__all__ = ["SqliteStore"]
