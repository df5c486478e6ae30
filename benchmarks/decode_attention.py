"""Decode attention: one new token per sequence over a static KV cache of Llama-3-8B's attention
shape (32 query / 8 key heads, head size 128, bf16), apt_ext.attention.decode_attention against
the ways torch does it, in one run.

- ``sdpa_masked``: F.scaled_dot_product_attention over the whole cache with a bool mask of the
  positions up to the current one (what benchmarks/e2e_decoder.py's default step does: a CUDA
  graph can replay it at any position);
- ``sdpa_prefix``: the same over the cache sliced to the attended positions (the length known on
  the host: the fewest bytes torch reads, but a graph must be captured per length);
- ``flex``: compiled flex_attention over the cache's 128-key blocks up to the position
  (e2e_decoder.decode_block_mask);
- ``apt``: apt_ext.attention.decode_attention (the length on the device, one launch).

Each is timed as 32 calls (a decoder step's layers, each on its own cache) replayed from one CUDA
graph: GPU time per call, and the bandwidth of the key and value bytes the attended positions hold.
Accuracy: largest absolute difference from a float64 reference (every head, first sequence).
``--sweep`` also times apt's kernel (batch 1) at every split count of SWEEP_SPLITS and keys per step of
SWEEP_BLOCK_N (``apt_s<splits>_n<keys>``), to tune apt_ext/triton/decode_attention.py's choice.

    python benchmarks/decode_attention.py            # batches 1, 8; caches 1024 and 8192
    python benchmarks/decode_attention.py --quick    # batch 1, cache 1024
Writes benchmarks/results/decode_attention_<machine>.json.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import re
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "tests"))
from e2e_decoder import capture_graph, decode_block_mask, flex_attention, replay_seconds  # noqa: E402

from apt_ext.attention import decode_attention  # noqa: E402
from reference import attention as ref_attention  # noqa: E402  (the float64 definition the tests use)

HEADS, KV_HEADS, HEAD_DIM, LAYERS = 32, 8, 128, 32
WAYS = ("sdpa_masked", "sdpa_prefix", "flex", "apt")
SWEEP_SPLITS = (4, 8, 16, 32)
SWEEP_BLOCK_N = (32, 64, 128)


_FLEX = []  # one compiled flex_attention (dynamo recompiles it per shape)


def way(name: str, context: int):
    """fn(q [B, H, D], k, v [B, KV, T, D], pos [1] device tensor) -> [B, H, D] for one way."""
    positions = torch.arange(context, device="cuda")
    if name == "sdpa_masked":
        return lambda q, k, v, pos: F.scaled_dot_product_attention(
            q[:, :, None], k, v, attn_mask=(positions <= pos).view(1, 1, 1, -1), enable_gqa=True)[:, :, 0]
    if name == "flex":
        if not _FLEX:
            _FLEX.append(torch.compile(flex_attention, dynamic=False))
        return lambda q, k, v, pos: _FLEX[0](q[:, :, None], k, v, block_mask=decode_block_mask(pos, context),
                                             enable_gqa=True)[:, :, 0]
    if name == "apt":
        return lambda q, k, v, pos: decode_attention(q, k, v, pos + 1)
    raise ValueError(name)


def time_way(fn, qs, ks, vs, pos, iters: int) -> tuple[float, torch.Tensor]:
    """(median GPU seconds per call of LAYERS calls replayed from one CUDA graph, first output)."""
    graph, outs = capture_graph(lambda: [fn(q, k, v, pos) for q, k, v in zip(qs, ks, vs)], warmups=3)
    return replay_seconds(graph, iters) / len(qs), outs[0]


def sweep(qs, ks, vs, pos, ref, iters: int) -> dict:
    """apt's kernel with each split count and keys per step pinned: {name: {us, max_abs_err}}."""
    from apt_ext.triton import decode_attention as tda
    chosen = (tda.num_splits, tda.BLOCK_N)
    res = {}
    try:
        for splits in SWEEP_SPLITS:
            for block_n in SWEEP_BLOCK_N:
                tda.num_splits = lambda programs, capacity, device, pinned=splits: pinned
                tda.BLOCK_N = block_n
                secs, y = time_way(way("apt", ks[0].shape[2]), qs, ks, vs, pos, iters)
                res[f"apt_s{splits}_n{block_n}"] = {"us": secs * 1e6,
                                                    "max_abs_err": float((y[0].double().cpu() - ref).abs().max())}
    finally:
        tda.num_splits, tda.BLOCK_N = chosen
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="batch 1, cache 1024 only")
    ap.add_argument("--iters", type=int, default=50, help="timed graph replays per case")
    ap.add_argument("--sweep", action="store_true", help="also apt's kernel at every SWEEP_SPLITS x SWEEP_BLOCK_N")
    ap.add_argument("--out", default=None,
                    help="JSON path (default benchmarks/results/decode_attention_<machine>.json)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        ap.error("needs a CUDA GPU")
    machine = torch.cuda.get_device_name(0)
    cases = [(1, 1024)] if args.quick else [(1, 1024), (8, 1024), (1, 8192), (8, 8192)]
    result = {"benchmark": "decode_attention", "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine, "torch": torch.__version__, "command": " ".join([sys.executable, *sys.argv]),
              "heads": HEADS, "kv_heads": KV_HEADS, "head_dim": HEAD_DIM, "dtype": "bfloat16",
              "calls_per_graph": LAYERS, "iters": args.iters, "runs": []}
    tag = re.sub(r"[^A-Za-z0-9]+", "_", machine).strip("_").lower() + ("_quick" if args.quick else "")
    out = Path(args.out) if args.out else ROOT / "results" / f"decode_attention_{tag}.json"
    out.parent.mkdir(exist_ok=True)
    g = torch.Generator("cuda").manual_seed(0)

    def rand(*shape: int) -> list[torch.Tensor]:
        return [torch.randn(*shape, generator=g, device="cuda", dtype=torch.bfloat16) for _ in range(LAYERS)]
    for b, context in tqdm(cases, desc="cases"):
        qs, ks, vs = rand(b, HEADS, HEAD_DIM), rand(b, KV_HEADS, context, HEAD_DIM), rand(b, KV_HEADS, context, HEAD_DIM)
        for n in (context // 2 + 1, context):
            pos = torch.tensor([n - 1], device="cuda")
            ref = ref_attention.decode_attention(qs[0][:1].cpu(), ks[0][:1].cpu(), vs[0][:1].cpu(),
                                                 torch.tensor([n]))[0]  # first sequence: [H, D]
            kv_bytes = 2 * b * KV_HEADS * n * HEAD_DIM * 2
            row = {"batch": b, "context": context, "length": n, "kv_bytes": kv_bytes}
            for name in WAYS:
                if name == "sdpa_prefix":
                    fn = lambda q, k, v, pos, n=n: F.scaled_dot_product_attention(  # noqa: E731
                        q[:, :, None], k[:, :, :n], v[:, :, :n], enable_gqa=True)[:, :, 0]
                else:
                    fn = way(name, context)
                secs, y = time_way(fn, qs, ks, vs, pos, args.iters)
                row[name] = {"us": secs * 1e6, "gb_per_s": kv_bytes / secs / 1e9,
                             "max_abs_err": float((y[0].double().cpu() - ref).abs().max())}
            if args.sweep and b == 1:
                row["sweep"] = sweep(qs, ks, vs, pos, ref, args.iters)
                best = min(row["sweep"], key=lambda k: row["sweep"][k]["us"])
                print(f"  sweep: best {best} {row['sweep'][best]['us']:.1f} us; " + ", ".join(
                    f"{k[4:]} {v['us']:.1f}" for k, v in row["sweep"].items()))
            row["apt_speedup_vs_sdpa_masked"] = row["sdpa_masked"]["us"] / row["apt"]["us"]
            row["apt_speedup_vs_flex"] = row["flex"]["us"] / row["apt"]["us"]
            result["runs"].append(row)
            out.write_text(json.dumps(result, indent=1))  # after every row: a run cut short keeps its rows
            print(f"B={b} cache {context} length {n}: " + ", ".join(
                f"{w} {row[w]['us']:.1f} us ({row[w]['gb_per_s']:.0f} GB/s, err {row[w]['max_abs_err']:.1e})"
                for w in WAYS))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
