"""SQLite store of AIM-Memory (the embedded default): one WAL-mode file, embeddings as BLOBs,
evidence in its own table, a global change sequence so every process can pull the others' writes.

Concurrency: each thread gets its own connection (used only by that thread); every write is
one ``BEGIN IMMEDIATE`` transaction (SQLite's writer lock, waited for through ``busy_timeout`` and
retried with back-off), so concurrent writers in threads or processes queue instead of failing
with "database is locked", and a committed transaction survives the process being killed.

``read_only=True`` opens an existing file for reading only (``mode=ro``: nothing is created or
changed). Reading a WAL database needs its ``-shm`` file; where that cannot be created (a
read-only directory or mount) the file is opened ``immutable=1`` instead, which is exact as long
as no ``-wal`` file holds changes not yet copied into the database (otherwise StoreError says so).
A file that cannot be used raises :class:`StoreError` naming the path and the reason.
"""
from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterator

from apt_ext.memory.stores.base import SCHEMA_VERSION, Store, StoreError, Writer

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS namespaces (name TEXT PRIMARY KEY, writes INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS nodes (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  namespace TEXT NOT NULL,
  summary TEXT NOT NULL,
  anchors TEXT NOT NULL,
  fields TEXT NOT NULL,
  links TEXT NOT NULL,
  w REAL NOT NULL,
  stamp INTEGER NOT NULL,
  proto BLOB NOT NULL,
  created_at REAL NOT NULL,
  seq INTEGER NOT NULL,
  speaker TEXT,
  ts REAL);
CREATE INDEX IF NOT EXISTS nodes_seq ON nodes(seq);
CREATE INDEX IF NOT EXISTS nodes_namespace ON nodes(namespace);
CREATE TABLE IF NOT EXISTS evidence (node_id INTEGER PRIMARY KEY, text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tombstones (node_id INTEGER PRIMARY KEY, namespace TEXT NOT NULL,
                                       seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS tombstones_seq ON tombstones(seq);
INSERT OR IGNORE INTO meta(key, value) VALUES ('seq', '0');
"""


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


def _reason(exc: sqlite3.DatabaseError) -> str:
    """What a sqlite3 error says about the file, in words a user can act on."""
    msg = str(exc)
    if "file is not a database" in msg:
        return "is not a SQLite database (file is not a database)"
    if "malformed" in msg:
        return f"is damaged or truncated ({msg})"
    if "readonly" in msg:
        return f"is read-only ({msg}); only reads (search, answer, stats, export) work on it"
    if "unable to open" in msg:
        return f"cannot be opened ({msg}: no permission, or not a regular file)"
    if "no such table" in msg or "no such column" in msg:
        return f"is a SQLite database but not an AIM-Memory one ({msg})"
    return f"cannot be used ({type(exc).__name__}: {msg})"


class SQLiteStore(Store):
    """The SQLite file behind an AIMMemory. ``path=None`` keeps the database in memory (one shared
    connection, used under the owner's lock); ``read_only=True`` opens an existing file for
    reads only (module docstring)."""

    def __init__(self, path: str | None, busy_timeout_ms: int = 30_000,
                 synchronous: str = "NORMAL", retries: int = 50, read_only: bool = False) -> None:
        if read_only and path is None:
            raise ValueError("read_only: an in-memory database (path=None) cannot be opened read-only")
        self.path = path
        self.read_only = read_only
        self.busy_timeout_ms = busy_timeout_ms
        self.synchronous = synchronous
        self.retries = retries
        self._uri: str | None = None  # the read-only URI (mode=ro, or immutable=1 when -shm cannot be made)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        if path is not None:
            self._check_path(Path(path))
        try:
            with self._store_errors():
                self._shared = self._open(":memory:") if path is None else None
                if read_only:
                    self._open_read_only(Path(path))
                else:
                    self._retry(self._create_schema)
        except StoreError:
            self.close()
            raise

    @contextlib.contextmanager
    def _store_errors(self) -> Iterator[None]:
        """sqlite3 errors about the file (not "database is locked") as StoreError naming it."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
                raise
            raise StoreError(f"{self.path or ':memory:'} {_reason(exc)}") from exc

    def _check_path(self, p: Path) -> None:
        if p.is_dir():
            raise StoreError(f"{p} is a directory, not a database file")
        if not p.parent.is_dir():
            raise StoreError(f"{p}: the directory {p.parent} does not exist")
        if self.read_only:
            if not p.exists():
                raise StoreError(f"{p} does not exist (a read-only open creates nothing)")
            return
        reads_only = "; only reads (search, answer, stats, export) work on it"
        if p.exists() and not os.access(p, os.W_OK):
            raise StoreError(f"{p} is read-only (no write permission, or a read-only file system){reads_only}")
        if not os.access(p.parent, os.W_OK | os.X_OK):  # SQLite writes its -wal and -shm files beside it
            raise StoreError(f"{p} is in a read-only directory ({p.parent}: no write permission, or a read-only "
                             f"file system), where SQLite cannot keep its -wal file{reads_only if p.exists() else ''}")

    def _open_read_only(self, p: Path) -> None:
        """Open ``p`` with mode=ro, or immutable=1 when its -shm file cannot be created, and check
        that it is an AIM-Memory database of this schema."""
        self._uri = p.resolve().as_uri() + "?mode=ro"
        try:
            self.meta("schema")
        except sqlite3.OperationalError as exc:
            if "readonly" not in str(exc) and "unable to open" not in str(exc):
                raise
            wal = Path(f"{p}-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise StoreError(f"{p} is in a read-only place and its -wal file holds changes not yet in "
                                 f"the database, which a read-only open cannot see; open it once with "
                                 f"write access (any apt-ext memory command from its owner) to merge them") from exc
            self.close()
            self._uri = p.resolve().as_uri() + "?immutable=1"
        schema = self.meta("schema")
        if schema is None:
            raise StoreError(f"{p} is a SQLite database but not an AIM-Memory one (no schema entry in meta)")
        if schema != SCHEMA_VERSION:
            raise StoreError(f"{p} has AIM-Memory schema {schema}, this apt_ext reads {SCHEMA_VERSION}; open it "
                             f"once with write access to upgrade it")

    def _foreign_tables(self, conn: sqlite3.Connection) -> list[str]:
        """The tables of a database that has some but no AIM-Memory ``meta`` table."""
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return [] if "meta" in tables else tables

    def _create_schema(self) -> None:
        conn = self.conn()
        foreign = self._foreign_tables(conn)
        if foreign:  # never add our tables to another application's database
            raise StoreError(f"{self.path} is a SQLite database but not an AIM-Memory one (its tables: "
                             f"{', '.join(foreign[:5])}); AIM-Memory does not add its tables to it")
        conn.executescript("BEGIN IMMEDIATE;" + SCHEMA)
        try:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(nodes)")}
            for column, kind in (("speaker", "TEXT"), ("ts", "REAL")):  # files of schema 1
                if column not in columns:
                    conn.execute(f"ALTER TABLE nodes ADD COLUMN {column} {kind}")
            conn.execute("INSERT INTO meta(key, value) VALUES ('schema', ?) ON CONFLICT(key) "
                         "DO UPDATE SET value = excluded.value", (SCHEMA_VERSION,))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _open(self, target: str) -> sqlite3.Connection:
        conn = sqlite3.connect(self._uri or target, timeout=self.busy_timeout_ms / 1000.0, isolation_level=None,
                               check_same_thread=False, uri=self._uri is not None)
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        if target != ":memory:" and not self.read_only:
            self._retry(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone())
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        with self._all_lock:
            self._all.append(conn)
        return conn

    def conn(self) -> sqlite3.Connection:
        if self._shared is not None:
            return self._shared
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open(self.path)
            self._local.conn = conn
        return conn

    def _retry(self, fn):
        delay = 0.005
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or attempt == self.retries:
                    raise
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.5)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Writer]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error)."""
        if self.read_only:
            raise StoreError(f"{self.path} is open read-only: it cannot be written")
        conn = self.conn()
        self._retry(lambda: conn.execute("BEGIN IMMEDIATE"))
        try:
            yield Writer(self)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._retry(lambda: conn.execute("COMMIT"))

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        conn = self.conn()
        if conn.in_transaction:
            yield
            return
        self._retry(lambda: conn.execute("BEGIN"))
        try:
            yield
        finally:
            conn.execute("COMMIT")

    def changes_since(self, seq: int):
        with self._store_errors():  # a damaged file shows when its pages are read
            return self._retry(lambda: super(SQLiteStore, self).changes_since(seq))

    def backup(self, path: str) -> None:
        dest = sqlite3.connect(path)
        try:
            self._retry(lambda: self.conn().backup(dest))
            dest.execute("PRAGMA journal_mode=WAL")
        finally:
            dest.close()

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
        self._shared = None
