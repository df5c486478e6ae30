"""SQLite persistence of AIM-Memory: one WAL-mode file, embeddings as BLOBs, evidence in its own
table, a global change sequence so every process can pull the others' writes.

Concurrency: each thread gets its own connection (used only by that thread); every write is
one ``BEGIN IMMEDIATE`` transaction (SQLite's writer lock, waited for through ``busy_timeout`` and
retried with back-off), so concurrent writers in threads or processes queue instead of failing
with "database is locked", and a committed transaction survives the process being killed.
"""
from __future__ import annotations

import contextlib
import json
import random
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np

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
  seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS nodes_seq ON nodes(seq);
CREATE INDEX IF NOT EXISTS nodes_namespace ON nodes(namespace);
CREATE TABLE IF NOT EXISTS evidence (node_id INTEGER PRIMARY KEY, text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tombstones (node_id INTEGER PRIMARY KEY, namespace TEXT NOT NULL,
                                       seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS tombstones_seq ON tombstones(seq);
INSERT OR IGNORE INTO meta(key, value) VALUES ('seq', '0');
INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', '1');
"""

NODE_COLUMNS = "id, namespace, summary, anchors, fields, links, w, stamp, proto, created_at, seq"


@dataclass
class NodeRow:
    """One row of ``nodes`` (proto decoded to float32 [dim])."""

    id: int
    namespace: str
    summary: str
    anchors: list[str]
    fields: dict
    links: list[int]
    w: float
    stamp: int
    proto: np.ndarray
    created_at: float
    seq: int

    @classmethod
    def from_sql(cls, row: tuple) -> "NodeRow":
        return cls(int(row[0]), row[1], row[2], json.loads(row[3]), json.loads(row[4]),
                   json.loads(row[5]), float(row[6]), int(row[7]),
                   np.frombuffer(row[8], dtype=np.float32).copy(), float(row[9]), int(row[10]))


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


class MemoryStore:
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
        self._retry(lambda: self.conn().executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;"))

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
        """This thread's connection."""
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
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error); yields the connection."""
        conn = self.conn()
        self._retry(lambda: conn.execute("BEGIN IMMEDIATE"))
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._retry(lambda: conn.execute("COMMIT"))

    # -- reads ------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self.conn().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def seq(self) -> int:
        return int(self.meta("seq") or 0)

    def changes_since(self, seq: int) -> tuple[list[NodeRow], list[tuple[int, str]], dict[str, int], int]:
        """(node rows with seq > ``seq``, deleted (id, namespace) since, namespace write counters,
        current seq), read in one snapshot."""
        def read():
            conn = self.conn()
            started = not conn.in_transaction
            if started:
                conn.execute("BEGIN")
            try:
                now = int(conn.execute("SELECT value FROM meta WHERE key='seq'").fetchone()[0])
                rows = [NodeRow.from_sql(r) for r in conn.execute(
                    f"SELECT {NODE_COLUMNS} FROM nodes WHERE seq > ? ORDER BY seq", (seq,))]
                gone = [(int(i), ns) for i, ns in conn.execute(
                    "SELECT node_id, namespace FROM tombstones WHERE seq > ?", (seq,))]
                counts = dict(conn.execute("SELECT name, writes FROM namespaces"))
            finally:
                if started:
                    conn.execute("COMMIT")
            return rows, gone, counts, now
        return self._retry(read)

    def evidence(self, ids: list[int]) -> dict[int, str]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        return dict(self.conn().execute(
            f"SELECT node_id, text FROM evidence WHERE node_id IN ({marks})", list(ids)))

    def node(self, node_id: int) -> NodeRow | None:
        row = self.conn().execute(f"SELECT {NODE_COLUMNS} FROM nodes WHERE id=?",
                                  (int(node_id),)).fetchone()
        return None if row is None else NodeRow.from_sql(row)

    # -- writes (inside transaction()) ----------------------------------------------------------
    @staticmethod
    def next_seq(conn: sqlite3.Connection) -> int:
        conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='seq'")
        return int(conn.execute("SELECT value FROM meta WHERE key='seq'").fetchone()[0])

    @staticmethod
    def bump_writes(conn: sqlite3.Connection, namespace: str) -> int:
        """Count one accepted write in ``namespace``; returns the new counter."""
        conn.execute("INSERT INTO namespaces(name, writes) VALUES (?, 1) "
                     "ON CONFLICT(name) DO UPDATE SET writes = writes + 1", (namespace,))
        return int(conn.execute("SELECT writes FROM namespaces WHERE name=?", (namespace,)).fetchone()[0])

    @staticmethod
    def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
        conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                     "value=excluded.value", (key, value))

    @staticmethod
    def insert_node(conn: sqlite3.Connection, namespace: str, summary: str, anchors: list[str],
                    fields: dict, links: list[int], w: float, stamp: int, proto: np.ndarray,
                    created_at: float, evidence: str) -> int:
        seq = MemoryStore.next_seq(conn)
        cur = conn.execute(
            "INSERT INTO nodes(namespace, summary, anchors, fields, links, w, stamp, proto, "
            "created_at, seq) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (namespace, summary, json.dumps(sorted(anchors), ensure_ascii=False),
             json.dumps(fields, ensure_ascii=False), json.dumps(links), float(w), int(stamp),
             np.ascontiguousarray(proto, dtype=np.float32).tobytes(), float(created_at), seq))
        node_id = int(cur.lastrowid)
        conn.execute("INSERT INTO evidence(node_id, text) VALUES (?, ?)", (node_id, evidence))
        return node_id

    @staticmethod
    def update_node(conn: sqlite3.Connection, node_id: int, *, summary: str, anchors: list[str],
                    fields: dict, links: list[int], w: float, stamp: int, proto: np.ndarray,
                    evidence: str) -> None:
        seq = MemoryStore.next_seq(conn)
        conn.execute(
            "UPDATE nodes SET summary=?, anchors=?, fields=?, links=?, w=?, stamp=?, proto=?, seq=? "
            "WHERE id=?",
            (summary, json.dumps(sorted(anchors), ensure_ascii=False),
             json.dumps(fields, ensure_ascii=False), json.dumps(links), float(w), int(stamp),
             np.ascontiguousarray(proto, dtype=np.float32).tobytes(), seq, int(node_id)))
        conn.execute("UPDATE evidence SET text=? WHERE node_id=?", (evidence, int(node_id)))

    @staticmethod
    def delete_node(conn: sqlite3.Connection, node_id: int) -> bool:
        row = conn.execute("SELECT namespace FROM nodes WHERE id=?", (int(node_id),)).fetchone()
        if row is None:
            return False
        seq = MemoryStore.next_seq(conn)
        conn.execute("DELETE FROM nodes WHERE id=?", (int(node_id),))
        conn.execute("DELETE FROM evidence WHERE node_id=?", (int(node_id),))
        conn.execute("INSERT OR REPLACE INTO tombstones(node_id, namespace, seq) VALUES (?,?,?)",
                     (int(node_id), row[0], seq))
        return True

    # -- files ------------------------------------------------------------------------------
    def backup(self, path: str) -> None:
        """Write a consistent copy of the whole database to ``path``."""
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
