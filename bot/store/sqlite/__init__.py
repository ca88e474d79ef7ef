"""The SQLite backend of the store: schema, group commit, retention and the queries behind ``Store``."""

from bot.store.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
