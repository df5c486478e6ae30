"""Which int8 recipe for AIM-Memory's query embedder: speed against agreement with float32.

all-MiniLM-L6-v2 on ONNX Runtime (2 threads), quantised by ``apt_ext.memory.onnx_embedder
.quantize_int8`` with the feed-forward output projections of no layer, of layer 0 (the default,
``FP32_FFN_OUT_LAYERS``) or of all six layers kept in float32, and the float32 ONNX model; in one
run:
- agreement: cosine of each recipe's sentence vectors to the float32 sentence-transformers
  model on generated topic sentences (``benchmarks/aim_memory.py``) and the turns and questions
  of one synthetic dialogue (``benchmarks/memory_dialogues.py``);
- speed: one query at a time (the route's case), p50 ms of ``embedder([query])``, in rounds: each
  round builds one recipe's embedder, times a block of queries, and drops it before the next,
  so no other ORT thread pool spins beside it; the order rotates from round to round.

    python benchmarks/embedder_recipes.py [--rounds 6] [--queries 50]

Writes benchmarks/results/embedder_recipes.json.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from aim_memory import load_average, topic_sentences  # noqa: E402
from machine_info import cpu_model  # noqa: E402
from memory_dialogues import generate  # noqa: E402

RECIPES = {"int8, no float32 layer": (), "int8, layer 0's FFN output float32 (default)": (0,),
           "int8, all six FFN outputs float32": tuple(range(6))}


def build_files(folder: Path) -> dict[str, tuple[Path, bool]]:
    """Every recipe's int8 file (quantised from the cached float32 export) plus the float32 file."""
    from apt_ext.memory import OnnxMiniLMEmbedder
    from apt_ext.memory.onnx_embedder import _quiet, quantize_int8

    fp32 = OnnxMiniLMEmbedder(quantized=False).model_path()
    files = {"float32 ONNX": (fp32, False)}
    for name, layers in tqdm(RECIPES.items(), desc="quantising"):
        out = folder / f"int8_{''.join(map(str, layers)) or 'none'}.onnx"
        with _quiet():
            quantize_int8(fp32, out, layers)
        files[name] = (out, True)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6, help="timing rounds per recipe")
    parser.add_argument("--queries", type=int, default=50, help="queries timed per round")
    parser.add_argument("--texts", type=int, default=None, help="use only the first N agreement texts")
    parser.add_argument("--out", default=str(HERE / "results" / "embedder_recipes.json"))
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.queries < 10 or (args.texts is not None and args.texts < 1):
        parser.error("--rounds must be >= 1, --queries >= 10 and --texts >= 1")
    from apt_ext.memory import MiniLMEmbedder, OnnxMiniLMEmbedder

    dialogue = generate(seed=100)
    texts = topic_sentences(300, seed=7)[0] + [t.text for t in dialogue.turns[:300]] + \
        [q.text for q in dialogue.questions]
    texts = texts[:args.texts]
    queries = [q.text for q in generate(seed=101).questions] + topic_sentences(args.queries * args.rounds, seed=8)[0]
    load_start, t0 = load_average(), time.perf_counter()
    ref = MiniLMEmbedder(batch_size=64)(texts)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = build_files(Path(tmp))
        for name, (path, quantized) in files.items():
            cos = np.sum(OnnxMiniLMEmbedder(quantized=quantized, onnx_file=path)(texts) * ref, axis=1)
            rows.append({"recipe": name, "fp32_ffn_out_layers": list(RECIPES.get(name, range(6))),
                         "quantized": quantized, "cosine_to_fp32_mean": float(cos.mean()),
                         "cosine_to_fp32_min": float(cos.min()), "latency_ms": []})
        names = list(files)
        for r in tqdm(range(args.rounds), desc="timing rounds"):
            block = queries[r * args.queries:(r + 1) * args.queries]
            for name in names[r % len(names):] + names[:r % len(names)]:
                path, quantized = files[name]
                emb = OnnxMiniLMEmbedder(quantized=quantized, onnx_file=path)
                for q in block[:5]:
                    emb([q])  # warm-up: session, arena, caches
                lat = []
                for q in block:
                    a = time.perf_counter()
                    emb([q])
                    lat.append((time.perf_counter() - a) * 1e3)
                next(row for row in rows if row["recipe"] == name)["latency_ms"] += lat
                del emb
                gc.collect()
    for row in rows:
        lat = row.pop("latency_ms")
        row.update(p50_ms=float(np.percentile(lat, 50)), p95_ms=float(np.percentile(lat, 95)), timed_queries=len(lat))
        print(f"{row['recipe']:<48} p50 {row['p50_ms']:.2f} ms  cos mean {row['cosine_to_fp32_mean']:.4f} "
              f"min {row['cosine_to_fp32_min']:.4f}")
    import onnxruntime
    record = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "machine": f"{cpu_model()}, {os.cpu_count()} cpus", "onnxruntime": onnxruntime.__version__,
              "command": "python benchmarks/embedder_recipes.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "load_average_start": load_start, "load_average_end": load_average(),
              "wall_s": time.perf_counter() - t0, "texts": len(texts), "threads": 2, "recipes": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
