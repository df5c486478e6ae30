"""AIMMemory: the AIM-Memory API (write, route, answer, update/delete, namespaces, persistence)."""
from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any, Callable
from urllib.parse import urlsplit

import numpy as np

from apt_ext.memory.anchors import (SPEAKER_PREFIX, anchor_overlap, anchor_weight, definitions, extract_anchors,
                                    is_word_anchor, query_anchor_count, with_speaker_forms)
from apt_ext.memory.config import AIMConfig
from apt_ext.memory.conversation import check_speaker, field_anchors, to_timestamp
from apt_ext.memory.embedder import Embedder, default_embedder, embed_checked
from apt_ext.memory.gate import informativeness
from apt_ext.memory.index import ClusterIndex
from apt_ext.memory.lexical import BM25Index, stemmer_name, tokenize
from apt_ext.memory.modes import resolve_mode
from apt_ext.memory.node import MemoryNode
from apt_ext.memory.stores import NodeRow, SQLiteStore, is_postgres_url, open_store
from apt_ext.memory.summary import summarize

_INSERT_BATCH = 4096  # nodes per multi-row insert of import_records (bounds the rows held at once)
_NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,63}$")


def _redacted(path: str) -> str:
    """``path`` with the password of a database URL replaced by ***."""
    if not is_postgres_url(path):
        return path
    parts = urlsplit(path)
    if parts.password is None:
        return path
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def check_namespace(namespace: Any) -> str:
    """``namespace`` if it is a valid name (1-64 of letters, digits, ``_ . : @ -``; starts with
    a letter or digit), else TypeError/ValueError."""
    if not isinstance(namespace, str):
        raise TypeError(f"namespace must be a str, got {type(namespace).__name__}")
    if not _NAMESPACE.match(namespace):
        raise ValueError(f"namespace must be 1-64 characters of letters, digits and _.:@- starting "
                         f"with a letter or digit, got {namespace!r}")
    return namespace


@dataclass
class _Entry:
    summary: str
    anchors: frozenset[str]
    fields: dict
    links: list[int]
    w: float
    stamp: int
    created_at: float
    speaker: str | None
    ts: float | None
    defined: tuple[str, ...] = ()  # its "def:" anchors (routing checks these against the query text)


def _timestamps(entry: _Entry) -> list[float]:
    """Every timestamp written into a node (several when near-duplicates were merged into it)."""
    return list(entry.fields.get("timestamps") or ([] if entry.ts is None else [entry.ts]))


def _date_anchors(entry: _Entry) -> set[str]:
    return set().union(*(field_anchors(None, t) for t in _timestamps(entry)))


@dataclass
class _Space:
    """In-memory state of one namespace: vector index, lexical index, node metadata, anchor
    postings."""

    index: ClusterIndex
    entries: dict[int, _Entry] = field(default_factory=dict)
    postings: dict[str, set[int]] = field(default_factory=dict)
    lexical: BM25Index = field(default_factory=BM25Index)
    writes: int = 0
    inertia: np.ndarray | None = None


class AIMMemory:
    """Long-term memory over real sentence embeddings; see ``docs/memory.md``.

    Thread-safe (one lock around the in-memory state; database connections per thread) and safe
    for several processes sharing one SQLite file or one PostgreSQL database (each pulls the
    others' committed writes, by the store's change sequence, before it reads or writes).
    """

    def __init__(self, config: AIMConfig | None = None, path: str | None = None,
                 embedder: Embedder | None = None, read_only: bool = False) -> None:
        if config is not None and not isinstance(config, AIMConfig):
            raise TypeError(f"config must be an AIMConfig or None, got {type(config).__name__}")
        if path is not None and not isinstance(path, str) and not hasattr(path, "__fspath__"):
            raise TypeError(f"path must be a file path, a postgresql:// URL or None, got {type(path).__name__}")
        if embedder is not None and not callable(embedder):
            raise TypeError(f"embedder must be a callable list[str] -> array, got {type(embedder).__name__}")
        if not isinstance(read_only, bool):
            raise TypeError(f"read_only must be a bool, got {type(read_only).__name__}")
        self.path = None if path is None else str(path)
        self._store = open_store(self.path, read_only=read_only)
        stored_config = self._store.meta("config")
        if config is None:
            config = AIMConfig.from_json(stored_config) if stored_config else AIMConfig()
        self.config = config
        if isinstance(self._store, SQLiteStore):
            self._store.busy_timeout_ms = config.busy_timeout_ms
            self._store.synchronous = config.synchronous
        self.embedder: Embedder = embedder if embedder is not None else default_embedder(config.embed_batch_size)
        self.embedder_name = getattr(self.embedder, "name", type(self.embedder).__name__)
        dim = self._store.meta("dim")
        self.dim: int | None = int(dim) if dim else None
        if stored_config is None and not read_only:
            with self._store.transaction() as tx:
                if self._store.meta("config") is None:
                    tx.set_meta("config", config.to_json())
        self._lock = threading.RLock()
        self._spaces: dict[str, _Space] = {}
        self._seq = 0
        self.counters = {"writes": 0, "merges": 0, "rejected": 0, "routes": 0, "scanned": 0}
        self._sync()

    # -- state sync -------------------------------------------------------------------------
    def _space(self, namespace: str) -> _Space:
        space = self._spaces.get(namespace)
        if space is None:
            c = self.config
            space = _Space(ClusterIndex(self.dim or 1, cluster_size=c.cluster_size, n_probe=c.n_probe,
                                        hot_window=c.hot_window_size, kmeans_iters=c.kmeans_iters))
            self._spaces[namespace] = space
        return space

    def _sync(self) -> None:
        """Apply every change committed (by any thread or process) since the last sync."""
        with self._lock:
            if self._seq and self._store.seq() == self._seq:
                return
            changes = self._store.changes_since(self._seq)
            rows, gone, counts, now = changes.rows, changes.gone, changes.counts, changes.seq
            if self.dim is None and self._store.meta("dim"):
                self.dim = int(self._store.meta("dim"))
            by_space: dict[str, list[NodeRow]] = {}
            for row in rows:
                by_space.setdefault(row.namespace, []).append(row)
            for node_id, namespace in gone:
                space = self._spaces.get(namespace)
                if space is not None and node_id in space.entries:
                    self._drop(space, node_id)
            for namespace, space_rows in by_space.items():
                space = self._space(namespace)
                for row in space_rows:
                    if row.id in space.entries:
                        self._drop(space, row.id)
                    anchors = frozenset(row.anchors)
                    if row.speaker is not None and not any(a.startswith(SPEAKER_PREFIX) for a in anchors):
                        # written before speaker anchors had their "spk:" prefix (bare name only)
                        anchors |= field_anchors(row.speaker, None)
                    entry = _Entry(row.summary, anchors, row.fields, row.links, row.w,
                                   row.stamp, row.created_at, row.speaker, row.ts,
                                   tuple(a for a in row.anchors if a.startswith("def:")))
                    space.entries[row.id] = entry
                    for anchor in entry.anchors:
                        space.postings.setdefault(anchor, set()).add(row.id)
                    space.lexical.add(row.id, tokenize(changes.texts.get(row.id, row.summary))
                                      + (tokenize(row.speaker) if row.speaker else []))
                ids = [r.id for r in space_rows]
                protos = np.stack([r.proto for r in space_rows])
                if len(space.index) == 0 and len(ids) >= 2 * self.config.cluster_size:
                    space.index.build(np.asarray(ids), protos)
                else:
                    space.index.add(ids, protos)
            for namespace, writes in counts.items():
                self._space(namespace).writes = int(writes)
            self._seq = now

    @staticmethod
    def _drop(space: _Space, node_id: int) -> None:
        entry = space.entries.pop(node_id)
        for anchor in entry.anchors:
            ids = space.postings.get(anchor)
            if ids is not None:
                ids.discard(node_id)
                if not ids:
                    del space.postings[anchor]
        space.index.remove([node_id])
        space.lexical.remove(node_id)

    # -- validation ---------------------------------------------------------------------------
    def _check_text(self, text: Any, name: str) -> str:
        if not isinstance(text, str):
            raise TypeError(f"{name} must be a str, got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"{name} must not be empty")
        if "\x00" in text:
            raise ValueError(f"{name} must not contain NUL characters (no store keeps them)")
        if len(text) > self.config.max_text_chars:
            raise ValueError(f"{name} has {len(text)} characters; the limit is "
                             f"AIMConfig.max_text_chars={self.config.max_text_chars}")
        return text

    def _embed(self, texts: list[str]) -> np.ndarray:
        vecs = embed_checked(self.embedder, texts, self.dim, self.config.embed_batch_size)
        if self.dim is None:
            with self._lock, self._store.transaction() as tx:
                stored = self._store.meta("dim")
                if stored is None:
                    tx.set_meta("dim", str(vecs.shape[1]))
                    tx.set_meta("embedder", str(self.embedder_name))
                    stored = str(vecs.shape[1])
                self.dim = int(stored)
                for space in self._spaces.values():
                    if len(space.index) == 0:
                        space.index = ClusterIndex(self.dim, self.config.cluster_size, self.config.n_probe,
                                                   self.config.hot_window_size, self.config.kmeans_iters)
            if vecs.shape[1] != self.dim:
                raise RuntimeError(f"embedder returned dimension {vecs.shape[1]}, but this memory "
                                   f"stores {self.dim}-d embeddings")
        return vecs

    # -- nodes ----------------------------------------------------------------------------------
    def _weight(self, space: _Space, entry: _Entry) -> float:
        return float(entry.w * self.config.weight_decay_gamma ** max(0, space.writes - entry.stamp))

    def _node(self, namespace: str, node_id: int, evidence: str | None = None,
              score: float | None = None) -> MemoryNode:
        space = self._spaces[namespace]
        entry = space.entries[node_id]
        fields = dict(entry.fields)
        fields["anchors"] = sorted(entry.anchors)
        return MemoryNode(id=node_id, proto=space.index.vector(node_id).copy(), summary=entry.summary,
                          fields=fields, links=list(entry.links), w=self._weight(space, entry),
                          evidence_ptr=node_id, evidence_text=evidence, created_at=entry.created_at,
                          namespace=namespace, score=score, speaker=entry.speaker, timestamp=entry.ts)

    def write_memory(self, text: str, namespace: str = "default", evidence: str | None = None,
                     fields: dict | None = None, speaker: str | None = None,
                     timestamp: float | str | Any | None = None) -> MemoryNode | None:
        """Store ``text`` (its embedding, anchors, lexical terms and one-line summary; ``evidence``
        or the text itself as the full evidence) in ``namespace``.

        ``speaker`` (who said it) and ``timestamp`` (when: Unix seconds, a datetime/date or an
        ISO-8601 string) are conversation fields: kept on the node and turned into anchors, so a
        query naming the person or the day prefers the node. Returns the new node, the node it
        was merged into (a near-duplicate: cosine above ``merge_threshold``, the same speaker and
        the same text anchors; a merged node keeps the date anchors of every timestamp),
        or None when the write gate rejects the text as uninformative. Every accepted write (new
        or merged) decays the namespace's older weights by gamma in O(1) (a per-namespace write
        counter). The text, evidence and speaker are stored and returned character for character.
        """
        text = self._check_text(text, "text")
        check_namespace(namespace)
        evidence = text if evidence is None else self._check_text(evidence, "evidence")
        if fields is not None and not isinstance(fields, dict):
            raise TypeError(f"fields must be a dict or None, got {type(fields).__name__}")
        speaker = check_speaker(speaker)
        ts = to_timestamp(timestamp)
        user_fields = json.loads(json.dumps(fields or {}, ensure_ascii=False))
        text_anchors = extract_anchors(text)
        if informativeness(text, len(text_anchors)) < self.config.write_threshold:
            with self._lock:
                self.counters["rejected"] += 1
            return None
        core = text_anchors | field_anchors(speaker, None)  # what a near-duplicate must share
        vec = self._embed([text])[0]
        c = self.config
        with self._lock, self._store.transaction() as tx:
            self._sync()
            space = self._space(namespace)
            ids, sims, _ = space.index.search(vec, c.max_links + 1)
            now = time.time()
            merge_into = None
            if ids.size and sims[0] >= c.merge_threshold:
                near = space.entries[int(ids[0])]
                if near.speaker == speaker and near.anchors - _date_anchors(near) == core:
                    merge_into = int(ids[0])
            writes = tx.bump_writes(namespace)
            if merge_into is not None:
                old = space.entries[merge_into]
                old_evidence = self._store.evidence([merge_into]).get(merge_into, "")
                merged_evidence = old_evidence if evidence in old_evidence else old_evidence + "\n" + evidence
                stamps = _timestamps(old) + ([ts] if ts is not None else [])
                merged_fields = {**old.fields, **user_fields, "merged": int(old.fields.get("merged", 0)) + 1}
                if stamps:
                    merged_fields["timestamps"] = stamps
                anchors = core.union(*(field_anchors(None, t) for t in stamps))
                tx.update_node(merge_into, summary=summarize(text, c.summary_chars), anchors=list(anchors),
                               fields=merged_fields, links=old.links, w=1.0, stamp=writes, proto=vec,
                               evidence=merged_evidence, speaker=speaker, ts=ts if ts is not None else old.ts)
                node_id = merge_into
            else:
                links = [int(i) for i, s in zip(ids, sims) if s >= c.link_threshold][:c.max_links]
                node_fields = {**user_fields, "definitions": definitions(text), "merged": 0}
                node_id = tx.insert_node(namespace, summarize(text, c.summary_chars),
                                         list(core | field_anchors(None, ts)), node_fields, links, 1.0,
                                         writes, vec, now, evidence, speaker=speaker, ts=ts)
        with self._lock:
            self._sync()
            self.counters["writes"] += 1
            self.counters["merges"] += merge_into is not None
            return self._node(namespace, node_id)

    def update(self, node_id: int, text: str | None = None, evidence: str | None = None,
               fields: dict | None = None) -> MemoryNode:
        """Replace a node's text (re-embedded, new anchors and summary), evidence and/or fields.
        Raises KeyError for an unknown id. Weights, links, speaker and timestamp are kept."""
        if not isinstance(node_id, (int, np.integer)) or isinstance(node_id, bool):
            raise TypeError(f"node_id must be an int, got {type(node_id).__name__}")
        if text is not None:
            self._check_text(text, "text")
        if evidence is not None:
            self._check_text(evidence, "evidence")
        if fields is not None and not isinstance(fields, dict):
            raise TypeError(f"fields must be a dict or None, got {type(fields).__name__}")
        vec = self._embed([text])[0] if text is not None else None
        with self._lock, self._store.transaction() as tx:
            self._sync()
            row = self._store.node(int(node_id))
            if row is None:
                raise KeyError(f"no memory node with id {node_id}")
            old_evidence = self._store.evidence([row.id]).get(row.id, "")
            anchors = (extract_anchors(text) | field_anchors(row.speaker, row.ts) if text is not None
                       else frozenset(row.anchors))
            new_fields = {**row.fields, **json.loads(json.dumps(fields or {}, ensure_ascii=False))}
            if text is not None:
                new_fields["definitions"] = definitions(text)
            tx.update_node(
                row.id, summary=summarize(text, self.config.summary_chars) if text else row.summary,
                anchors=list(anchors), fields=new_fields, links=row.links, w=row.w, stamp=row.stamp,
                proto=vec if vec is not None else row.proto,
                evidence=evidence if evidence is not None else (text if text is not None else old_evidence),
                speaker=row.speaker, ts=row.ts)
        with self._lock:
            self._sync()
            return self._node(row.namespace, row.id)

    def delete(self, node_id: int) -> bool:
        """Delete a node; returns False when no node has that id."""
        if not isinstance(node_id, (int, np.integer)) or isinstance(node_id, bool):
            raise TypeError(f"node_id must be an int, got {type(node_id).__name__}")
        with self._lock:
            with self._store.transaction() as tx:
                deleted = tx.delete_node(int(node_id))
            self._sync()
        return deleted

    def clear_namespace(self, namespace: str) -> int:
        """Delete every node of ``namespace``; returns how many were deleted."""
        check_namespace(namespace)
        with self._lock:
            self._sync()
            ids = list(self._spaces[namespace].entries) if namespace in self._spaces else []
            with self._store.transaction() as tx:
                for node_id in ids:
                    tx.delete_node(node_id)
            self._sync()
        return len(ids)

    def get(self, node_id: int, with_evidence: bool = False) -> MemoryNode | None:
        """The node with this id, or None."""
        with self._lock:
            self._sync()
            for namespace, space in self._spaces.items():
                if node_id in space.entries:
                    evidence = self._store.evidence([node_id]).get(node_id) if with_evidence else None
                    return self._node(namespace, node_id, evidence)
        return None

    def nodes(self, namespace: str = "default") -> list[MemoryNode]:
        """Every node of ``namespace``, oldest first."""
        check_namespace(namespace)
        with self._lock:
            self._sync()
            space = self._spaces.get(namespace)
            return [] if space is None else [self._node(namespace, i) for i in sorted(space.entries)]

    def namespaces(self) -> list[str]:
        """Names of the namespaces that hold at least one node."""
        with self._lock:
            self._sync()
            return sorted(name for name, space in self._spaces.items() if space.entries)

    # -- routing ----------------------------------------------------------------------------------
    def route_memory(self, query: str, mode: str = "fast", namespace: str = "default",
                     k: int | None = None) -> tuple[list[MemoryNode], list[str]]:
        """Recall up to ``k`` (default ``top_k``) nodes of ``namespace`` for ``query``.

        Three channels give candidates: the dense one (the routing direction
        d = normalize(q + lambda * v_inertia) picks the clusters to scan; the hot window and the
        scanned clusters are ranked by cosine to q), the lexical one (BM25 over the nodes' text
        and speaker) and the anchor one (every node sharing an anchor with the query: a number,
        name, date, the speaker; a name in the query also matches the nodes whose speaker it
        is). Each candidate is scored
        cos(q, proto) + eta * anchor_overlap + alpha * lexical + beta * w (a capitalised word of
        the text, e.g. a name, weighing ``word_anchor_weight`` times its rarity weight in the
        overlap; a speaker's name, a number or a date their full weight), lexical being its BM25
        score over the query's idf mass (in [0, 1]), and kept only above the similarity floor
        (lower for nodes with an anchor or lexical match; none for a node whose anchor overlap is
        at least 0.5, i.e. that carries most of the query's weighted anchors). Returns (nodes
        best first, refill texts): the refill texts are the nodes' full evidence in strict mode
        ("auto" picks strict for queries with strict keywords) and empty in fast mode.
        """
        query = self._check_text(query, "query")
        check_namespace(namespace)
        resolved = resolve_mode(mode, query)
        if k is None:
            k = self.config.top_k
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive int or None, got {k!r}")
        if self.dim is None or namespace not in self._spaces:  # else the sync under the lock suffices
            self._sync()
            if self.dim is None or namespace not in self._spaces:
                return [], []
        q = self._embed([query])[0]
        c = self.config
        with self._lock:
            self._sync()
            space = self._spaces[namespace]
            if not space.entries:
                return [], []
            direction = q
            if space.inertia is not None and c.inertia_strength > 0:
                direction = q + c.inertia_strength * space.inertia
                direction = (direction / max(float(np.linalg.norm(direction)), 1e-12)).astype(np.float32)
            ids, sims, scanned = space.index.search(q, c.local_cluster_k, direction=direction)
            cand = dict(zip(ids.tolist(), sims.tolist()))
            lexical: dict[int, float] = {}
            if c.lexical_weight > 0:
                lex_ids, lex_scores, idf_mass = space.lexical.search(tokenize(query), c.lexical_k,
                                                                     b=c.lexical_length_norm)
                if idf_mass > 0:
                    lexical = dict(zip(lex_ids.tolist(), np.minimum(lex_scores / idf_mass, 1.0).tolist()))
            written = extract_anchors(query)
            q_anchors = with_speaker_forms(written)
            rare = [space.postings[a] for a in q_anchors if 0 < len(space.postings.get(a, ())) <= c.anchor_postings_cap]
            extra = sorted(set().union(*rare, lexical.keys()) - cand.keys())
            if extra:
                cand.update(zip(extra, (space.index.vectors(extra) @ q).tolist()))
            q_lower = query.lower()
            n_nodes = len(space.entries)
            q_count = query_anchor_count(written)
            weights: dict[str, float] = {}

            def weight(anchor: str) -> float:
                value = weights.get(anchor)
                if value is None:
                    value = anchor_weight(len(space.postings.get(anchor, ())), n_nodes)
                    if is_word_anchor(anchor):
                        value *= c.word_anchor_weight
                    weights[anchor] = value
                return value
            # the fusion rule (see the docstring), with the config's numbers read once per route
            entries = space.entries
            threshold, eta, alpha, beta = c.anchor_threshold, c.anchor_boost, c.lexical_weight, c.weight_influence
            lexical_match, floor, anchor_floor = c.lexical_match, c.min_similarity, c.anchor_min_similarity
            no_anchors, lowest_floor = not q_anchors, min(floor, anchor_floor)
            scored = []
            for node_id, sim in cand.items():
                entry = entries[node_id]
                if entry.defined or not (no_anchors or q_anchors.isdisjoint(entry.anchors)):
                    overlap = anchor_overlap(q_anchors, q_lower, entry.anchors, weight, q_count)
                elif sim < lowest_floor:
                    continue  # no anchor in common and below both floors: dropped whatever its lexical score
                else:
                    overlap = 0.0
                anchored = overlap > 0 and overlap >= threshold
                lex = lexical.get(node_id, 0.0)
                if overlap < 0.5 and sim < (anchor_floor if anchored or lex >= lexical_match else floor):
                    continue  # a node carrying most of the query's anchor weight is kept regardless
                scored.append((sim + (eta * overlap if anchored else 0.0) + alpha * lex
                               + beta * self._weight(space, entry), node_id))
            scored.sort(reverse=True)
            chosen = scored[:k]
            if chosen:
                mean = space.index.vectors([i for _, i in chosen]).mean(axis=0)
                prev = space.inertia if space.inertia is not None else np.zeros_like(mean)
                space.inertia = (c.inertia_momentum * prev + (1 - c.inertia_momentum) * mean).astype(np.float32)
            elif space.inertia is not None:
                space.inertia = (c.inertia_momentum * space.inertia).astype(np.float32)
            self.counters["routes"] += 1
            self.counters["scanned"] += scanned + len(extra)
            evidence = self._store.evidence([i for _, i in chosen]) if resolved == "strict" else {}
            nodes = [self._node(namespace, i, evidence.get(i), score) for score, i in chosen]
        refill = [n.evidence_text or "" for n in nodes] if resolved == "strict" else []
        return nodes, refill

    def inertia_norm(self, namespace: str = "default") -> float:
        """|v_inertia| of ``namespace`` (0 before its first successful route)."""
        space = self._spaces.get(check_namespace(namespace))
        return 0.0 if space is None or space.inertia is None else float(np.linalg.norm(space.inertia))

    def reset_inertia(self, namespace: str = "default") -> None:
        """Forget the routing momentum of ``namespace`` (e.g. at a new conversation)."""
        space = self._spaces.get(check_namespace(namespace))
        if space is not None:
            space.inertia = None

    def answer(self, query: str, auto_mode: bool = True, mode: str | None = None,
               namespace: str = "default", k: int | None = None,
               generator: Callable[[str], str] | None = None) -> dict[str, Any]:
        """Recall memories for ``query`` and build the context an LLM would be given.

        ``mode`` overrides ``auto_mode`` (auto: strict on strict keywords, else fast). With a
        ``generator`` (callable prompt -> str, e.g. an LLM client) its reply is returned under
        "answer"; without one "answer" is None. Keys: query, mode, num_nodes_recalled, context,
        prompt, nodes (dicts), refill_texts, answer.
        """
        if mode is None:
            mode = "auto" if auto_mode else "fast"
        if generator is not None and not callable(generator):
            raise TypeError(f"generator must be a callable str -> str, got {type(generator).__name__}")
        resolved = resolve_mode(mode, query) if isinstance(query, str) else mode
        nodes, refill = self.route_memory(query, mode=resolved, namespace=namespace, k=k)
        lines = [f"[{i + 1}] {n.summary}" for i, n in enumerate(nodes)]
        if refill:
            lines.append("Evidence:")
            lines.extend(f"[{i + 1}] {text}" for i, text in enumerate(refill))
        context = "\n".join(lines)
        prompt = (f"Relevant memories:\n{context}\n\nQuestion: {query}" if nodes else
                  f"Question: {query}")
        return {"query": query, "mode": resolved, "num_nodes_recalled": len(nodes),
                "context": context, "prompt": prompt, "nodes": [n.to_dict() for n in nodes],
                "refill_texts": refill, "answer": generator(prompt) if generator else None}

    # -- persistence and stats ----------------------------------------------------------------
    def save(self, path: str) -> None:
        """Write a consistent copy of the whole memory (all namespaces) to the SQLite file ``path``
        (from either store: a PostgreSQL memory is copied into a new SQLite file)."""
        if not isinstance(path, str) and not hasattr(path, "__fspath__"):
            raise TypeError(f"path must be a file path, got {type(path).__name__}")
        with self._lock:
            self._store.backup(str(path))

    @classmethod
    def load(cls, path: str, config: AIMConfig | None = None,
             embedder: Embedder | None = None) -> "AIMMemory":
        """Open the memory saved at ``path`` (its stored config unless ``config`` is given)."""
        import os
        if not is_postgres_url(path) and not os.path.exists(str(path)):
            raise FileNotFoundError(f"no AIM-Memory database at {path}")
        return cls(config=config, path=str(path), embedder=embedder)

    def export_jsonl(self, out: IO[str], namespace: str | None = None) -> int:
        """Write one JSON object per node (of ``namespace`` or all) to ``out``; returns the count.
        Embeddings are base64 float32 so an import with the same embedder skips re-embedding."""
        with self._lock:
            self._sync()
            names = [check_namespace(namespace)] if namespace is not None else sorted(self._spaces)
            count = 0
            for name in names:
                space = self._spaces.get(name)
                if space is None:
                    continue
                ids = sorted(space.entries)
                evidence = self._store.evidence(ids)
                for node_id in ids:
                    node = self._node(name, node_id)
                    record = {"namespace": name, "summary": node.summary,
                              "evidence": evidence.get(node_id, node.summary),
                              "fields": space.entries[node_id].fields, "w": node.w,
                              "created_at": node.created_at, "speaker": node.speaker,
                              "timestamp": node.timestamp, "embedder": self.embedder_name,
                              "proto": base64.b64encode(node.proto.tobytes()).decode("ascii")}
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    count += 1
        return count

    def import_jsonl(self, lines: IO[str], namespace: str | None = None) -> int:
        """Add the nodes of an :meth:`export_jsonl` file (into ``namespace`` if given, else each
        record's own); see :meth:`import_records`. Returns the count."""
        records = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {number}: not an AIM-Memory export record ({exc})") from exc
            if not isinstance(rec, dict) or "evidence" not in rec:
                raise ValueError(f"line {number}: not an AIM-Memory export record (no 'evidence')")
            records.append(rec)
        return self.import_records(records, namespace=namespace)

    def import_records(self, records: list[dict], namespace: str | None = None) -> int:
        """Add nodes in bulk, in one transaction: each record a dict with "evidence" (the text)
        and optionally "namespace", "summary", "fields", "w", "created_at", "speaker",
        "timestamp", "embedder" and "proto" (float32 [dim] as an array or base64 bytes). No
        write gate, no merge. An embedding is reused when the record's embedder name is this
        memory's, else recomputed. Returns the count."""
        if not isinstance(records, (list, tuple)):
            raise TypeError(f"records must be a list of dicts, got {type(records).__name__}")
        for number, rec in enumerate(records, 1):
            if not isinstance(rec, dict) or "evidence" not in rec:
                raise ValueError(f"record {number}: expected a dict with 'evidence'")
            self._check_text(rec["evidence"], f"record {number} evidence")
        names = [check_namespace(namespace or rec.get("namespace", "default")) for rec in records]
        todo = [i for i, rec in enumerate(records) if rec.get("embedder") != self.embedder_name
                or rec.get("proto") is None]
        fresh = dict(zip(todo, self._embed([records[i]["evidence"] for i in todo]))) if todo else {}
        if self.dim is None and records:
            self._embed([records[0]["evidence"]])
        now = time.time()
        with self._lock, self._store.transaction() as tx:
            # each record is one accepted write of its namespace: its stamp is the counter after it
            stamps = {name: tx.bump_writes(name, count) - count for name, count in Counter(names).items()}
            batch: list[dict[str, Any]] = []
            for i, (name, rec) in enumerate(zip(names, records)):
                proto = fresh.get(i)
                if proto is None:
                    raw = rec["proto"]
                    proto = (np.frombuffer(base64.b64decode(raw), dtype=np.float32) if isinstance(raw, (str, bytes))
                             else np.asarray(raw, dtype=np.float32).reshape(-1))
                    if proto.size != self.dim or not np.isfinite(proto).all():
                        raise ValueError(f"record {i + 1}: embedding of dimension {proto.size}, "
                                         f"expected {self.dim}")
                text = rec["evidence"]
                speaker, ts = check_speaker(rec.get("speaker")), to_timestamp(rec.get("timestamp"))
                stamps[name] += 1
                summary = rec.get("summary") or summarize(text, self.config.summary_chars)
                batch.append(dict(namespace=name, summary=summary,
                                  anchors=list(extract_anchors(text) | field_anchors(speaker, ts)),
                                  fields=dict(rec.get("fields") or {}), links=[], w=float(rec.get("w", 1.0)),
                                  stamp=stamps[name], proto=proto, created_at=float(rec.get("created_at", now)),
                                  evidence=text, speaker=speaker, ts=ts))
                if len(batch) == _INSERT_BATCH:
                    tx.insert_nodes(batch)
                    batch = []
            tx.insert_nodes(batch)
        self._sync()
        return len(records)

    def stats(self, namespace: str | None = None) -> dict[str, Any]:
        """Counts and index shape: per-namespace nodes, clusters, writes and mean weight; this
        process's writes, merges, rejected writes, routes and mean vectors scanned per route."""
        with self._lock:
            self._sync()
            names = [check_namespace(namespace)] if namespace is not None else sorted(self._spaces)
            per = {}
            for name in names:
                space = self._spaces.get(name)
                if space is None or not space.entries:
                    per[name] = {"nodes": 0, "clusters": 0, "writes": 0, "mean_weight": 0.0,
                                 "anchors": 0, "inertia_norm": 0.0}
                    continue
                weights = [self._weight(space, e) for e in space.entries.values()]
                per[name] = {"nodes": len(space.entries), "clusters": space.index.n_clusters,
                             "writes": space.writes, "mean_weight": float(np.mean(weights, dtype=np.float64)),
                             "anchors": len(space.postings), "inertia_norm": self.inertia_norm(name)}
            routes = self.counters["routes"]
            return {"path": _redacted(self.path) if self.path else ":memory:", "store": type(self._store).__name__,
                    "embedder": self.embedder_name, "dim": self.dim, "lexical_stemmer": stemmer_name(),
                    "total_nodes": sum(p["nodes"] for p in per.values()), "namespaces": per,
                    **{k: v for k, v in self.counters.items() if k != "scanned"},
                    "mean_scanned_per_route": self.counters["scanned"] / routes if routes else 0.0}

    def close(self) -> None:
        """Close the database connections (committed writes are already stored)."""
        with self._lock:
            self._store.close()

    def __enter__(self) -> "AIMMemory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        with self._lock:
            self._sync()
            return sum(len(s.entries) for s in self._spaces.values())


def create_aim_memory(config: AIMConfig | None = None, path: str | None = None,
                      embedder: Embedder | None = None, read_only: bool = False) -> AIMMemory:
    """A new or reopened AIM-Memory: ``path`` is the SQLite file (None: in memory) or a
    ``postgresql://user@host/db`` URL of a shared PostgreSQL database; ``embedder`` any callable
    list[str] -> float array [n, dim] (None: all-MiniLM-L6-v2, offline, on ONNX Runtime with int8
    weights when onnxruntime is installed). ``read_only``: open an existing SQLite file for
    reads only (routing, answers, stats, export work; writes raise StoreError), e.g. a file on a
    read-only mount. A path that cannot be used raises StoreError naming it and why."""
    return AIMMemory(config=config, path=path, embedder=embedder, read_only=read_only)
