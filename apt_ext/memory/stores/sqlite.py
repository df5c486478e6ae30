"""SQLite store of AIM-Memory (the embedded default): one WAL-mode file, embeddings as BLOBs,
evidence in its own table, a global change sequence so every process can pull the others' writes.

Concurrency: each thread gets its own connection (used only by that thread); every write is
one ``BEGIN IMMEDIATE`` transaction (SQLite's writer lock, waited for through ``busy_timeout`` and
retried with back-off), so concurrent writers in threads or processes queue instead of failing
with "database is locked", and a committed transaction survives the process being killed.
"""
from __future__ import annotations

import contextlib
import random
import sqlite3
import threading
import time
from typing import Iterator

from apt_ext.memory.stores.base import SCHEMA_VERSION, Store, Writer

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


class SQLiteStore(Store):
    """The SQLite file behind an AIMMemory. ``path=None`` keeps the database in memory (one shared
    connection, used under the owner's lock)."""

    def __init__(self, path: str | None, busy_timeout_ms: int = 30_000,
                 synchronous: str = "NORMAL", retries: int = 50) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.synchronous = synchronous
        self.retries = retries
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._shared = self._open(":memory:") if path is None else None
        self._retry(self._create_schema)

    def _create_schema(self) -> None:
        conn = self.conn()
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
        conn = sqlite3.connect(target, timeout=self.busy_timeout_ms / 1000.0, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        if target != ":memory:":
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
