"""AIM-Memory routing benchmark: the numpy cluster index (the core of ``route_memory``) against
numpy brute force, FAISS IndexIVFFlat and hnswlib, one query at a time on one thread.

Sizes: 10k real all-MiniLM-L6-v2 embeddings of generated sentences (cached in
benchmarks/results/aim_memory_minilm_10k.npy), 100k and 1M clustered synthetic 384-d unit vectors.
For each method the cheapest setting reaching recall@10 >= 0.95 against the exact top-10 (by the
query vector) is reported with p50/p95 latency and vectors scanned per query. Also: the inertia
ablation (lambda 0 vs 0.5) on query streams that stay on one topic and streams that switch topic;
query embedding latency and cosine (sentence-transformers fp32 vs ONNX Runtime fp32 / int8); and
end-to-end ``route_memory`` latency (ONNX int8 query embedding included) at 10k nodes (real
MiniLM vectors), 100k and 1M nodes (generated sentences with synthetic clustered vectors).

  python benchmarks/aim_memory.py            # full run (the 1M route_memory load takes minutes)
  python benchmarks/aim_memory.py --quick    # 10k + 100k, fewer queries
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread per query for every method (before numpy loads)

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
sys.path.insert(0, os.path.dirname(HERE))

from apt_ext.memory import ClusterIndex, MiniLMEmbedder  # noqa: E402

DIM = 384
TOPICS = {
    "cooking": (["The chef", "My grandmother", "A home cook", "The bakery", "Our restaurant"],
                ["bakes", "roasts", "simmers", "seasons", "grills", "ferments"],
                ["sourdough bread", "tomato soup", "chicken curry", "apple pie", "miso ramen", "garlic butter"]),
    "sports": (["The striker", "Our goalkeeper", "The tennis champion", "A marathon runner", "The coach"],
               ["trains for", "wins", "prepares for", "loses", "dominates", "qualifies for"],
               ["the world cup", "the final match", "the city marathon", "the grand slam", "the playoffs"]),
    "gpus": (["The H100", "A consumer GPU", "The new accelerator", "Our cluster", "The tensor core"],
             ["accelerates", "runs out of memory during", "speeds up", "offloads", "parallelises"],
             ["matrix multiplication", "LLM inference", "attention kernels", "FP4 training", "batch decoding"]),
    "travel": (["The tourist", "Our family", "A backpacker", "The airline", "The tour guide"],
               ["flies to", "explores", "books a hotel in", "cancels the trip to", "recommends"],
               ["Tokyo", "the Alps", "a Greek island", "Patagonia", "the Sahara desert", "Kyoto temples"]),
    "finance": (["The central bank", "An investor", "The startup", "Our accountant", "The hedge fund"],
                ["raises", "cuts", "audits", "hedges against", "forecasts"],
                ["interest rates", "quarterly revenue", "inflation risk", "the bond market", "tax liabilities"]),
    "health": (["The doctor", "A nurse", "The patient", "Our pharmacist", "The surgeon"],
               ["prescribes", "monitors", "treats", "diagnoses", "recommends"],
               ["high blood pressure", "a migraine", "seasonal allergies", "a broken wrist", "vitamin D"]),
    "music": (["The pianist", "A jazz band", "The orchestra", "Our choir", "The DJ"],
              ["performs", "records", "rehearses", "improvises on", "remixes"],
              ["a Chopin nocturne", "a blues standard", "Beethoven's fifth", "a pop ballad", "techno beats"]),
    "garden": (["The gardener", "My neighbour", "A farmer", "The greenhouse", "Our community garden"],
               ["plants", "waters", "prunes", "harvests", "fertilises"],
               ["tomato seedlings", "rose bushes", "apple trees", "herbs", "pumpkins", "tulip bulbs"]),
}
WHEN = ["on Monday", "every morning", "last winter", "in 2024", "after lunch", "before the deadline",
        "during the holidays", "twice a week", "at night", "for the first time"]
WHY = ["", " to save time", " because it is cheaper", " despite the rain", " with great care",
       " for the newsletter", " under pressure", " with friends"]


def topic_sentences(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """``n`` distinct generated sentences and their topic ids (int [n])."""
    rng = np.random.default_rng(seed)
    names = list(TOPICS)
    seen, texts, labels = set(), [], []
    while len(texts) < n:
        t = int(rng.integers(len(names)))
        subj, verb, obj = (TOPICS[names[t]][i][rng.integers(len(TOPICS[names[t]][i]))] for i in range(3))
        text = f"{subj} {verb} {obj} {WHEN[rng.integers(len(WHEN))]}{WHY[rng.integers(len(WHY))]} (#{rng.integers(1000)})."
        if text not in seen:
            seen.add(text)
            texts.append(text)
            labels.append(t)
    return texts, np.asarray(labels)


def minilm_data(n: int, n_queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(base [n, 384], base topics, queries [n_queries, 384], query topics), cached as .npy."""
    path = os.path.join(RESULTS, f"aim_memory_minilm_{n // 1000}k.npz")
    if os.path.exists(path):
        z = np.load(path)
        if z["queries"].shape[0] >= n_queries:
            return z["base"], z["base_topics"], z["queries"][:n_queries], z["query_topics"][:n_queries]
    texts, topics = topic_sentences(n + n_queries, seed=0)
    embed = MiniLMEmbedder(batch_size=128)
    vecs = np.concatenate([embed(texts[i:i + 512]) for i in tqdm(range(0, len(texts), 512),
                                                                  desc="MiniLM embedding")])
    os.makedirs(RESULTS, exist_ok=True)
    np.savez(path, base=vecs[:n], base_topics=topics[:n], queries=vecs[n:], query_topics=topics[n:])
    return vecs[:n], topics[:n], vecs[n:], topics[n:]


def synthetic(n: int, n_queries: int, n_centers: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian-mixture unit vectors: base [n, 384], labels, queries, query labels."""
    rng = np.random.default_rng(seed)
    # two levels (topics -> clusters -> points) so that neighbouring clusters overlap and an IVF
    # index needs several probes, as with real embeddings
    topics = rng.standard_normal((max(1, n_centers // 20), DIM)).astype(np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    centers = topics[rng.integers(0, topics.shape[0], n_centers)] + \
        rng.standard_normal((n_centers, DIM), dtype=np.float32) * (0.8 / np.sqrt(DIM))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)

    def draw(m: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, n_centers, m)
        out = np.empty((m, DIM), np.float32)
        for s in range(0, m, 100_000):
            lab = labels[s:s + 100_000]
            x = centers[lab] + rng.standard_normal((lab.size, DIM), dtype=np.float32) * (1.6 / np.sqrt(DIM))
            out[s:s + lab.size] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out, labels

    base, labels = draw(n)
    queries, qlabels = draw(n_queries)
    return base, labels, queries, qlabels


def exact_top10(base: np.ndarray, queries: np.ndarray) -> np.ndarray:
    out = np.empty((queries.shape[0], 10), np.int64)
    for s in range(0, queries.shape[0], 64):
        sims = queries[s:s + 64] @ base.T
        top = np.argpartition(-sims, 9, axis=1)[:, :10]
        out[s:s + 64] = top
    return out


def recall(found: list[np.ndarray], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / 10 for f, t in zip(found, truth)]))


def timed(fn, queries: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, float]:
    """(results, per-query latency in ms, mean scanned)."""
    results, lat, scanned = [], [], []
    for q in queries:
        t0 = time.perf_counter()
        ids, n_scanned = fn(q)
        lat.append((time.perf_counter() - t0) * 1e3)
        results.append(ids)
        scanned.append(n_scanned)
    return results, np.asarray(lat), float(np.mean(scanned)) if scanned[0] is not None else float("nan")


def point(name, setting, results, lat, scanned, truth, extra=None):
    return {"method": name, "setting": setting, "recall@10": recall(results, truth),
            "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
            "scanned": scanned, **(extra or {})}


def calibrated(name, sweep, run, truth, target=0.95):
    """Cheapest sweep setting with recall >= target (or the last one), plus every point tried."""
    tried = []
    for setting in sweep:
        results, lat, scanned = run(setting)
        tried.append(point(name, setting, results, lat, scanned, truth))
        tqdm.write(f"  {name:<18} setting={setting:<5} recall@10={tried[-1]['recall@10']:.3f} "
                   f"p50={tried[-1]['p50_ms']:.3f} ms")
        if tried[-1]["recall@10"] >= target:
            break
    return tried[-1], tried


def bench_size(label: str, base: np.ndarray, queries: np.ndarray, cluster_size: int, args) -> dict:
    import faiss
    faiss.omp_set_num_threads(1)
    n = base.shape[0]
    truth = exact_top10(base, queries)
    out = {"size": label, "n": n, "queries": int(queries.shape[0]), "methods": {}, "sweeps": {}}
    tq = queries[: max(20, queries.shape[0] // 5)] if n >= 1_000_000 else queries

    def brute(q):
        sims = base @ q
        return np.argpartition(-sims, 9)[:10], n
    res, lat, sc = timed(brute, tq)
    out["methods"]["numpy brute force"] = point("numpy brute force", "-", res, lat, sc, truth[:tq.shape[0]])

    t0 = time.perf_counter()
    index = ClusterIndex(DIM, cluster_size=cluster_size, hot_window=0, kmeans_iters=args.kmeans_iters)
    index.build(np.arange(n), base)
    build_s = time.perf_counter() - t0
    best, tried = calibrated("AIM ClusterIndex", [1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128],
                             lambda p: timed(lambda q: index.search(q, 10, n_probe=p)[::2], queries),
                             truth)
    best.update(build_s=build_s, clusters=index.n_clusters)
    out["methods"]["AIM ClusterIndex"], out["sweeps"]["AIM ClusterIndex"] = best, tried
    out["aim_index"] = index

    t0 = time.perf_counter()
    quant = faiss.IndexFlatIP(DIM)
    ivf = faiss.IndexIVFFlat(quant, DIM, index.n_clusters, faiss.METRIC_INNER_PRODUCT)
    ivf.train(base[np.random.default_rng(0).choice(n, min(n, 64 * index.n_clusters), replace=False)])
    ivf.add(base)
    build_s = time.perf_counter() - t0
    invlists = ivf.invlists
    sizes = np.array([invlists.list_size(i) for i in range(ivf.nlist)])

    def faiss_run(nprobe):
        ivf.nprobe = nprobe

        def one(q):
            _, ids = ivf.search(q[None], 10)
            return ids[0], None
        res, lat, _ = timed(one, queries)
        _, probed = quant.search(queries, nprobe)
        return res, lat, float(sizes[probed].sum(axis=1).mean())
    best, tried = calibrated("FAISS IVFFlat", [1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128], faiss_run, truth)
    best.update(build_s=build_s, nlist=int(ivf.nlist))
    out["methods"]["FAISS IVFFlat"], out["sweeps"]["FAISS IVFFlat"] = best, tried
    del ivf, quant

    if n <= args.hnsw_max:
        import hnswlib
        t0 = time.perf_counter()
        hnsw = hnswlib.Index(space="ip", dim=DIM)
        hnsw.init_index(max_elements=n, M=16, ef_construction=100)
        hnsw.set_num_threads(2)
        hnsw.add_items(base, np.arange(n))
        hnsw.set_num_threads(1)
        build_s = time.perf_counter() - t0

        def hnsw_run(ef):
            hnsw.set_ef(ef)
            res, lat, _ = timed(lambda q: (hnsw.knn_query(q[None], k=10)[0][0], None), queries)
            return res, lat, float("nan")
        best, tried = calibrated("hnswlib", [10, 16, 24, 32, 48, 64, 96, 128, 192, 256], hnsw_run, truth)
        best.update(build_s=build_s)
        out["methods"]["hnswlib"], out["sweeps"]["hnswlib"] = best, tried
    else:
        out["methods"]["hnswlib"] = {"method": "hnswlib", "skipped": f"n > --hnsw-max {args.hnsw_max} "
                                     "(graph build too slow on 2 shared cores)"}
    return out


def inertia_ablation(index: ClusterIndex, base: np.ndarray, queries: np.ndarray, qtopics: np.ndarray,
                     n_probe: int, stream_len: int) -> list[dict]:
    """Route query streams as route_memory does (direction = normalize(q + lambda*v), v <- mu*v +
    (1-mu)*mean(top results)) and report recall@10 vs exact and scanned per query."""
    truth = exact_top10(base, queries)
    order_by_topic = [np.flatnonzero(qtopics == t) for t in np.unique(qtopics)]
    stay = np.concatenate([idx[:stream_len] for idx in order_by_topic])
    switch = np.stack([idx[:stream_len] for idx in order_by_topic if idx.size >= stream_len], axis=1).reshape(-1)
    streams = (("stay on topic", stay), ("switch topic every query", switch))
    rows = []
    for stream_name, stream in streams:
        for probes in sorted({1, n_probe}):
            for lam in (0.0, 0.5):
                v = np.zeros(DIM, np.float32)
                found, scanned = [], []
                for qi in stream:
                    q = queries[qi]
                    d = q + lam * v
                    d = d / np.linalg.norm(d)
                    ids, _, sc = index.search(q, 10, direction=d, n_probe=probes)
                    v = 0.85 * v + 0.15 * base[ids].mean(axis=0)
                    found.append(ids)
                    scanned.append(sc)
                rows.append({"stream": stream_name, "lambda": lam, "n_probe": probes,
                             "recall@10": recall(found, truth[stream]),
                             "scanned": float(np.mean(scanned)), "queries": int(stream.size)})
    return rows


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def embedder_table(texts: list[str], queries: list[str]) -> list[dict]:
    """Query embedding latency (one query at a time) and cosine to the float32
    sentence-transformers model, for the float32 model and the ONNX Runtime float32 / int8 ones."""
    from apt_ext.memory import OnnxMiniLMEmbedder
    reference = MiniLMEmbedder(batch_size=64)
    ref = reference(texts)
    rows = []
    for name, emb in (("sentence-transformers fp32 (torch, 1 thread)", reference),
                      ("ONNX Runtime fp32 (2 threads)", OnnxMiniLMEmbedder(quantized=False)),
                      ("ONNX Runtime int8 weights (2 threads; the default)", OnnxMiniLMEmbedder(quantized=True))):
        vecs = emb(texts)
        cos = np.sum(vecs * ref, axis=1)
        for q in queries[:10]:
            emb([q])  # warm-up
        lat = []
        for q in tqdm(queries, desc=name[:24], leave=False):
            t0 = time.perf_counter()
            emb([q])
            lat.append((time.perf_counter() - t0) * 1e3)
        rows.append({"embedder": name, "p50_ms": float(np.percentile(lat, 50)),
                     "p95_ms": float(np.percentile(lat, 95)), "cosine_to_fp32_mean": float(cos.mean()),
                     "cosine_to_fp32_min": float(cos.min()), "sentences": len(texts), "queries": len(queries)})
        tqdm.write(f"  {name:<52} p50 {rows[-1]['p50_ms']:.2f} ms  cos mean {cos.mean():.4f} min {cos.min():.4f}")
    return rows


class PrecomputedEmbedder:
    """The vectors ``embedder`` gave for ``texts``, looked up: routing timed without the embedding."""

    def __init__(self, embedder, texts: list[str]) -> None:
        self.name = embedder.name
        self._vecs = dict(zip(texts, embedder(texts)))

    def __call__(self, texts: list[str]) -> np.ndarray:
        return np.stack([self._vecs[t] for t in texts])


def route_memory_end_to_end(label: str, texts: list[str], vecs: np.ndarray, query_texts: list[str],
                            embedder) -> dict:
    """End-to-end ``route_memory`` latency (query embedding by ``embedder`` + dense, lexical and
    anchor channels + scoring) on a memory of ``len(texts)`` nodes loaded with ``import_records``
    (texts with the given vectors), and the routing alone (the same queries with their vectors
    looked up instead of embedded)."""
    from apt_ext.memory import create_aim_memory
    mem = create_aim_memory(embedder=embedder)
    t0 = time.perf_counter()
    mem.import_records([{"namespace": "bench", "evidence": t, "embedder": embedder.name, "proto": v}
                        for t, v in zip(texts, vecs)])  # one transaction, one k-means build
    load_s = time.perf_counter() - t0
    for q in query_texts[:10]:
        mem.route_memory(q, namespace="bench", k=5)  # warm-up
    alone = []  # the embedding in a loop of its own (no route between calls)
    for q in query_texts:
        t0 = time.perf_counter()
        embedder([q])
        alone.append((time.perf_counter() - t0) * 1e3)
    lat, embed_lat = [], []
    routes_before, scanned_before = mem.counters["routes"], mem.counters["scanned"]
    for q in query_texts:
        t0 = time.perf_counter()
        embedder([q])
        embed_lat.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        mem.route_memory(q, namespace="bench", k=5)
        lat.append((time.perf_counter() - t0) * 1e3)
    lat, embed_lat = np.asarray(lat), np.asarray(embed_lat)
    mem.embedder = PrecomputedEmbedder(embedder, query_texts)
    routing = []
    for q in query_texts:
        t0 = time.perf_counter()
        mem.route_memory(q, namespace="bench", k=5)
        routing.append((time.perf_counter() - t0) * 1e3)
    stats = mem.stats("bench")["namespaces"]["bench"]
    out = {"size": label, "nodes": stats["nodes"], "clusters": stats["clusters"], "load_s": load_s,
           "route_memory_p50_ms": float(np.percentile(lat, 50)), "route_memory_p95_ms": float(np.percentile(lat, 95)),
           "query_embedding_p50_ms": float(np.percentile(embed_lat, 50)),
           "query_embedding_alone_p50_ms": float(np.percentile(alone, 50)),
           "route_minus_embedding_p50_ms": float(np.percentile(lat, 50) - np.percentile(embed_lat, 50)),
           "routing_only_p50_ms": float(np.percentile(routing, 50)),
           "routing_only_p95_ms": float(np.percentile(routing, 95)),
           "scanned_per_route": (mem.counters["scanned"] - scanned_before) / (mem.counters["routes"] - routes_before),
           "queries": len(query_texts), "load_average": load_average()}
    mem.close()
    tqdm.write(f"  route_memory {label}: p50 {out['route_memory_p50_ms']:.2f} ms (embedding "
               f"{out['query_embedding_p50_ms']:.2f} ms, routing alone {out['routing_only_p50_ms']:.2f} ms), "
               f"p95 {out['route_memory_p95_ms']:.2f} ms, load {load_s:.0f} s")
    return out


def plot(results: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = ["numpy brute force", "AIM ClusterIndex", "FAISS IVFFlat", "hnswlib"]
    for name in names:
        xs = [r["n"] for r in results if "p50_ms" in r["methods"].get(name, {})]
        ys = [r["methods"][name]["p50_ms"] for r in results if "p50_ms" in r["methods"].get(name, {})]
        rc = [r["methods"][name]["recall@10"] for r in results if "p50_ms" in r["methods"].get(name, {})]
        ax1.plot(xs, ys, marker="o", label=name)
        ax2.plot(xs, rc, marker="o", label=name)
    ax1.set(xscale="log", yscale="log", xlabel="vectors", ylabel="p50 latency per query (ms, 1 thread)",
            title="route latency at recall@10 >= 0.95")
    ax2.set(xscale="log", xlabel="vectors", ylabel="recall@10", title="recall@10 of the chosen setting")
    ax2.axhline(0.95, color="gray", ls="--", lw=0.8)
    ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10k and 100k only, fewer queries")
    parser.add_argument("--queries", type=int, default=None, help="queries per size (default 300, quick 100)")
    parser.add_argument("--hnsw-max", type=int, default=100_000, help="largest size hnswlib is built for")
    parser.add_argument("--kmeans-iters", type=int, default=8)
    parser.add_argument("--e2e-only", action="store_true",
                        help="only the query-embedding table and end-to-end route_memory (a repeat run)")
    parser.add_argument("--note", default="", help="free text stored in the JSON (what else ran on the machine)")
    args = parser.parse_args()
    nq = args.queries or (100 if args.quick else 300)
    try:
        if not args.e2e_only:  # the end-to-end routes compare with nothing
            import faiss  # noqa: F401
            import hnswlib  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"{exc}: the comparison needs FAISS and hnswlib: pip install 'apt_ext[bench]'")
    try:
        import torch
        torch.set_num_threads(1)
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    results, ablation, e2e = [], [], None
    load_start, wall0 = load_average(), time.perf_counter()

    base, topics, queries, qtopics = minilm_data(10_000, max(nq, 400))
    if not args.e2e_only:
        r = bench_size("10k MiniLM", base, queries[:nq], cluster_size=100, args=args)
        n_probe = r["methods"]["AIM ClusterIndex"]["setting"]
        ablation = inertia_ablation(r.pop("aim_index"), base, queries, qtopics, n_probe, stream_len=40)
        results.append(r)
    texts, _ = topic_sentences(10_000 + max(nq, 400), seed=0)
    query_texts = texts[10_000:10_000 + 200]
    embed_rows = embedder_table(texts[:500], query_texts)
    from apt_ext.memory import OnnxMiniLMEmbedder
    fast = OnnxMiniLMEmbedder()
    e2e = [route_memory_end_to_end("10k MiniLM", texts[:10_000], base, query_texts, fast)]
    e2e_sizes = [100_000] + ([] if args.quick else [1_000_000])
    for n in e2e_sizes:
        t0 = time.perf_counter()
        big_texts, _ = topic_sentences(n, seed=n)
        big, _, _, _ = synthetic(n, 1, max(100, n // 1000), seed=n + 1)
        e2e.append(route_memory_end_to_end(f"{n // 1000}k", big_texts, big, query_texts, fast))
        e2e[-1]["wall_s_with_generation"] = time.perf_counter() - t0
        del big, big_texts
    sizes = [] if args.e2e_only else [(100_000, 316, 300)] + ([] if args.quick else [(1_000_000, 1000, 1000)])
    for n, cluster_size, centers in sizes:
        base, _, queries, _ = synthetic(n, nq, centers, seed=n)
        r = bench_size(f"{n // 1000}k synthetic", base, queries, cluster_size=cluster_size, args=args)
        r.pop("aim_index")
        results.append(r)
        del base

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    record = {"date": stamp, "machine": f"{platform.node()} {platform.processor() or platform.machine()} "
              f"({os.cpu_count()} cpus, shared: preliminary)", "python": platform.python_version(),
              "numpy": np.__version__, "torch": torch_version, "command": " ".join(["python"] + sys.argv),
              "note": args.note, "load_average_start": load_start, "load_average_end": load_average(),
              "wall_s": time.perf_counter() - wall0, "results": results, "inertia_ablation": ablation,
              "query_embedding": embed_rows, "route_memory_end_to_end": e2e}
    os.makedirs(RESULTS, exist_ok=True)
    tag = ("e2e_" if args.e2e_only else "") + ("quick" if args.quick else "full")
    if args.e2e_only:
        tag += "_" + stamp.replace(":", "").replace("-", "")
    with open(os.path.join(RESULTS, f"aim_memory_{tag}.json"), "w") as f:
        json.dump(record, f, indent=2)
    if results:
        plot(results, os.path.join(RESULTS, f"aim_memory_{tag}.png"))

    print(f"\nAIM-Memory routing, one query at a time, one thread ({record['machine']}, {stamp})")
    print(f"{'size':<16}{'method':<20}{'setting':>8}{'recall@10':>10}{'p50 ms':>9}{'p95 ms':>9}"
          f"{'scanned':>10}{'vs brute':>10}{'AIM/this':>10}")
    for r in results:
        brute = r["methods"]["numpy brute force"]["p50_ms"]
        aim = r["methods"]["AIM ClusterIndex"]["p50_ms"]
        for name, m in r["methods"].items():
            if "skipped" in m:
                print(f"{r['size']:<16}{name:<20}  skipped: {m['skipped']}")
                continue
            print(f"{r['size']:<16}{name:<20}{str(m['setting']):>8}{m['recall@10']:>10.3f}{m['p50_ms']:>9.3f}"
                  f"{m['p95_ms']:>9.3f}{m['scanned']:>10.0f}{brute / m['p50_ms']:>9.1f}x{aim / m['p50_ms']:>9.2f}x")
    print("\nInertia ablation (10k MiniLM):")
    for row in ablation:
        print(f"  {row['stream']:<26} n_probe={row['n_probe']:<3} lambda={row['lambda']:.1f}  "
              f"recall@10={row['recall@10']:.3f}  "
              f"scanned={row['scanned']:.0f}")
    print("\nQuery embedding (one query at a time):")
    for row in embed_rows:
        print(f"  {row['embedder']:<52} p50 {row['p50_ms']:6.2f} ms  p95 {row['p95_ms']:6.2f} ms  "
              f"cosine to fp32 mean {row['cosine_to_fp32_mean']:.4f} min {row['cosine_to_fp32_min']:.4f}")
    print("\nroute_memory end to end (ONNX int8 query embedding included):")
    for row in e2e:
        print(f"  {row['size']:<11} {row['nodes']:>9} nodes  p50 {row['route_memory_p50_ms']:6.2f} ms  p95 "
              f"{row['route_memory_p95_ms']:6.2f} ms  (embedding {row['query_embedding_p50_ms']:.2f} ms, routing "
              f"alone {row['routing_only_p50_ms']:.2f} ms)  scanned {row['scanned_per_route']:.0f}  "
              f"load {row['load_s']:.0f} s")
    print(f"\nwall time {record['wall_s']:.0f} s, load average {load_start} -> {record['load_average_end']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
