"""FP4 linear on one GPU: apt_ext (CUDA and Triton) against the alternatives, side by side.

Times y = x @ W.T for bf16 x [M, K] and W [N, K] with:
  apt-tiled-{nvfp4,mxfp4,nf4} torch.ops.apt.fp4_linear_tiled on the tiled copy of the weight
                              (what apt_ext.nn.FP4Linear runs on CUDA for inference up to 64
                              rows, 128 for nvfp4 / mxfp4 with bf16 x, on Hopper 384 for those on
                              weights with 8192+ columns, 512 on weights with 8192+ rows)
  apt-cuda-{nvfp4,mxfp4,nf4}  torch.ops.apt.fp4_linear on the canonical tensors (CUDA build;
                              small-M kernel up to APT_FP4_SMALL_M_MAX rows, else dequantise +
                              cuBLAS; what FP4Linear runs above those rows or with gradients)
  apt-deq+cublas-nvfp4        apt fp4_dequantize to bf16 + F.linear (the large-M path alone)
  apt-triton-{nvfp4,mxfp4,nf4} apt_ext.triton.fp4_linear.fp4_linear (the APT_FORCE_TRITON path and
                              the path without the CUDA build: split-K GEMV up to 16 rows, tiled
                              tl.dot GEMM above; autotuned at its first call per shape, and the
                              chosen configs are written to the JSON)
  torch-bf16                  F.linear with a bf16 weight (cuBLAS), the baseline of every ratio
  tinygemm-int4-g128          torch._weight_int4pack_mm, group 128
  bnb-fp4 / bnb-nf4           bitsandbytes matmul_4bit (blocksize 64)
Timings: triton.testing.do_bench median (it flushes L2 with a 256 MB write before every call,
so even the 9 MB weights of M=1 come from HBM), on random data; with --gpu-time also each
call's GPU time alone (apt_ext.triton.autotune.gpu_ms: a CUDA graph of L2 flush + call, the
flushes subtracted: what a CUDA-graph decoder sees, without the host's launch work). Also
measures the card's copy bandwidth (large device-to-device copy, bytes read + written), the time
of a one-element kernel (the timing's fixed cost: a launch and no work) and, per row, each
method's achieved weight bandwidth (its weight bytes read once / time) and its percentage of
the copy bandwidth; and the accuracy of each FP4 format (relative error of y against the bf16
layer).

    python benchmarks/fp4_linear.py            # full: 4 shapes x M in {1, 2, 4, 8, 16, 32, 64, 128, 4096}
    python benchmarks/fp4_linear.py --quick    # 2 shapes x M in {1, 16, 4096}
    python benchmarks/fp4_linear.py --ms 1,4096 --methods torch-bf16,apt-triton-nvfp4 --tag triton
                                               # the Triton path's goal check, 4 shapes (issue 11)
    python benchmarks/fp4_linear.py --ms 1,2,4,16 --gpu-time --methods torch-bf16,apt-triton-nvfp4 --tag triton_small
                                               # also GPU time per call (gpu_ms, gpu_speedup_vs_bf16)
Writes benchmarks/results/fp4_linear_<card>[_<tag>].json and benchmarks/plots/fp4_linear_<card>[_<tag>].png.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

SHAPES = [(4096, 4096), (14336, 4096), (4096, 14336), (28672, 8192)]
MS = [1, 2, 4, 8, 16, 32, 64, 128, 4096]
QUICK_SHAPES = [(4096, 4096), (28672, 8192)]
QUICK_MS = [1, 16, 4096]
HERE = Path(__file__).resolve().parent


def card_name() -> str:
    return torch.cuda.get_device_name().replace(" ", "_").replace("/", "_")


def bench(fn: Callable[[], object], quick: bool) -> float:
    """Median milliseconds of fn() (triton.testing.do_bench: CUDA events, L2 flushed per call)."""
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=10 if quick else 25, rep=40 if quick else 100, return_mode="median"))


def copy_bandwidth_gbs() -> float:
    """Device-to-device copy of 1 GiB: (read + write bytes) / median time, GB/s."""
    src = torch.empty(1 << 29, dtype=torch.float16, device="cuda").normal_()
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src), quick=True)
    return 2 * src.numel() * src.element_size() / (ms * 1e-3) / 1e9


def int4_g128(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """tinygemm's asymmetric int4 quantisation of w [N, K] in groups of 128 columns (as torchao
    does it): codes int32 [N, K] in 0..15 and scales_and_zeros bf16 [K/128, N, 2] such that
    w ~ (code - 8) * scale + zero."""
    n, k = w.shape
    wg = w.float().reshape(n, k // 128, 128)
    lo, hi = wg.amin(-1), wg.amax(-1)
    scale = ((hi - lo) / 15).clamp_min(1e-8)
    codes = ((wg - lo[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.int32).reshape(n, k)
    sz = torch.stack([scale, lo + 8 * scale], -1).transpose(0, 1).contiguous().to(torch.bfloat16)
    return codes, sz


def make_methods(n: int, k: int) -> dict[str, tuple[Callable[[torch.Tensor], object] | None, str, int]]:
    """name -> (fn(x) or None, note, weight bytes) for every method of the module docstring."""
    import apt_ext  # noqa: F401
    from apt_ext import _native
    from apt_ext.fp4 import quantize
    from apt_ext.fp4.tiled import tile
    from apt_ext.triton import fp4_linear as tri

    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
    methods: dict[str, tuple] = {"torch-bf16": (lambda x: F.linear(x, w), "", w.numel() * 2)}
    has_cuda = bool(_native.build_info().get("cuda"))
    for fmt in ("nvfp4", "mxfp4", "nf4"):
        q = quantize(w, fmt)
        nbytes = q.packed.numel() + q.scales.numel() * q.scales.element_size()
        if has_cuda:
            t = tile(q)
            methods[f"apt-tiled-{fmt}"] = (lambda x, t=t: t.linear(x), "",
                                           t.tiles.numel() + t.tile_scales.numel() * t.tile_scales.element_size())
            methods[f"apt-cuda-{fmt}"] = (
                lambda x, q=q: torch.ops.apt.fp4_linear(x, q.packed, q.scales, q.tensor_scale, None, q.fmt,
                                                        q.block_size), "", nbytes)
        else:
            methods[f"apt-tiled-{fmt}"] = (None, "unavailable: apt_ext built without CUDA kernels", nbytes)
            methods[f"apt-cuda-{fmt}"] = (None, "unavailable: apt_ext built without CUDA kernels", nbytes)
        if fmt == "nvfp4":
            methods["apt-deq+cublas-nvfp4"] = (
                lambda x, q=q: F.linear(x, torch.ops.apt.fp4_dequantize(q.packed, q.scales, q.tensor_scale, q.fmt,
                                                                         q.block_size, x.dtype)[:, :k]), "", nbytes)
        methods[f"apt-triton-{fmt}"] = (
            lambda x, q=q: tri.fp4_linear(x, q.packed, q.scales, q.tensor_scale, None, q.fmt, q.block_size),
            "", nbytes)
    try:
        codes, sz = int4_g128(w)
        packed = ((codes[:, ::2] << 4) | codes[:, 1::2]).to(torch.uint8)
        wp = torch._convert_weight_to_int4pack(packed, 8)
        methods["tinygemm-int4-g128"] = (lambda x: torch._weight_int4pack_mm(x, wp, 128, sz), "",
                                         wp.numel() * wp.element_size() + sz.numel() * 2)
    except Exception as exc:  # the op's signature changes between torch versions
        methods["tinygemm-int4-g128"] = (None, f"unavailable: {type(exc).__name__}: {exc}"[:160], 0)
    try:
        import bitsandbytes as bnb
        import bitsandbytes.functional as bnbf

        for qt in ("fp4", "nf4"):
            qw, state = bnbf.quantize_4bit(w, blocksize=64, quant_type=qt)
            methods[f"bnb-{qt}"] = (lambda x, qw=qw, state=state: bnb.matmul_4bit(x, qw.t(), quant_state=state),
                                    f"bitsandbytes {bnb.__version__}", qw.numel() * qw.element_size())
    except Exception as exc:  # not installed, or no CUDA library for this card
        for qt in ("fp4", "nf4"):
            methods[f"bnb-{qt}"] = (None, f"unavailable: {type(exc).__name__}: {exc}"[:160], 0)
    return methods


def selected(methods: dict, wanted: list[str] | None) -> dict:
    """The methods named in ``wanted`` (a name or a prefix such as "apt-triton"); torch-bf16 always."""
    if not wanted:
        return methods
    return {name: v for name, v in methods.items()
            if name == "torch-bf16" or any(name == w or name.startswith(w + "-") for w in wanted)}


def run(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    from apt_ext.triton.autotune import gpu_ms

    shapes, ms = (QUICK_SHAPES, QUICK_MS) if args.quick else (SHAPES, MS)
    shapes, ms = args.shapes or shapes, args.ms or ms
    copy_gbs = copy_bandwidth_gbs()
    tiny = torch.zeros(1, device="cuda")
    floor = {"ms": bench(tiny.zero_, args.quick)}  # the timing's fixed cost: one launch, no work
    if args.gpu_time:
        floor["gpu_ms"] = gpu_ms(tiny.zero_, tiny.device)
    rows = []
    with torch.inference_mode():
        for n, k in tqdm(shapes, desc="shapes"):
            methods = selected(make_methods(n, k), args.methods)
            for m in ms:
                x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
                times = {}
                for name, (fn, note, nbytes) in methods.items():
                    if fn is None:
                        times[name] = {"ms": None, "note": note}
                        continue
                    try:
                        fn(x)
                        torch.cuda.synchronize()
                        t = bench(lambda: fn(x), args.quick)
                        times[name] = {"ms": t, "note": note}
                        if args.gpu_time:
                            times[name]["gpu_ms"] = gpu_ms(lambda: fn(x), x.device)
                        if nbytes:
                            times[name]["weight_GBs"] = nbytes / (t * 1e-3) / 1e9
                            times[name]["pct_copy_bw"] = 100 * times[name]["weight_GBs"] / copy_gbs
                    except Exception as exc:
                        times[name] = {"ms": None, "note": f"failed: {type(exc).__name__}: {exc}"[:160]}
                rows.append({"N": n, "K": k, "M": m, "times": times, "rel_err_vs_bf16": accuracy(methods, x)})
                del x
            del methods
            torch.cuda.empty_cache()
    return {"copy_bandwidth_GBs": copy_gbs, "one_element_kernel": floor, "rows": rows}


def accuracy(methods: dict, x: torch.Tensor) -> dict[str, float]:
    """||y - y_bf16|| / ||y_bf16|| of every method that ran (the quantisation error of its format)."""
    ref = methods["torch-bf16"][0](x).float()
    out = {}
    for name, (fn, _, _) in methods.items():
        if fn is not None and name != "torch-bf16":
            try:
                out[name] = float((fn(x).float() - ref).norm() / ref.norm())
            except Exception:  # reported as failed by the timing loop
                pass
    return out


def speedups(rows: list[dict]) -> None:
    """speedup_vs_bf16 (host-timed) and, where GPU time was measured, gpu_speedup_vs_bf16."""
    for r in rows:
        base = r["times"]["torch-bf16"]
        for v in r["times"].values():
            v["speedup_vs_bf16"] = base["ms"] / v["ms"] if (v["ms"] and base["ms"]) else None
            if v.get("gpu_ms") and base.get("gpu_ms"):
                v["gpu_speedup_vs_bf16"] = base["gpu_ms"] / v["gpu_ms"]


def geomean(vals: list[float]) -> float | None:
    vals = [v for v in vals if v]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else None


def geomeans(rows: list[dict], field: str = "speedup_vs_bf16") -> dict[str, dict[str, float]]:
    """{str(M): {method: geometric mean over the shapes of its ``field`` (a speed-up over bf16)}}."""
    out: dict[str, dict[str, float]] = {}
    for m in sorted({r["M"] for r in rows}):
        sub = [r for r in rows if r["M"] == m]
        out[str(m)] = {name: g for name in sub[0]["times"]
                       if (g := geomean([r["times"][name].get(field) for r in sub])) is not None}
    return out


def print_table(res: dict) -> None:
    names = list(res["rows"][0]["times"])
    print(f"\ncopy bandwidth (1 GiB d2d, read+write): {res['copy_bandwidth_GBs']:.0f} GB/s; a one-element kernel: "
          + ", ".join(f"{k} {v * 1e3:.1f} us" for k, v in res["one_element_kernel"].items()))
    print("time ms (speed-up over torch-bf16)")
    head = f"{'N':>6} {'K':>6} {'M':>5} | " + " | ".join(f"{n:>22}" for n in names)
    print(head)
    print("-" * len(head))
    for r in res["rows"]:
        cells = []
        for name in names:
            v = r["times"][name]
            cells.append(f"{'n/a':>22}" if v["ms"] is None else f"{v['ms']:9.4f} ({v['speedup_vs_bf16']:5.2f}x)".rjust(22))
        print(f"{r['N']:>6} {r['K']:>6} {r['M']:>5} | " + " | ".join(cells))
    print("\ngeometric mean speed-up over bf16 per M:")
    for m in sorted({r["M"] for r in res["rows"]}):
        sub = [r for r in res["rows"] if r["M"] == m]
        line = ", ".join(f"{name} {g:.2f}x" for name in names
                         if (g := geomean([r["times"][name].get("speedup_vs_bf16") for r in sub])) is not None)
        print(f"  M={m}: {line}")
    if "geomean_gpu_speedup_vs_bf16" in res:
        print("\nGPU time alone (CUDA graph, flushes subtracted), geometric mean speed-up over bf16 per M:")
        for m, by_name in res["geomean_gpu_speedup_vs_bf16"].items():
            print(f"  M={m}: " + ", ".join(f"{name} {g:.2f}x" for name, g in by_name.items()))
    print("\nachieved weight bandwidth at M<=16 (weight bytes / time), GB/s (% of copy bandwidth):")
    for r in res["rows"]:
        if r["M"] <= 16:
            line = ", ".join(f"{name} {v['weight_GBs']:.0f} ({v['pct_copy_bw']:.0f}%)"
                             for name, v in r["times"].items() if "weight_GBs" in v and name.startswith(("apt-tiled", "torch")))
            print(f"  ({r['N']},{r['K']}) M={r['M']}: {line}")
    print("\nrelative error of y vs the bf16 layer (first shape, M=1):")
    first = res["rows"][0]
    print("  " + ", ".join(f"{k} {v:.4f}" for k, v in first["rel_err_vs_bf16"].items()))
    notes = {name: v["note"] for r in res["rows"] for name, v in r["times"].items() if v.get("note")}
    for name, note in notes.items():
        print(f"  note {name}: {note}")


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in res["rows"][0]["times"] if n != "torch-bf16"]
    ms = sorted({r["M"] for r in res["rows"]})
    fig, axes = plt.subplots(1, len(ms), figsize=(5 * len(ms), 4.5), squeeze=False)
    for ax, m in zip(axes[0], ms):
        sub = [r for r in res["rows"] if r["M"] == m]
        labels = [f"{r['N']}x{r['K']}" for r in sub]
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            vals = [r["times"][name].get("speedup_vs_bf16") or 0.0 for r in sub]
            ax.bar([j + i * width for j in range(len(sub))], vals, width, label=name)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(sub))], labels, rotation=20, fontsize=8)
        ax.set_title(f"M={m}")
        ax.set_ylabel("speed-up over bf16 F.linear")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"fp4 linear, {res['card']}, torch {res['torch']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def triton_configs() -> list[dict]:
    """The configs apt_ext's Triton autotuner chose in this run, one entry per tuned key (a kernel
    config, or for the path choice between the GEMM and dequantise + torch.mm the path's name)."""
    from apt_ext.triton.autotune import tuned

    return [{"key": [str(v) for v in key],
             **({"path": cfg} if isinstance(cfg, str) else
                {"config": {**cfg.kwargs, "num_warps": cfg.num_warps, "num_stages": cfg.num_stages}})}
            for key, cfg in tuned().items()]


def int_list(text: str) -> list[int]:
    """"1,4096" -> [1, 4096]."""
    return [int(v) for v in text.split(",")]


def shape_list(text: str) -> list[tuple[int, int]]:
    """"4096x4096,28672x8192" -> [(4096, 4096), (28672, 8192)] as (N, K)."""
    try:
        return [(int(n), int(k)) for n, k in (item.split("x") for item in text.split(","))]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shapes: expected NxK[,NxK...], got {text!r}") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 shapes, M in {1, 16, 4096}, shorter timing")
    ap.add_argument("--ms", type=int_list, help="comma-separated rows of x (overrides the default or --quick set)")
    ap.add_argument("--shapes", type=shape_list, help="comma-separated NxK weight shapes (overrides the default)")
    ap.add_argument("--methods", type=lambda t: t.split(","),
                    help="comma-separated method names or prefixes to time (torch-bf16 always runs), "
                         "e.g. torch-bf16,apt-triton")
    ap.add_argument("--gpu-time", action="store_true",
                    help="also time each call's GPU time alone (CUDA graph, L2 flushed, flushes subtracted)")
    ap.add_argument("--tag", help="suffix of the JSON and PNG names, so a partial run keeps the full record")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("fp4_linear benchmark: needs a CUDA GPU")
    res = run(args)
    speedups(res["rows"])
    res["geomean_speedup_vs_bf16"] = geomeans(res["rows"])
    if args.gpu_time:
        res["geomean_gpu_speedup_vs_bf16"] = geomeans(res["rows"], "gpu_speedup_vs_bf16")
    card = card_name()
    res.update(card=torch.cuda.get_device_name(), torch=torch.__version__,
               date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               host=platform.node(), command=" ".join([sys.executable, *sys.argv]),
               small_m_max=os.environ.get("APT_FP4_SMALL_M_MAX", "default"),
               tinygemm_weights="int4 g128 quantised from W (int4_g128)", triton_configs=triton_configs())
    print_table(res)
    name = f"fp4_linear_{card}" + (f"_{args.tag}" if args.tag else "")
    out = HERE / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    png = HERE / "plots" / f"{name}.png"
    plot(res, png)
    print(f"\nwrote {out} and {png}")


if __name__ == "__main__":
    main()
