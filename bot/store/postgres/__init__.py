"""The PostgreSQL backend of the store, for several bot replicas on one database: schema,
connections that survive a restart of the server, cross-process change signals (LISTEN/NOTIFY)
and the queries behind ``Store``."""

from bot.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
