"""The lexical channel: tokenizer, and the incremental BM25 index against the bm25s package."""
from __future__ import annotations

import numpy as np
import pytest

from apt_ext.memory.lexical import BM25Index, stemmer_name, tokenize


def test_tokenize_keeps_numbers_whole_and_bigrams_cjk():
    tokens = tokenize("Maria ran the half-marathon in 1:52:40 and paid $1,150.50 for shoes")
    assert "1:52:40" in tokens and "1,150.50" in tokens and "the" not in tokens and "and" not in tokens
    assert tokenize("模型训练") == ["模型", "型训", "训练"] and tokenize("猫") == ["猫"]
    if stemmer_name() is not None:
        assert tokenize("adopted adopting adopts") == ["adopt"] * 3


def _bm25s_scores(docs: list[list[str]], query: list[str], k1: float, b: float) -> np.ndarray:
    bm25s = pytest.importorskip("bm25s")
    retriever = bm25s.BM25(method="lucene", k1=k1, b=b)
    vocab = {t: i for i, t in enumerate(sorted({t for d in docs for t in d} | set(query)))}
    retriever.index(bm25s.tokenization.Tokenized(ids=[[vocab[t] for t in d] for d in docs], vocab=vocab),
                    show_progress=False)
    return np.asarray(retriever.get_scores([vocab[t] for t in dict.fromkeys(query)]), dtype=np.float64)


def _random_docs(rng: np.random.Generator, n: int) -> list[list[str]]:
    vocab = [f"w{i}" for i in range(60)]
    weights = 1.0 / np.arange(1, 61)
    weights /= weights.sum()  # Zipf-like: common and rare terms
    return [list(rng.choice(vocab, size=int(rng.integers(1, 30)), p=weights)) for _ in range(n)]


@pytest.mark.parametrize("k1,b", [(1.2, 0.75), (1.5, 0.3)])
def test_bm25_matches_bm25s_through_adds_and_removes(k1, b):
    rng = np.random.default_rng()
    docs = _random_docs(rng, 400)
    index = BM25Index(k1=k1, b=b)
    for i, d in enumerate(docs):
        index.add(1000 + i, d)
    removed = set(rng.choice(len(docs), 150, replace=False).tolist())  # enough to compact
    for i in removed:
        index.remove(1000 + i)
    alive = [i for i in range(len(docs)) if i not in removed]
    for _ in range(20):
        query = list(rng.choice([f"w{i}" for i in range(70)], size=int(rng.integers(1, 6))))
        want = _bm25s_scores([docs[i] for i in alive], query, k1, b)
        ids, scores, mass = index.search(query, len(alive))
        got = np.zeros(len(alive))
        pos = {1000 + i: p for p, i in enumerate(alive)}
        for doc_id, score in zip(ids.tolist(), scores.tolist()):
            got[pos[doc_id]] = score
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-5)
        assert np.all(np.diff(scores) <= 1e-6) and mass > 0


def test_bm25_search_with_its_own_length_normalisation():
    """search(..., b=) scores as an index built with that b would (against bm25s), without
    disturbing the index's own b or its cached scores; a b outside [0, 1] is refused."""
    rng = np.random.default_rng()
    docs = _random_docs(rng, 200)
    index = BM25Index(k1=1.2, b=0.75)
    for i, d in enumerate(docs):
        index.add(i, d)
    query = ["w1", "w7", "w40"]
    for b in (0.0, 0.3, 0.75, 0.0):
        ids, scores, _ = index.search(query, len(docs), b=b)
        got = np.zeros(len(docs))
        got[ids] = scores
        np.testing.assert_allclose(got, _bm25s_scores(docs, query, 1.2, b), rtol=2e-5, atol=1e-5)
    ids, scores, _ = index.search(query, len(docs))
    got = np.zeros(len(docs))
    got[ids] = scores
    np.testing.assert_allclose(got, _bm25s_scores(docs, query, 1.2, 0.75), rtol=2e-5, atol=1e-5)
    with pytest.raises(ValueError, match="b must be in"):
        index.search(query, 5, b=1.5)


def test_bm25_replace_and_budget():
    index = BM25Index(max_postings=3)
    for i in range(5):
        index.add(i, ["common", f"rare{i}"])
    index.add(2, ["rare2", "changed"])
    ids, scores, _ = index.search(["changed"], 5)
    assert ids.tolist() == [2]
    # "common" has 4 postings > budget 3: skipped, so only the rare term scores
    ids, _, _ = index.search(["common", "rare4"], 5)
    assert ids.tolist() == [4]
    assert index.search(["absent"], 5)[0].size == 0 and len(index) == 5


def test_bm25_cached_scores_follow_adds_removes_and_replaces():
    """The per-term df and score caches must not outlive a change: the same queries, asked again
    after every batch of adds, removes and replaces, still match bm25s on the live documents."""
    rng = np.random.default_rng()
    index = BM25Index(max_postings=10**9)
    live: dict[int, list[str]] = {}
    queries = [list(rng.choice([f"w{i}" for i in range(70)], size=int(rng.integers(1, 6)))) for _ in range(8)]
    for step in range(8):  # small steps: the dead documents stay below the compaction point
        for _ in range(200 if step == 0 else 15):  # adds, some of them replacing a live document
            doc_id = int(rng.integers(0, 300))
            live[doc_id] = _random_docs(rng, 1)[0]
            index.add(doc_id, live[doc_id])
        for doc_id in rng.choice(sorted(live), size=5, replace=False).tolist():
            del live[doc_id]
            index.remove(doc_id)
        order = sorted(live)
        pos = {doc_id: p for p, doc_id in enumerate(order)}
        for query in queries:
            want = _bm25s_scores([live[i] for i in order], query, 1.2, 0.75)
            for _ in range(2):  # the second search is served from the caches
                ids, scores, _ = index.search(query, len(order))
                got = np.zeros(len(order))
                got[[pos[i] for i in ids.tolist()]] = scores
                np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-5, err_msg=f"step {step} {query}")
