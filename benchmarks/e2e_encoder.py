"""End to end: a BERT-base-sized encoder on one GPU with fp32, bf16 and FP4 (nvfp4) weights.

12 pre-LN layers, d_model 768, 12 heads, d_ff 3072, sequence 128, batch 1 and 8, random
weights and inputs (timing does not depend on trained values; the FP4 model's output is
compared with the fp32 model's for a sanity number). FP4 = ``apt_ext.quantize_(model,
fmt="nvfp4")`` on the bf16 model: every nn.Linear (q, k, v, o, ff1, ff2) becomes an FP4Linear,
activations stay bf16; "fp4-nvfp4-dequant" is the same model with ``FP4Linear.tiled = False``
(dequantise to bf16 + cuBLAS at every batch); "fp4-nvfp4-ahead" is the FP4 model under
``apt_ext.nn.dequant_ahead`` (calls from 129 rows multiply by a bf16 copy of the weight
dequantised an 8 MiB group ahead on a side stream: batch 8 here) and "fp4-nvfp4-ahead-all" the same
from one row (batch 1 too), "fp4-nvfp4-ahead-all-g32" with 32 MiB groups (fewer forks, larger
banks). Reports latency (median ms per forward,
triton.testing.do_bench), throughput (sequences/s and tokens/s) and peak GPU memory (weights +
activations of one forward, torch.cuda.max_memory_allocated). Latency is measured twice: eager (every kernel launched
from Python, as a user's loop runs it) and replayed from a CUDA graph (no host cost per kernel).

    python benchmarks/e2e_encoder.py [--profile] [--tag TAG] [--fused-qkv]
--profile also prints the GPU kernels of one FP4 forward per batch (torch.profiler, top 15 by
GPU time). Writes benchmarks/results/e2e_encoder_<card>[_fused_qkv][_TAG].json and
benchmarks/plots/e2e_encoder_<card>[_fused_qkv][_TAG].png; the JSON records the APT_FP4_* settings of the run
(e.g. APT_FP4_GEMM=65 puts the tiled GEMM on the 768-row weights from 65 rows of x).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
LAYERS, D_MODEL, HEADS, D_FF, SEQ = 12, 768, 12, 3072, 128


class EncoderLayer(nn.Module):
    """Pre-LN transformer encoder layer: x + attn(ln1(x)), then + ffn(ln2(x)). x: [B, T, D].
    ``fused_qkv``: q, k and v as one Linear [3 d, d] (as serving stacks load BERT: the same
    weights, two launches a layer fewer)."""

    def __init__(self, d: int, heads: int, d_ff: int, fused_qkv: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        if fused_qkv:
            self.qkv = nn.Linear(d, 3 * d)
        else:
            self.q, self.k, self.v = (nn.Linear(d, d) for _ in range(3))
        self.o = nn.Linear(d, d)
        self.ff1, self.ff2 = nn.Linear(d, d_ff), nn.Linear(d_ff, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.ln1(x)
        qkv = self.qkv(h).chunk(3, -1) if hasattr(self, "qkv") else (self.q(h), self.k(h), self.v(h))
        q, k, v = (p.reshape(b, t, self.heads, d // self.heads).transpose(1, 2) for p in qkv)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.o(a)
        return x + self.ff2(F.gelu(self.ff1(self.ln2(x))))


def encoder(fused_qkv: bool = False) -> nn.Module:
    return nn.Sequential(*(EncoderLayer(D_MODEL, HEADS, D_FF, fused_qkv) for _ in range(LAYERS)))


def measure(model: nn.Module, x: torch.Tensor) -> dict:
    from triton.testing import do_bench

    with torch.inference_mode():
        model(x)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        model(x)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        ms = float(do_bench(lambda: model(x), warmup=25, rep=200, return_mode="median"))
        # the same forward replayed from a CUDA graph: no per-kernel host cost (what a serving
        # stack that captures its forward sees)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                model(x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            model(x)
        graph_ms = float(do_bench(graph.replay, warmup=25, rep=200, return_mode="median"))
    b = x.shape[0]
    return {"latency_ms": ms, "graph_latency_ms": graph_ms, "seq_per_s": b / (ms * 1e-3), "tokens_per_s": b * SEQ / (ms * 1e-3),
            "peak_mem_MB": peak / 2**20, "resident_before_forward_MB": base / 2**20}


def print_kernels(model: nn.Module, x: torch.Tensor, label: str) -> None:
    """Prints the top 15 GPU kernels of ``model``'s forward (GPU time and launches per forward,
    over 3 forwards; ``e2e_decoder.top_kernels``)."""
    from e2e_decoder import top_kernels

    with torch.inference_mode():
        rows = top_kernels(lambda: model(x), 3)
    print(f"--- {label}: per forward")
    for k in rows:
        print(f"  {k['us_per_call']:9.1f} us {k['launches_per_call']:6.1f}x  {k['name'][:90]}")


def weight_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", action="store_true", help="print the FP4 forward's top GPU kernels per batch")
    ap.add_argument("--tag", default="", help="suffix of the JSON and plot names (a run with other APT_FP4_* settings)")
    ap.add_argument("--fused-qkv", action="store_true",
                    help="q, k and v as one Linear in every model (names end in _fused_qkv)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("e2e_encoder benchmark: needs a CUDA GPU")
    import apt_ext
    from apt_ext.nn import FP4Linear, dequant_ahead

    torch.manual_seed(0)
    fp32 = encoder(args.fused_qkv).cuda().eval()
    variants = {"fp32": fp32, "bf16": copy.deepcopy(fp32).to(torch.bfloat16)}
    variants["fp4-nvfp4"] = apt_ext.quantize_(copy.deepcopy(variants["bf16"]), fmt="nvfp4")
    # the same weights with FP4Linear's tiled copy switched off: every call dequantises to bf16
    # and multiplies with cuBLAS (what batch 8's 1024 rows take anyway; at batch 1 the path choice)
    variants["fp4-nvfp4-dequant"] = copy.deepcopy(variants["fp4-nvfp4"])
    for m in variants["fp4-nvfp4-dequant"].modules():
        if isinstance(m, FP4Linear):
            m.tiled = False
    variants["fp4-nvfp4-ahead"] = copy.deepcopy(variants["fp4-nvfp4"])
    variants["fp4-nvfp4-ahead-all"] = copy.deepcopy(variants["fp4-nvfp4"])
    dequant_ahead(variants["fp4-nvfp4-ahead"])
    dequant_ahead(variants["fp4-nvfp4-ahead-all"], min_rows=1)
    variants["fp4-nvfp4-ahead-all-g32"] = copy.deepcopy(variants["fp4-nvfp4"])
    dequant_ahead(variants["fp4-nvfp4-ahead-all-g32"], min_rows=1, group_bytes=32 * 2**20)
    act_dtype = {name: torch.float32 if name == "fp32" else torch.bfloat16 for name in variants}
    rows = []
    for batch in (1, 8):
        x32 = torch.randn(batch, SEQ, D_MODEL, device="cuda")
        with torch.inference_mode():
            ref = fp32(x32).double()
        for name, model in variants.items():
            x = x32.to(act_dtype[name])
            r = measure(model, x)
            with torch.inference_mode():
                y = model(x).double()
            r.update(variant=name, batch=batch, weights_MB=weight_bytes(model) / 2**20,
                     cosine_vs_fp32=float(F.cosine_similarity(y.flatten(), ref.flatten(), dim=0)))
            rows.append(r)
            if args.profile and name.startswith("fp4"):
                print_kernels(model, x, f"{name}, batch {batch}")
    card = torch.cuda.get_device_name()
    res = {"card": card, "torch": torch.__version__, "host": platform.node(),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "command": " ".join([sys.executable, *sys.argv]),
           "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("APT_FP4") or k == "APT_FORCE_TRITON"},
           "model": f"pre-LN encoder, {LAYERS} layers, d_model {D_MODEL}, {HEADS} heads, d_ff {D_FF}, seq {SEQ}"
                    + (", fused q/k/v" if args.fused_qkv else ""),
           "fused_qkv": args.fused_qkv,
           "rows": rows}
    print(f"{res['model']} on {card}")
    print(f"{'variant':>10} {'batch':>5} {'latency ms':>11} {'graph ms':>9} {'seq/s':>9} {'tokens/s':>10} {'peak MB':>9} "
          f"{'weights MB':>10} {'speed-up vs fp32':>16} {'cos vs fp32':>11}")
    for r in rows:
        base = next(q for q in rows if q["batch"] == r["batch"] and q["variant"] == "fp32")
        print(f"{r['variant']:>10} {r['batch']:>5} {r['latency_ms']:11.3f} {r['graph_latency_ms']:9.3f} "
              f"{r['seq_per_s']:9.1f} "
              f"{r['tokens_per_s']:10.0f} {r['peak_mem_MB']:9.1f} {r['weights_MB']:10.1f} "
              f"{base['latency_ms'] / r['latency_ms']:15.2f}x {r['cosine_vs_fp32']:11.5f}")
    tag = (card.replace(" ", "_").replace("/", "_") + ("_fused_qkv" if args.fused_qkv else "")
           + (f"_{args.tag}" if args.tag else ""))
    out = HERE / "results" / f"e2e_encoder_{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, key, label in ((axes[0], "latency_ms", "eager latency (ms)"),
                           (axes[1], "graph_latency_ms", "CUDA-graph latency (ms)"),
                           (axes[2], "peak_mem_MB", "peak memory (MB)")):
        for i, batch in enumerate((1, 8)):
            sub = [r for r in rows if r["batch"] == batch]
            ax.bar([j + 0.4 * i for j in range(len(sub))], [r[key] for r in sub], 0.4, label=f"batch {batch}")
            ax.set_xticks([j + 0.2 for j in range(len(sub))], [r["variant"] for r in sub])
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle(f"BERT-base-sized encoder, seq {SEQ}, {card}")
    fig.tight_layout()
    png = HERE / "plots" / f"e2e_encoder_{tag}.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    print(f"wrote {out} and {png}")


if __name__ == "__main__":
    main()
