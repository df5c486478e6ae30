"""AIM-Memory stores: SQLite (embedded default, one file) and PostgreSQL (shared server)."""
from __future__ import annotations

from apt_ext.memory.stores.base import Changes, NodeRow, Store, StoreError, Writer
from apt_ext.memory.stores.postgres import PostgresStore, is_postgres_url
from apt_ext.memory.stores.sqlite import SQLiteStore


def open_store(path: str | None, busy_timeout_ms: int = 30_000, synchronous: str = "NORMAL",
               read_only: bool = False) -> Store:
    """``None``: an in-memory SQLite database; ``postgresql://...``: that PostgreSQL database;
    anything else: the SQLite file at ``path``. ``read_only``: open an existing SQLite file for
    reads only (ignored for PostgreSQL, whose server enforces its own permissions). A path that
    cannot be used raises StoreError."""
    if is_postgres_url(path):
        return PostgresStore(path)
    return SQLiteStore(path, busy_timeout_ms=busy_timeout_ms, synchronous=synchronous, read_only=read_only)


__all__ = ["Changes", "NodeRow", "PostgresStore", "SQLiteStore", "Store", "StoreError", "Writer",
           "is_postgres_url", "open_store"]
