"""What every AIM-Memory store does, whatever the database: the row type, the write statements of
one transaction, the reads, and the change sequence every process follows.

SQL here is written once, with ``?`` marks; a backend whose driver wants ``%s`` sets ``mark``.
Every write transaction first takes the store's writer lock (SQLite: ``BEGIN IMMEDIATE``;
PostgreSQL: the ``seq`` row of ``meta`` locked FOR UPDATE), so writes are serialised, each bumps
the global change sequence ``meta.seq`` once per changed node, and sequence order is commit order:
a reader that has seen sequence ``s`` has seen every change up to ``s``.
"""
from __future__ import annotations

import contextlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

NODE_COLUMNS = "id, namespace, summary, anchors, fields, links, w, stamp, proto, created_at, seq, speaker, ts"
NEW_NODE_COLUMNS = NODE_COLUMNS.removeprefix("id, ")  # what an insert gives (the id is assigned)
TABLES = (("meta", "key, value"), ("namespaces", "name, writes"), ("nodes", NODE_COLUMNS),
          ("evidence", "node_id, text"), ("tombstones", "node_id, namespace, seq"))
SCHEMA_VERSION = "2"  # 2: nodes.speaker and nodes.ts (conversation fields)


class StoreError(RuntimeError):
    """The database at a memory's path cannot be used: the message names the path and why (not a
    database, damaged, a directory, a missing directory, read-only, ...)."""


@dataclass
class NodeRow:
    """One row of ``nodes`` (proto decoded to float32 [dim]; ts: Unix seconds or None)."""

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
    speaker: str | None
    ts: float | None

    @classmethod
    def from_sql(cls, row: tuple) -> "NodeRow":
        return cls(int(row[0]), row[1], row[2], json.loads(row[3]), json.loads(row[4]),
                   json.loads(row[5]), float(row[6]), int(row[7]),
                   np.frombuffer(bytes(row[8]), dtype=np.float32).copy(), float(row[9]), int(row[10]),
                   row[11], None if row[12] is None else float(row[12]))


@dataclass
class Changes:
    """What changed after a sequence number: node rows (new or updated) and their evidence texts,
    deleted (id, namespace) pairs, every namespace's write counter, and the sequence they bring
    the reader to."""

    rows: list[NodeRow]
    texts: dict[int, str]
    gone: list[tuple[int, str]]
    counts: dict[str, int]
    seq: int


def _new_row(seq: int, namespace: str, summary: str, anchors: list[str], fields: dict, links: list[int],
             w: float, stamp: int, proto: np.ndarray, created_at: float, evidence: str,
             speaker: str | None = None, ts: float | None = None) -> tuple:
    """The values of a new ``nodes`` row in the order of ``NEW_NODE_COLUMNS`` (``evidence`` goes
    to its own table; proto float32 [dim]; created_at and ts in Unix seconds)."""
    return (namespace, summary, json.dumps(sorted(anchors), ensure_ascii=False),
            json.dumps(fields, ensure_ascii=False), json.dumps(links), float(w), int(stamp),
            np.ascontiguousarray(proto, dtype=np.float32).tobytes(), float(created_at), seq, speaker, ts)


class Writer:
    """The write statements of one open transaction of ``store``."""

    def __init__(self, store: "Store") -> None:
        self._store = store

    def _one(self, sql: str, params: tuple = ()) -> tuple:
        return self._store.execute(sql, params).fetchone()

    def next_seq(self, count: int = 1) -> int:
        """Bump the global change sequence by ``count``; returns the new value (the last of the
        ``count`` numbers taken)."""
        return int(self._one("UPDATE meta SET value = CAST(CAST(value AS BIGINT) + ? AS TEXT) "
                             "WHERE key = 'seq' RETURNING value", (int(count),))[0])

    def bump_writes(self, namespace: str, count: int = 1) -> int:
        """Count ``count`` accepted writes in ``namespace``; returns the new counter."""
        return int(self._one("INSERT INTO namespaces(name, writes) VALUES (?, ?) ON CONFLICT(name) "
                             "DO UPDATE SET writes = namespaces.writes + excluded.writes RETURNING writes",
                             (namespace, int(count)))[0])

    def set_meta(self, key: str, value: str) -> None:
        self._store.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                            "SET value = excluded.value", (key, value))

    def insert_node(self, namespace: str, summary: str, anchors: list[str], fields: dict,
                    links: list[int], w: float, stamp: int, proto: np.ndarray, created_at: float,
                    evidence: str, speaker: str | None = None, ts: float | None = None,
                    node_id: int | None = None) -> int:
        """Insert a node and its evidence; returns its id (``node_id`` forces one, for copies)."""
        values = _new_row(self.next_seq(), namespace, summary, anchors, fields, links, w, stamp, proto,
                          created_at, evidence, speaker, ts)
        columns = NEW_NODE_COLUMNS
        if node_id is not None:
            columns, values = "id, " + columns, (int(node_id),) + values
        marks = ",".join("?" * len(values))
        new_id = int(self._one(f"INSERT INTO nodes({columns}) VALUES ({marks}) RETURNING id", values)[0])
        self._store.execute("INSERT INTO evidence(node_id, text) VALUES (?, ?)", (new_id, evidence))
        return new_id

    def insert_nodes(self, nodes: list[dict[str, Any]]) -> list[int]:
        """Insert ``nodes`` (each a dict of :meth:`insert_node`'s arguments but ``node_id``) and their
        evidence with one statement per table (many rows each); returns their ids, in order. The
        same rows, ids and change sequence numbers as :meth:`insert_node` called once per node."""
        if not nodes:
            return []
        first = self.next_seq(len(nodes)) - len(nodes) + 1
        marks = ",".join("?" * len(NEW_NODE_COLUMNS.split(",")))
        self._store.executemany(f"INSERT INTO nodes({NEW_NODE_COLUMNS}) VALUES ({marks})",
                                [_new_row(first + i, **node) for i, node in enumerate(nodes)])
        id_of = dict(self._store.execute("SELECT seq, id FROM nodes WHERE seq >= ? AND seq < ?",
                                         (first, first + len(nodes))).fetchall())
        ids = [int(id_of[first + i]) for i in range(len(nodes))]
        self._store.executemany("INSERT INTO evidence(node_id, text) VALUES (?, ?)",
                                [(i, node["evidence"]) for i, node in zip(ids, nodes)])
        return ids

    def update_node(self, node_id: int, *, summary: str, anchors: list[str], fields: dict,
                    links: list[int], w: float, stamp: int, proto: np.ndarray, evidence: str,
                    speaker: str | None, ts: float | None) -> None:
        seq = self.next_seq()
        self._store.execute(
            "UPDATE nodes SET summary=?, anchors=?, fields=?, links=?, w=?, stamp=?, proto=?, seq=?, "
            "speaker=?, ts=? WHERE id=?",
            (summary, json.dumps(sorted(anchors), ensure_ascii=False),
             json.dumps(fields, ensure_ascii=False), json.dumps(links), float(w), int(stamp),
             np.ascontiguousarray(proto, dtype=np.float32).tobytes(), seq, speaker, ts, int(node_id)))
        self._store.execute("UPDATE evidence SET text=? WHERE node_id=?", (evidence, int(node_id)))

    def delete_node(self, node_id: int) -> bool:
        row = self._one("SELECT namespace FROM nodes WHERE id=?", (int(node_id),))
        if row is None:
            return False
        seq = self.next_seq()
        self._store.execute("DELETE FROM nodes WHERE id=?", (int(node_id),))
        self._store.execute("DELETE FROM evidence WHERE node_id=?", (int(node_id),))
        self._store.execute("INSERT INTO tombstones(node_id, namespace, seq) VALUES (?, ?, ?) "
                            "ON CONFLICT(node_id) DO UPDATE SET namespace = excluded.namespace, "
                            "seq = excluded.seq", (int(node_id), row[0], seq))
        return True


class Store(ABC):
    """A database behind an AIMMemory. Subclasses open connections (one per thread), take the
    writer lock in :meth:`transaction` and give a consistent snapshot in :meth:`snapshot`."""

    mark = "?"
    path: str | None

    def execute(self, sql: str, params: tuple | list = ()) -> Any:
        """Run ``sql`` (written with ``?`` marks) on this thread's connection; returns the cursor."""
        if self.mark != "?":
            sql = sql.replace("?", self.mark)
        return self.conn().execute(sql, params)

    def executemany(self, sql: str, rows: list[tuple]) -> None:
        """Run ``sql`` (written with ``?`` marks) once per row of ``rows`` on this thread's connection."""
        if self.mark != "?":
            sql = sql.replace("?", self.mark)
        cursor = self.conn().cursor()
        try:
            cursor.executemany(sql, rows)
        finally:
            cursor.close()

    @abstractmethod
    def conn(self) -> Any:
        """This thread's connection."""

    @abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager[Writer]:
        """Begin a write transaction holding the writer lock; yields a :class:`Writer`; commits on
        exit, rolls back on an exception."""

    @abstractmethod
    def snapshot(self) -> contextlib.AbstractContextManager[None]:
        """Reads inside see one consistent state (a no-op inside a write transaction)."""

    @abstractmethod
    def backup(self, path: str) -> None:
        """Write a consistent copy of the whole store to the SQLite file ``path``."""

    @abstractmethod
    def close(self) -> None:
        """Close every connection."""

    # -- reads ------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def seq(self) -> int:
        return int(self.meta("seq") or 0)

    def changes_since(self, seq: int) -> Changes:
        """Every change committed after ``seq``, read in one snapshot."""
        with self.snapshot():
            now = int(self.meta("seq") or 0)
            rows = [NodeRow.from_sql(r) for r in self.execute(
                f"SELECT {NODE_COLUMNS} FROM nodes WHERE seq > ? ORDER BY seq", (seq,))]
            texts = {int(i): text for i, text in self.execute(
                "SELECT e.node_id, e.text FROM evidence e JOIN nodes n ON n.id = e.node_id WHERE n.seq > ?",
                (seq,))}
            gone = [(int(i), ns) for i, ns in self.execute(
                "SELECT node_id, namespace FROM tombstones WHERE seq > ?", (seq,))]
            counts = {name: int(w) for name, w in self.execute("SELECT name, writes FROM namespaces")}
        return Changes(rows, texts, gone, counts, now)

    def evidence(self, ids: list[int]) -> dict[int, str]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        return {int(i): text for i, text in self.execute(
            f"SELECT node_id, text FROM evidence WHERE node_id IN ({marks})", [int(i) for i in ids])}

    def node(self, node_id: int) -> NodeRow | None:
        row = self.execute(f"SELECT {NODE_COLUMNS} FROM nodes WHERE id=?", (int(node_id),)).fetchone()
        return None if row is None else NodeRow.from_sql(row)

    def dump(self) -> list[tuple[str, str, list[tuple]]]:
        """(table, columns, rows) of every table, read in one snapshot: the content of a copy."""
        with self.snapshot():
            return [(table, columns, [tuple(r) for r in self.execute(f"SELECT {columns} FROM {table}")])
                    for table, columns in TABLES]
