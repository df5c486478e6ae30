"""AIMConfig: every tunable of AIM-Memory in one validated dataclass."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass


@dataclass
class AIMConfig:
    """Configuration of an :class:`~apt_ext.memory.AIMMemory`.

    Seed fields (names and defaults of the original design):
      hot_window_size: the most recent nodes of a namespace that every route scans exactly, on top
        of the probed clusters (fresh writes are always reachable).
      local_cluster_k: candidates kept from the vector scan (top by cosine to the query) before
        they are re-scored with anchors and weights.
      inertia_strength: lambda in d = normalize(q + lambda * v_inertia), the routing direction.
      inertia_momentum: mu in v <- mu * v + (1 - mu) * mean(selected prototypes).
      weight_decay_gamma: gamma; every accepted write multiplies older weights by gamma.
      write_threshold: minimum informativeness score in [0, 1] for a write to be stored
        (0.34 per content word or per 2 CJK characters, 0.34 per anchor; the default 0.6 stores
        any text with two content words, and rejects fillers such as "ok" or "thanks").
      anchor_threshold: minimum fraction of the query's anchors a node must carry for its
        anchor boost to apply.
      anchor_boost: eta; score = cos + eta * anchor_overlap + alpha * lexical + beta * w, where
        anchor_overlap is the summed weight of the query's anchors the node carries over their
        number (an anchor weighs ln(1 + n / df) / ln(1 + n) over the namespace's n nodes: rare
        anchors count most).

    Added fields:
      top_k: nodes returned by a route when ``k`` is not given.
      min_similarity: absolute cosine (query, node) below which a node is never returned
        (MiniLM gives unrelated pairs about 0.0-0.2).
      anchor_min_similarity: the lower cosine floor for nodes that share an anchor with the query
        or match it lexically (lexical score >= ``lexical_match``); a node with anchor overlap
        >= 0.5 has no floor (nor, with the default 0.0, any node that matches).
      lexical_weight: alpha, the weight of the lexical (BM25) term of the score; 0 turns the
        lexical channel off. alpha 1.0, eta 2.0, min_similarity 0.15 and anchor_min_similarity 0.0
        were fitted on two dev sets together, REALTALK chats 1-5 and the synthetic dev dialogues
        (seeds 0-4) of benchmarks/aim_memory_recall.py: the best mean of text-only and with-fields
        recall@5 over both sets among the grid points that keep a similarity floor (an unrelated
        query returns nothing); grid in benchmarks/results/aim_memory_fusion_fit.json.
      word_anchor_weight: factor on the overlap weight of anchors that are capitalised words of
        the text (names, places, acronyms, a sentence's first word); numbers, dates, versions,
        definitions and speaker fields keep their full weight. 0.0, fitted on the same two dev
        sets (grid in aim_memory_fusion_fit.json): in conversations a turn that names a person is
        mostly addressed to them ("Hi Kate!"), and the speaker field finds the turns they wrote.
        Such words still add candidates and are matched lexically (BM25).
      lexical_length_norm: BM25's b, how much a node's length discounts its term counts (0: not
        at all; the textbook 0.75). 0.0, fitted on the same two dev sets (grid in
        aim_memory_fusion_fit.json): a turn of a chat is a line or two, and a longer one is no
        less about what it names.
      lexical_k: candidates the lexical channel adds (top by BM25).
      lexical_match: lexical score (BM25 over the query's idf mass, in [0, 1]) from which a node
        counts as matching the query and gets the lower similarity floor.
      weight_influence: beta, the weight term of the score.
      merge_threshold: cosine above which a write with the same anchors merges into its nearest
        node instead of creating a new one.
      anchor_postings_cap: a query anchor carried by at most this many nodes adds all of them as
        candidates (exact anchor recall); more common anchors only re-score the scanned candidates.
      link_threshold: cosine above which an older node is recorded in a new node's links.
      max_links: links kept per node.
      n_probe: clusters scanned per route (in addition to the hot window).
      cluster_size: target members per cluster; the index uses one cluster (exact scan) until a
        namespace holds ``2 * cluster_size`` nodes, rebuilds when it has doubled since the last
        build and splits any cluster that grows past ``4 * cluster_size``.
      kmeans_iters: Lloyd iterations of each (re)build.
      max_text_chars: longest accepted text (characters).
      summary_chars: longest one-line summary kept in the index.
      embed_batch_size: sentences per embedder call.
      busy_timeout_ms: SQLite busy timeout per statement.
      synchronous: SQLite ``PRAGMA synchronous`` ("NORMAL": committed writes survive a killed
        process; "FULL": they also survive power loss).
    """

    hot_window_size: int = 256
    local_cluster_k: int = 32
    inertia_strength: float = 0.5
    inertia_momentum: float = 0.85
    weight_decay_gamma: float = 0.8
    write_threshold: float = 0.6
    anchor_threshold: float = 0.1
    anchor_boost: float = 2.0
    top_k: int = 5
    min_similarity: float = 0.15
    anchor_min_similarity: float = 0.0
    lexical_weight: float = 1.0
    word_anchor_weight: float = 0.0
    lexical_length_norm: float = 0.0
    lexical_k: int = 32
    lexical_match: float = 0.3
    weight_influence: float = 0.05
    merge_threshold: float = 0.93
    anchor_postings_cap: int = 64
    link_threshold: float = 0.5
    max_links: int = 4
    n_probe: int = 8
    cluster_size: int = 128
    kmeans_iters: int = 8
    max_text_chars: int = 100_000
    summary_chars: int = 160
    embed_batch_size: int = 64
    busy_timeout_ms: int = 30_000
    synchronous: str = "NORMAL"

    def __post_init__(self) -> None:
        ints = {"hot_window_size": 0, "local_cluster_k": 1, "top_k": 1, "max_links": 0,
                "n_probe": 1, "cluster_size": 8, "lexical_k": 1, "anchor_postings_cap": 0, "kmeans_iters": 1,
                "max_text_chars": 1,
                "summary_chars": 16, "embed_batch_size": 1, "busy_timeout_ms": 0}
        for name, low in ints.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"AIMConfig.{name} must be an int >= {low}, got {value!r}")
        unit = ("inertia_strength", "inertia_momentum", "weight_decay_gamma", "write_threshold",
                "anchor_threshold", "min_similarity", "anchor_min_similarity", "merge_threshold",
                "link_threshold", "lexical_match", "word_anchor_weight", "lexical_length_norm")
        for name in unit:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
                raise ValueError(f"AIMConfig.{name} must be a number in [0, 1], got {value!r}")
        for name in ("anchor_boost", "weight_influence", "lexical_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"AIMConfig.{name} must be a number >= 0, got {value!r}")
        if self.weight_decay_gamma == 0.0:
            raise ValueError("AIMConfig.weight_decay_gamma must be in (0, 1], got 0")
        if self.synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"AIMConfig.synchronous must be 'NORMAL' or 'FULL', got {self.synchronous!r}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "AIMConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})
