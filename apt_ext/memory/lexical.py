"""The lexical channel of AIM-Memory: a tokenizer and an incremental BM25 index in numpy.

Tokens: lower-cased words and numbers (a number keeps its inner "." "," ":" so "3.5" and "1:52"
stay whole), English stopwords dropped, words stemmed with the Snowball English stemmer when
PyStemmer is installed (it is part of ``apt_ext[embeddings]``), and CJK text as overlapping
character bigrams (a lone CJK character as itself).

Scoring is Lucene's BM25 (the ``bm25s`` package's default "lucene" variant, which the tests
compare against): idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5)) and
score(d) = sum over the distinct query terms t of idf(t) * tf / (tf + k1 * (1 - b + b * |d| / avgdl))
(Lucene's form without the constant factor k1 + 1).

Unlike bm25s, which indexes a fixed corpus, this index takes adds and removes one document at a
time (memories arrive one by one): each term keeps a growing array of (document slot, tf); a
removed document is marked dead and dropped from the postings when a quarter of them are dead.
"""
from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

import numpy as np

from apt_ext.memory.anchors import STOPWORDS

_TOKEN = re.compile(r"\d+(?:[.,:]\d+)*|[^\W\d_\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]+"
                    r"|[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


@lru_cache(maxsize=1)
def _stemmer():
    try:
        import Stemmer
    except ImportError:
        return None
    return Stemmer.Stemmer("english")


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    stemmer = _stemmer()
    return word if stemmer is None else stemmer.stemWord(word)


def stemmer_name() -> str | None:
    """"snowball-english" when PyStemmer is installed, else None (tokens are not stemmed)."""
    return None if _stemmer() is None else "snowball-english"


def tokenize(text: str) -> list[str]:
    """Lexical tokens of ``text`` (see the module docstring)."""
    out = []
    for tok in _TOKEN.findall(text.lower()):
        if _CJK.match(tok):
            out.extend([tok] if len(tok) == 1 else [tok[i:i + 2] for i in range(len(tok) - 1)])
        elif tok[0].isdigit():
            out.append(tok)
        elif tok not in STOPWORDS and len(tok) > 1:
            out.append(_stem(tok))
    return out


class _Postings:
    """Slots (int64) and term frequencies (float32) of one term, in growable arrays."""

    __slots__ = ("slots", "tfs", "n")

    def __init__(self) -> None:
        self.slots = np.empty(4, dtype=np.int64)
        self.tfs = np.empty(4, dtype=np.float32)
        self.n = 0

    def append(self, slot: int, tf: float) -> None:
        if self.n == self.slots.size:
            self.slots = np.concatenate([self.slots, np.empty(self.n, np.int64)])
            self.tfs = np.concatenate([self.tfs, np.empty(self.n, np.float32)])
        self.slots[self.n] = slot
        self.tfs[self.n] = tf
        self.n += 1


class BM25Index:
    """Incremental BM25 over documents with int ids (see the module docstring).

    ``add(id, tokens)`` inserts or replaces, ``remove(id)`` deletes, ``search(tokens, k, b=None)``
    (``b``: this search's length normalisation, the index's own when None) returns
    (ids int64 [<=k], scores float32 [<=k], idf mass) best first, documents with a positive score
    only; the idf mass (sum of the distinct query terms' idf, a term no document has counting
    with df = 0) bounds every score, so score / mass in [0, 1) says how much of the query a
    document matches (a document with every query term once at average length: 1 / (1 + k1)).
    ``max_postings`` bounds the work of one search: query terms are taken rarest first and a term
    whose postings would take the total past it is skipped (its idf is the lowest anyway).
    """

    score_cache_terms = 512  # terms whose scores are kept (each at most max_postings floats)

    def __init__(self, k1: float = 1.2, b: float = 0.75, max_postings: int = 20_000) -> None:
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"BM25 needs k1 >= 0 and b in [0, 1], got k1={k1}, b={b}")
        self.k1, self.b, self.max_postings = k1, b, max_postings
        self._postings: dict[str, _Postings] = {}
        self._slot_of: dict[int, int] = {}
        self._ids = np.empty(16, dtype=np.int64)
        self._len = np.zeros(16, dtype=np.float32)
        self._alive = np.zeros(16, dtype=bool)
        self._n_slots = 0
        self._total_len = 0.0
        self._dead = 0
        self._removals = 0  # removes ever made: a cached df is valid while it and the postings length hold
        self._df_cache: dict[str, tuple[int, int, int]] = {}  # term -> (postings length, removals, df)
        self._score_cache: dict[str, tuple[tuple[int, int, float, float], np.ndarray]] = {}  # see _term_scores
        self._acc = np.zeros(16, dtype=np.float32)

    def __len__(self) -> int:
        return len(self._slot_of)

    def df(self, term: str) -> int:
        """Live documents containing ``term``."""
        p = self._postings.get(term)
        return 0 if p is None else self._df(term, p)

    def _df(self, term: str, p: _Postings) -> int:
        """Live documents in ``p`` (the postings of ``term``): its length while no document is dead
        (every dead slot is in some postings until the next compaction), else counted once and
        cached until the postings grow or a document is removed."""
        if self._dead == 0:
            return p.n
        hit = self._df_cache.get(term)
        if hit is not None and hit[0] == p.n and hit[1] == self._removals:
            return hit[2]
        df = int(np.count_nonzero(self._alive[p.slots[:p.n]]))
        self._df_cache[term] = (p.n, self._removals, df)
        return df

    def add(self, doc_id: int, tokens: list[str]) -> None:
        doc_id = int(doc_id)
        if doc_id in self._slot_of:
            self.remove(doc_id)
        slot = self._n_slots
        if slot == self._ids.size:
            grow = self._ids.size
            self._ids = np.concatenate([self._ids, np.empty(grow, np.int64)])
            self._len = np.concatenate([self._len, np.zeros(grow, np.float32)])
            self._alive = np.concatenate([self._alive, np.zeros(grow, bool)])
            self._acc = np.zeros(self._ids.size, np.float32)
        counts = Counter(tokens)
        self._ids[slot], self._len[slot], self._alive[slot] = doc_id, len(tokens), True
        for term, tf in counts.items():
            postings = self._postings.get(term)
            if postings is None:
                postings = self._postings[term] = _Postings()
            postings.append(slot, tf)
        self._slot_of[doc_id] = slot
        self._n_slots += 1
        self._total_len += len(tokens)

    def remove(self, doc_id: int) -> None:
        slot = self._slot_of.pop(int(doc_id), None)
        if slot is None:
            return
        self._alive[slot] = False
        self._total_len -= float(self._len[slot])
        self._dead += 1
        self._removals += 1
        if self._dead * 4 > self._n_slots and self._dead > 64:
            self._compact()

    def _compact(self) -> None:
        """Drop dead documents: renumber the live slots in order and filter every postings list."""
        alive = self._alive[:self._n_slots]
        remap = np.cumsum(alive) - 1
        for term in list(self._postings):
            p = self._postings[term]
            keep = alive[p.slots[:p.n]]
            if not keep.any():
                del self._postings[term]
                continue
            p.slots, p.tfs = remap[p.slots[:p.n][keep]], p.tfs[:p.n][keep]
            p.n = p.slots.size
        live = np.flatnonzero(alive)
        self._ids[:live.size], self._len[:live.size] = self._ids[live], self._len[live]
        self._alive[:] = False
        self._alive[:live.size] = True
        self._n_slots, self._dead = int(live.size), 0
        self._df_cache.clear()
        self._score_cache.clear()
        self._slot_of = {int(i): s for s, i in enumerate(self._ids[:live.size].tolist())}

    def _term_scores(self, term: str, p: _Postings, idf: float, avgdl: float, b: float) -> np.ndarray:
        """float32 [p.n]: the BM25 term of ``term`` for each slot of ``p`` (0 for dead ones), kept
        until the postings, the removals, avgdl or b change (a store that is only read scores a
        frequent term once, not once per query)."""
        key = (p.n, self._removals, avgdl, idf, b)
        hit = self._score_cache.get(term)
        if hit is not None and hit[0] == key:
            return hit[1]
        slots, tf = p.slots[:p.n], p.tfs[:p.n]
        norm = self.k1 * (1.0 - b + b * self._len[slots] / avgdl)
        score = idf * tf / (tf + norm)
        if self._dead:  # dead documents score nothing
            score = np.where(self._alive[slots], score, 0.0).astype(np.float32)
        if len(self._score_cache) >= self.score_cache_terms:
            self._score_cache.pop(next(iter(self._score_cache)))
        self._score_cache[term] = (key, score)
        return score

    def search(self, tokens: list[str], k: int, b: float | None = None) -> tuple[np.ndarray, np.ndarray, float]:
        if b is None:
            b = self.b
        elif not 0 <= b <= 1:
            raise ValueError(f"b must be in [0, 1], got {b!r}")
        n = len(self._slot_of)
        none = np.zeros(0, np.int64), np.zeros(0, np.float32), 0.0
        if n == 0 or not tokens or k < 1:
            return none
        avgdl = max(self._total_len / n, 1e-9)
        distinct = set(tokens)
        terms = sorted((t for t in distinct if t in self._postings), key=lambda t: self._postings[t].n)
        mass = float(np.log1p((n + 0.5) / 0.5)) * (len(distinct) - len(terms))
        touched = []
        budget = self.max_postings
        for term in terms:
            p = self._postings[term]
            df = self._df(term, p)
            idf = float(np.log1p((n - df + 0.5) / (df + 0.5)))
            mass += idf
            if p.n > budget:
                continue
            budget -= p.n
            if df == 0:
                continue
            slots = p.slots[:p.n]
            # each slot once per term: the sums of +=, in less time
            np.add.at(self._acc, slots, self._term_scores(term, p, idf, avgdl, b))
            touched.append(slots)
        if not touched:
            return none[0], none[1], mass
        # a slot appears once per matching term: the top k * len(touched) entries of the
        # concatenation hold at least k distinct slots, so only those few are deduplicated
        cand = np.concatenate(touched) if len(touched) > 1 else touched[0]
        scores = self._acc[cand]
        if 8 * cand.size > self._n_slots:  # clearing every slot is cheaper than a scatter to these
            self._acc[:self._n_slots] = 0.0
        else:
            self._acc[cand] = 0.0
        take = k * len(touched)
        if cand.size > take:
            top = np.argpartition(-scores, take - 1)[:take]
            cand, scores = cand[top], scores[top]
        if len(touched) > 1:
            cand, first = np.unique(cand, return_index=True)
            scores = scores[first]
        keep = scores > 0
        cand, scores = cand[keep], scores[keep]
        order = np.argsort(-scores, kind="stable")[:k]
        return self._ids[cand[order]], scores[order], mass
