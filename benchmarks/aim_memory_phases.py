"""Where the time of one ``route_memory`` goes, without the query embedding: the routing of
``benchmarks/aim_memory.py``'s end-to-end sizes (the same nodes and the same 200 queries, their
int8 ONNX vectors computed once and looked up), timed per phase.

Each phase is one function of the route, wrapped with a perf_counter timer (about 0.3 us per
call of overhead; no profiler): the query vector lookup and its checks, the change-sequence sync,
the dense scan (``ClusterIndex.search``), the query's lexical tokens and BM25 search, the query's
anchors, the vectors of candidates found by the other channels and of the chosen nodes,
the anchor overlap, the returned node objects; "rest" is the route minus those (candidate sets,
the fusion-rule loop, the inertia update). Per phase: p50 and mean over the queries, ms per route;
"route p50" is also timed without the wrappers.

``--baseline DIR`` times another version of the code in the same process: DIR holds that
version's ``apt_ext/memory`` (e.g. ``git archive main apt_ext/memory | tar -x -C DIR``), loaded as
the package ``aim_memory_baseline`` (a copy with its ``apt_ext.memory`` imports renamed); both
memories hold the same nodes and their passes over the queries alternate, so both see the same
load on a shared machine.

  mkdir -p /tmp/main && git archive main apt_ext/memory | tar -x -C /tmp/main
  python benchmarks/aim_memory_phases.py --sizes 10k 100k --baseline /tmp/main --label main_vs_aim4
"""
from __future__ import annotations

import argparse
import atexit
import datetime
import functools
import importlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import defaultdict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import aim_memory as bench  # noqa: E402  (sets one BLAS thread before numpy work)

SIZES = {"10k": 10_000, "100k": 100_000, "1M": 1_000_000}


def load_baseline(folder: str):
    """The package ``aim_memory_baseline``: ``folder``/apt_ext/memory copied to a temporary folder
    with its imports of ``apt_ext.memory`` renamed to it."""
    source = os.path.join(folder, "apt_ext", "memory")
    if not os.path.isfile(os.path.join(source, "__init__.py")):
        raise SystemExit(f"--baseline {folder}: no apt_ext/memory/__init__.py under it")
    root = tempfile.mkdtemp(prefix="aim_baseline_")
    atexit.register(shutil.rmtree, root, True)
    target = os.path.join(root, "aim_memory_baseline")
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    for dirpath, _, names in os.walk(target):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                with open(path) as f:
                    text = f.read()
                with open(path, "w") as f:
                    f.write(text.replace("apt_ext.memory", "aim_memory_baseline"))
    sys.path.insert(0, root)
    return importlib.import_module("aim_memory_baseline")


def build(package, n: int, query_texts: list[str], texts: list[str], embedder):
    """A memory of ``package`` (``apt_ext.memory`` or a baseline) with ``n`` nodes loaded as
    ``aim_memory.route_memory_end_to_end`` loads them, whose embedder looks the query vectors up;
    and the seconds the import took."""
    if n == 10_000:
        vecs, nodes = bench.minilm_data(10_000, 400)[0], texts[:10_000]
    else:
        nodes, _ = bench.topic_sentences(n, seed=n)
        vecs = bench.synthetic(n, 1, max(100, n // 1000), seed=n + 1)[0]
    mem = package.create_aim_memory(embedder=embedder)
    t0 = time.perf_counter()
    mem.import_records([{"namespace": "bench", "evidence": t, "embedder": embedder.name, "proto": v}
                        for t, v in zip(nodes, vecs)])
    load_s = time.perf_counter() - t0
    mem.embedder = bench.PrecomputedEmbedder(embedder, query_texts)
    return mem, load_s


def phase_timers(package) -> tuple[dict[str, float], list]:
    """Wrap the route's phase functions of ``package`` with timers adding into the returned dict;
    also the (owner, name, original) triples that undo it."""
    memory_module = importlib.import_module(package.__name__ + ".memory")
    ClusterIndex = importlib.import_module(package.__name__ + ".index").ClusterIndex
    BM25Index = importlib.import_module(package.__name__ + ".lexical").BM25Index
    spent: dict[str, float] = defaultdict(float)
    targets = [(memory_module.AIMMemory, "_embed", "query vector (lookup) and checks"),
               (memory_module.AIMMemory, "_sync", "change-sequence sync"),
               (ClusterIndex, "search", "dense scan"),
               (memory_module, "tokenize", "lexical tokens"),
               (BM25Index, "search", "BM25 search"),
               (memory_module, "extract_anchors", "query anchors"),
               (ClusterIndex, "vectors", "candidate and chosen vectors"),
               (memory_module, "anchor_overlap", "anchor overlap"),
               (memory_module.AIMMemory, "_node", "node objects")]
    undo = []
    for owner, name, label in targets:
        original = getattr(owner, name)

        def timed(*args, _f=original, _label=label, **kwargs):
            t0 = time.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                spent[_label] += time.perf_counter() - t0
        setattr(owner, name, functools.wraps(original)(timed))
        undo.append((owner, name, original))
    return spent, undo


def route_p50(mem, queries: list[str]) -> float:
    """p50 ms of one untimed pass over ``queries`` (inertia reset first)."""
    mem.reset_inertia("bench")
    lat = []
    for q in queries:
        t0 = time.perf_counter()
        mem.route_memory(q, namespace="bench", k=5)
        lat.append((time.perf_counter() - t0) * 1e3)
    return float(np.percentile(lat, 50))


def phases(package, mem, queries: list[str]) -> dict:
    """One pass over ``queries`` with every phase timed: p50 and mean ms per route of each."""
    spent, undo = phase_timers(package)
    per: dict[str, list[float]] = defaultdict(list)
    try:
        mem.reset_inertia("bench")
        for q in queries:
            spent.clear()
            t0 = time.perf_counter()
            mem.route_memory(q, namespace="bench", k=5)
            total = time.perf_counter() - t0
            for label, s in spent.items():
                per[label].append(s * 1e3)
            per["rest (candidate sets, fusion-rule loop, inertia)"].append((total - sum(spent.values())) * 1e3)
            per["route (with the timers)"].append(total * 1e3)
    finally:
        for owner, name, original in undo:
            setattr(owner, name, original)
    return {label: {"p50_ms": float(np.percentile(v, 50)), "mean_ms": float(np.mean(v))} for label, v in per.items()}


def measure(runs: dict, queries: list[str], repeats: int) -> dict[str, dict]:
    """For each code version in ``runs`` (name -> (package, memory)): untimed passes, alternating
    between the versions ``repeats`` times, then one pass with the phases timed (alternating too)."""
    for _, mem in runs.values():
        for q in queries[:10]:
            mem.route_memory(q, namespace="bench", k=5)  # warm-up
    p50s: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (_, mem) in runs.items():
            p50s[name].append(route_p50(mem, queries))
    return {name: {"route_p50_ms_per_pass": p50s[name], "route_p50_ms": min(p50s[name]),
                   "phases": phases(package, mem, queries)} for name, (package, mem) in runs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["10k", "100k"])
    parser.add_argument("--repeats", type=int, default=3, help="untimed-phase passes over the queries per size")
    parser.add_argument("--label", required=True, help="name of this run in the JSON file name (e.g. before, after)")
    parser.add_argument("--note", default="", help="free text stored in the JSON (which code, what else ran)")
    parser.add_argument("--baseline", default=None,
                        help="folder holding another version's apt_ext/memory, timed beside this one")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    import apt_ext.memory as current
    from apt_ext.memory import OnnxMiniLMEmbedder
    packages = {"current": current}
    if args.baseline:
        packages = {"baseline": load_baseline(args.baseline), **packages}
    texts, _ = bench.topic_sentences(10_400, seed=0)
    query_texts = texts[10_000:10_200]  # the end-to-end benchmark's queries
    embedder = OnnxMiniLMEmbedder()
    load_start, wall0 = bench.load_average(), time.perf_counter()
    rows = []
    for size in args.sizes:
        runs = {name: build(package, SIZES[size], query_texts, texts, embedder)[0]
                for name, package in packages.items()}
        timed = measure({name: (packages[name], mem) for name, mem in runs.items()}, query_texts, args.repeats)
        for name, mem in runs.items():
            rows.append({"size": size, "code": name, "nodes": len(mem), **timed[name], "queries": len(query_texts),
                         "load_average": bench.load_average()})
            mem.close()
            print(f"{size} {name}: route p50 {rows[-1]['route_p50_ms']:.3f} ms "
                  f"(passes {[round(x, 3) for x in rows[-1]['route_p50_ms_per_pass']]})")
            for label, ph in rows[-1]["phases"].items():
                print(f"  {label:<50} p50 {ph['p50_ms']:.3f} ms  mean {ph['mean_ms']:.3f} ms")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    record = {"date": stamp, "machine": f"{platform.node()} {platform.machine()} ({os.cpu_count()} cpus, shared)",
              "python": platform.python_version(), "numpy": np.__version__,
              "command": " ".join(["python"] + sys.argv), "note": args.note, "baseline": args.baseline,
              "load_average_start": load_start,
              "load_average_end": bench.load_average(), "wall_s": time.perf_counter() - wall0, "sizes": rows}
    path = os.path.join(bench.RESULTS, f"aim_memory_phases_{args.label}.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
