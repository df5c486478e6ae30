"""AIM-Memory recall on long multi-session dialogues: plain MiniLM dense retrieval, BM25, a plain
string match and AIM-Memory's ``route_memory`` (hybrid: dense + BM25 + anchors), in one run.

Data: the synthetic dialogues of ``benchmarks/memory_dialogues.py`` (two people, 24 dated
sessions, ~460 turns and 30 questions each, every question's evidence turns known). The fusion
weights of AIM-Memory's defaults were fitted with ``--fit`` on the DEV seeds (0-4) only; the
numbers reported are on the TEST seeds (100-109), which the fit never saw. LoCoMo is not used.

Every turn is written as one memory (``write_memory(text, speaker=..., timestamp=...)``, and a
second time without the conversation fields: what a caller that only passes text gets); each
question is routed with k=5. recall@5 of a question = share of its evidence turns among the 5
returned (a turn merged into an earlier node counts through that node; a turn the write gate
rejected cannot be recalled). Baselines rank every turn: dense = cosine of all-MiniLM-L6-v2
embeddings (the same vectors AIM-Memory uses); dense+speaker embeds "Speaker: text"; BM25 is
the index AIM-Memory uses (tested against bm25s) over the turn texts; string match counts the
question's distinct tokens found in the turn.

  python benchmarks/aim_memory_recall.py           # test seeds, writes JSON + PNG
  python benchmarks/aim_memory_recall.py --fit     # grid over the fusion weights on the dev seeds
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import json
import os
import platform
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
PLOTS = os.path.join(HERE, "plots")
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from memory_dialogues import Dialogue, generate  # noqa: E402

from apt_ext.memory import AIMConfig, MiniLMEmbedder, create_aim_memory  # noqa: E402
from apt_ext.memory.lexical import BM25Index, tokenize  # noqa: E402

DEV_SEEDS = list(range(5))
TEST_SEEDS = list(range(100, 110))
K = 5


class CachedEmbedder:
    """MiniLM with a text -> vector cache filled in large batches up front (so the benchmark
    embeds each distinct text once; route_memory still gets the same real MiniLM vectors)."""

    name = MiniLMEmbedder.name

    def __init__(self, model=None) -> None:
        self.model = model if model is not None else MiniLMEmbedder(batch_size=128)
        self.cache: dict[str, np.ndarray] = {}

    def fill(self, texts: list[str]) -> None:
        todo = sorted(set(texts) - self.cache.keys())
        for start in tqdm(range(0, len(todo), 512), desc="MiniLM embedding", leave=False, disable=len(todo) < 512):
            batch = todo[start:start + 512]
            self.cache.update(zip(batch, self.model(batch)))

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.fill(texts)
        return np.stack([self.cache[t] for t in texts])


def recall(found: list[int], evidence: list[int | None]) -> float:
    return sum(e is not None and e in found for e in evidence) / len(evidence)


def baselines(d: Dialogue, emb: CachedEmbedder) -> dict[str, list[float]]:
    """recall@5 per question of the plain baselines (they rank every turn)."""
    texts = [t.text for t in d.turns]
    vecs = emb(texts)
    spk = emb([f"{t.speaker}: {t.text}" for t in d.turns])
    bm25 = BM25Index()
    token_sets = []
    for t in d.turns:
        tokens = tokenize(t.text)
        bm25.add(t.id, tokens)
        token_sets.append(set(tokens))
    out: dict[str, list[float]] = {"dense (MiniLM)": [], "dense (speaker: text)": [], "BM25": [],
                                   "string match": []}
    for q in d.questions:
        qv = emb([q.text])[0]
        out["dense (MiniLM)"].append(recall(np.argsort(-(vecs @ qv), kind="stable")[:K].tolist(), q.evidence))
        out["dense (speaker: text)"].append(recall(np.argsort(-(spk @ qv), kind="stable")[:K].tolist(), q.evidence))
        out["BM25"].append(recall(bm25.search(tokenize(q.text), K)[0].tolist(), q.evidence))
        qt = set(tokenize(q.text))
        hits = np.array([len(qt & s) for s in token_sets])
        out["string match"].append(recall(np.argsort(-hits, kind="stable")[:K].tolist(), q.evidence))
    return out


def build_memory(d: Dialogue, emb: CachedEmbedder, with_fields: bool, config: AIMConfig):
    """A fresh in-memory AIM-Memory holding every turn; returns (memory, turn id -> node id)."""
    mem = create_aim_memory(config=config, embedder=emb)
    node_of: dict[int, int | None] = {}
    for t in d.turns:
        node = (mem.write_memory(t.text, speaker=t.speaker, timestamp=t.timestamp) if with_fields
                else mem.write_memory(t.text))
        node_of[t.id] = None if node is None else node.id
    return mem, node_of


def aim_recall(mem, node_of: dict, d: Dialogue) -> list[float]:
    out = []
    for q in d.questions:
        mem.reset_inertia()
        nodes, _ = mem.route_memory(q.text, k=K)
        out.append(recall([n.id for n in nodes], [node_of[e] for e in q.evidence]))
    return out


def evaluate(seeds: list[int], emb: CachedEmbedder, config: AIMConfig) -> dict:
    per_method: dict[str, list[float]] = {}
    kinds: list[str] = []
    timings = {"write_ms": [], "route_ms": []}
    for seed in tqdm(seeds, desc="dialogues"):
        d = generate(seed)
        emb.fill([t.text for t in d.turns] + [f"{t.speaker}: {t.text}" for t in d.turns]
                 + [q.text for q in d.questions])
        for name, values in baselines(d, emb).items():
            per_method.setdefault(name, []).extend(values)
        for label, fields in (("AIM route_memory (text only)", False),
                              ("AIM route_memory (+speaker, time)", True)):
            t0 = time.perf_counter()
            mem, node_of = build_memory(d, emb, fields, config)
            timings["write_ms"].append((time.perf_counter() - t0) * 1e3 / len(d.turns))
            t0 = time.perf_counter()
            per_method.setdefault(label, []).extend(aim_recall(mem, node_of, d))
            timings["route_ms"].append((time.perf_counter() - t0) * 1e3 / len(d.questions))
            mem.close()
        kinds.extend(q.kind for q in d.questions)
    summary = {}
    for name, values in per_method.items():
        arr = np.asarray(values)
        summary[name] = {"recall@5": float(arr.mean()),
                         "by_kind": {k: float(arr[[i for i, x in enumerate(kinds) if x == k]].mean())
                                     for k in sorted(set(kinds))}}
    counts = {k: kinds.count(k) for k in sorted(set(kinds))}
    return {"seeds": seeds, "questions": len(kinds), "questions_by_kind": counts, "methods": summary,
            "per_turn_write_ms_cached_embeddings": float(np.mean(timings["write_ms"])),
            "per_question_route_ms_cached_embeddings": float(np.mean(timings["route_ms"]))}


FIT_GRID = {"lexical_weight": [0.0, 0.25, 0.5, 1.0],
            "anchor_boost": [0.0, 0.5, 1.0, 2.0, 3.0],
            "min_similarity": [0.0, 0.25]}
# AIMConfig fields that only change how a route scores and filters (not what a write stores), so a
# grid over them can route memories written once with the default config
ROUTING_FIELDS = frozenset({"lexical_weight", "anchor_boost", "min_similarity", "anchor_min_similarity",
                            "lexical_match", "anchor_threshold", "weight_influence", "inertia_strength",
                            "word_anchor_weight", "lexical_length_norm"})


def fit(sets: dict[str, list[Dialogue]], emb: CachedEmbedder, grid: dict[str, list]) -> list[dict]:
    """recall@5 of AIM ``route_memory`` text only and with the conversation fields, on each named
    set of dialogues, for every point of ``grid`` (routing-only fields: memories are written once
    per dialogue with the default config and routed under each point).

    Selection rule: rows sorted, best first, by ``score`` = the mean of the per-set means of both
    columns (text only and with fields of every set count equally, whatever the sets' sizes)."""
    if not set(grid) <= ROUTING_FIELDS:
        raise ValueError(f"fit grids routing-only fields, not {sorted(set(grid) - ROUTING_FIELDS)}")
    built = []
    for name, dialogues in sets.items():
        for d in tqdm(dialogues, desc=f"writing {name} memories"):
            emb.fill([t.text for t in d.turns] + [q.text for q in d.questions])
            for fields in (False, True):
                built.append((name, fields, d, *build_memory(d, emb, fields, AIMConfig())))
    rows = []
    for values in tqdm(list(itertools.product(*grid.values())), desc="grid"):
        cfg = dataclasses.replace(AIMConfig(), **dict(zip(grid, values)))
        scores: dict[tuple[str, bool], list[float]] = {(n, f): [] for n in sets for f in (False, True)}
        for name, fields, d, mem, node_of in built:
            mem.config = cfg
            scores[name, fields].extend(aim_recall(mem, node_of, d))
        by_set = {n: {"recall@5 text only": float(np.mean(scores[n, False])),
                      "recall@5 with fields": float(np.mean(scores[n, True]))} for n in sets}
        rows.append({**dict(zip(grid, values)),
                     "recall@5 text only": float(np.mean([v["recall@5 text only"] for v in by_set.values()])),
                     "recall@5 with fields": float(np.mean([v["recall@5 with fields"] for v in by_set.values()])),
                     "score": float(np.mean([x for v in by_set.values() for x in v.values()])),
                     **({"by_set": by_set} if len(sets) > 1 else {})})
    for _, _, _, mem, _ in built:
        mem.close()
    rows.sort(key=lambda r: -r["score"])
    return rows


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def plot(result: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    methods = list(result["methods"])
    kinds = list(result["questions_by_kind"])
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(methods)
    groups = ["all"] + kinds
    for i, m in enumerate(methods):
        vals = [result["methods"][m]["recall@5"]] + [result["methods"][m]["by_kind"][k] for k in kinds]
        ax.bar(np.arange(len(groups)) + i * width, vals, width, label=m)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2)
    ax.set_xticklabels([f"{g}\n({result['questions'] if g == 'all' else result['questions_by_kind'][g]} q)"
                        for g in groups])
    ax.set(ylabel="recall@5", ylim=(0, 1),
           title=f"AIM-Memory recall@5 on synthetic multi-session dialogues (test seeds {result['seeds'][0]}-"
                 f"{result['seeds'][-1]})")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fit", action="store_true", help="grid over the fusion weights on the dev seeds")
    parser.add_argument("--seeds", type=int, nargs="*", default=None, help="dialogue seeds (default: test seeds)")
    parser.add_argument("--embedder", choices=["fp32", "int8"], default="fp32",
                        help="MiniLM as float32 (sentence-transformers) or the ONNX int8 default query embedder")
    parser.add_argument("--note", default="", help="free text stored in the JSON (which code, what else ran)")
    parser.add_argument("--tag", default="", help="suffix of the JSON name (a repeat that keeps the earlier file)")
    args = parser.parse_args()
    import torch
    torch.set_num_threads(2)
    from apt_ext.memory import OnnxMiniLMEmbedder
    from apt_ext.memory.onnx_embedder import FP32_FFN_OUT_LAYERS
    emb = CachedEmbedder(OnnxMiniLMEmbedder(threads=2) if args.embedder == "int8" else None)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    record = {"date": stamp, "machine": f"{platform.node()} {platform.machine()} ({os.cpu_count()} cpus, shared)",
              "load_average_start": load_average(), "python": platform.python_version(),
              "torch": torch.__version__, "command": " ".join(["python"] + sys.argv),
              "embedder": "all-MiniLM-L6-v2 " + (f"ONNX Runtime int8 (feed-forward outputs of layers {list(FP32_FFN_OUT_LAYERS)} float32)"
                                                  if args.embedder == "int8" else
                                                  "float32 (sentence-transformers)"),
              "config": json.loads(AIMConfig().to_json()), "note": args.note}
    os.makedirs(RESULTS, exist_ok=True)
    os.makedirs(PLOTS, exist_ok=True)
    if args.fit:
        record["grid_on_dev_seeds"] = DEV_SEEDS
        record["grid"] = fit({"synthetic dev": [generate(s) for s in DEV_SEEDS]}, emb, FIT_GRID)
        record["load_average_end"] = load_average()
        with open(os.path.join(RESULTS, "aim_memory_recall_fit.json"), "w") as f:
            json.dump(record, f, indent=2)
        for row in record["grid"][:10]:
            print(row)
        return 0
    seeds = args.seeds if args.seeds else TEST_SEEDS
    record.update(evaluate(seeds, emb, AIMConfig()))
    record["load_average_end"] = load_average()
    tag = ("test" if seeds == TEST_SEEDS else "seeds_" + "_".join(map(str, seeds))) + \
        ("_int8" if args.embedder == "int8" else "") + (f"_{args.tag}" if args.tag else "")
    with open(os.path.join(RESULTS, f"aim_memory_recall_{tag}.json"), "w") as f:
        json.dump(record, f, indent=2)
    plot(record, os.path.join(PLOTS, f"aim_memory_recall_{tag}.png"))
    dense = record["methods"]["dense (MiniLM)"]["recall@5"]
    print(f"\nrecall@5 on {record['questions']} questions ({len(seeds)} dialogues, seeds {seeds[0]}-{seeds[-1]})")
    for name, m in record["methods"].items():
        kinds = "  ".join(f"{k} {v:.3f}" for k, v in m["by_kind"].items())
        print(f"  {name:<36} {m['recall@5']:.3f}  ({m['recall@5'] - dense:+.3f} vs dense)   {kinds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
