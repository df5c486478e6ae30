"""The GEMV's fused RMSNorm prologue and residual epilogue against the same work as separate
kernels, on the four projections of a Llama-3-8B decoder layer (nvfp4 unless ``--fmt``, bf16 x), in one
run.

Per projection and rows of x, four ways:
- ``plain``: the tiled op alone (x taken as already normalised, no residual): the GEMV's own time;
- ``composite``: what a model runs without fusion: ``F.rms_norm`` then the op, or the op then
  ``+ residual``;
- ``fused``: the op with ``rms_eps`` / ``residual`` (``FP4Linear.fused`` / ``swiglu``'s kernel);
- ``handoff``: the norm handoff: the norm GEMVs take x's sums of squares in parts (``rms_sumsq``,
  made before the timing, as the residual GEMV before them hands them over) instead of summing
  x's squares; the residual GEMVs also return their output's sums (``return_sumsq``).
Above 8 rows of x the SwiGLU op runs its norm ahead of the GEMV (ATen's RMSNorm, docs/fp4_gpu.md),
so there gate/up's fused and handoff columns time that route, not the kernel's own norm.

Projections: qkv 6144 x 4096 (norm), o 4096 x 4096 (residual), gate/up 28672 x 4096 in the SwiGLU
order (norm + SwiGLU), down 4096 x 14336 (residual). On CUDA each way is timed as ``--calls``
calls on as many copies of the weight (so they stream from memory, not L2) replayed from one CUDA
graph: GPU time per call; fused - plain is what the fusion adds to the GEMV, composite - fused what
it saves. Accuracy: relative difference of fused from composite, and of each from a float64
reference of the first copy.

    python benchmarks/fp4_norm_fusion.py             # rows 1 and 16 on a GPU
    python benchmarks/fp4_norm_fusion.py --fmt nf4   # another weight format
    python benchmarks/fp4_norm_fusion.py --profile-once gate_up --ms 16   # each way's call once, for
                                                     # Nsight Compute (gpu_session's ncu_norm_fusion)
    python benchmarks/fp4_norm_fusion.py --cpu       # tiny shapes, eager, on the CPU (the tests)
Writes benchmarks/results/fp4_norm_fusion_<machine>.json (``_<fmt>`` added for mxfp4 and nf4).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
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
from e2e_decoder import capture_graph, median_s, replay_seconds  # noqa: E402

from apt_ext.fp4 import FORMAT_NAMES, quantize  # noqa: E402
from apt_ext.fp4.tiled import TiledFP4Weight, sumsq_parts, tile  # noqa: E402
from reference import fp4 as ref  # noqa: E402  (the float64 definitions the tests use)

EPS = 1e-5
WAYS = ("plain", "composite", "fused", "handoff")
# name: (N, K, what is fused: "norm", "residual" or "norm_swiglu")
PROJECTIONS = {"qkv": (6144, 4096, "norm"), "o": (4096, 4096, "residual"),
               "gate_up": (28672, 4096, "norm_swiglu"), "down": (4096, 14336, "residual")}
CPU_PROJECTIONS = {"qkv": (96, 64, "norm"), "o": (64, 64, "residual"), "gate_up": (128, 64, "norm_swiglu"),
                   "down": (64, 160, "residual")}


def way(name: str, kind: str, w: TiledFP4Weight, x_sumsq: torch.Tensor):
    """fn(x [M, K], residual [M, N]) -> output of one way (module docstring); x_sumsq: x's sums of
    squares in parts, for ``handoff``."""
    n, k = w.shape
    if kind == "norm_swiglu":
        if name == "plain":
            return lambda x, r: w.swiglu_linear(x)
        if name == "composite":
            return lambda x, r: w.swiglu_linear(F.rms_norm(x, (k,), eps=EPS))
        if name == "handoff":
            return lambda x, r: w.swiglu_linear(x, rms_eps=EPS, rms_sumsq=x_sumsq)
        return lambda x, r: w.swiglu_linear(x, rms_eps=EPS)
    if name == "plain":
        return lambda x, r: w.linear(x)
    if kind == "norm":
        if name == "composite":
            return lambda x, r: w.linear(F.rms_norm(x, (k,), eps=EPS))
        if name == "handoff":
            return lambda x, r: w.linear(x, rms_eps=EPS, rms_sumsq=x_sumsq)
        return lambda x, r: w.linear(x, rms_eps=EPS)
    if name == "composite":
        return lambda x, r: r + w.linear(x)
    if name == "handoff":
        return lambda x, r: w.linear(x, residual=r, return_sumsq=True)[0]
    return lambda x, r: w.linear(x, residual=r)


def reference(kind: str, q, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """float64 output of the fused computation for the first copy (q: its FP4Weight)."""
    xin = ref.rms_normalized(x, EPS) if kind.startswith("norm") else x.double()
    y = ref.linear(xin, q.packed, q.scales, q.tensor_scale, None, q.fmt, q.block_size)
    if kind == "norm_swiglu":
        gate, up = y.chunk(2, -1)
        return F.silu(gate) * up
    return y + r.double() if kind == "residual" else y


def time_gpu(fns, iters: int) -> tuple[float, torch.Tensor]:
    """(median GPU seconds per call of the calls ``fns`` replayed from one CUDA graph, first output)."""
    graph, outs = capture_graph(lambda: [fn() for fn in fns], warmups=3)
    return replay_seconds(graph, iters) / len(fns), outs[0]


def time_cpu(fns, iters: int) -> tuple[float, torch.Tensor]:
    """(median wall seconds per call, eager, first output)."""
    secs, outs = median_s(lambda: [fn() for fn in fns], torch.device("cpu"), iters)
    return secs / len(fns), outs[0]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double().cpu() - b.double().cpu()).norm() / b.double().cpu().norm())


def random_weight(n: int, k: int, fmt: str, device: torch.device, g: torch.Generator):
    """A random n x k weight quantised to ``fmt`` (an FP4Weight on ``device``)."""
    return quantize((torch.randn(n, k, generator=g) * 0.02).to(device), fmt)


def random_inputs(m: int, k: int, n_out: int, device: torch.device, dtype: torch.dtype, g: torch.Generator):
    """(x [m, k], residual [m, n_out], x's sums of squares in parts) for one row count."""
    x = (torch.randn(m, k, generator=g) * 3).to(device, dtype)
    return x, torch.randn(m, n_out, generator=g).to(device, dtype), sumsq_parts(x)


def profile_once(proj: str, fmt: str, ms: list[int], device: torch.device, dtype: torch.dtype) -> None:
    """One call of each way, in WAYS order, on one weight of projection ``proj`` for each row count in
    ``ms`` (on CUDA inside an NVTX range "<proj> m=<M> <way>"), for a profiler to capture; no timing."""
    n, k, kind = (CPU_PROJECTIONS if device.type == "cpu" else PROJECTIONS)[proj]
    g = torch.Generator().manual_seed(0)
    w = tile(random_weight(n, k, fmt, device, g), swiglu=kind == "norm_swiglu")
    n_out = n // 2 if kind == "norm_swiglu" else n
    for m in ms:
        x, r, x_sumsq = random_inputs(m, k, n_out, device, dtype, g)
        for name in WAYS:
            label = f"{proj} m={m} {name}"
            if device.type == "cuda":
                torch.cuda.nvtx.range_push(label)
            way(name, kind, w, x_sumsq)(x, r)
            if device.type == "cuda":
                torch.cuda.nvtx.range_pop()
                torch.cuda.synchronize()
            print(f"profiled {label}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cpu", action="store_true", help="tiny shapes, eager, on the CPU")
    ap.add_argument("--ms", default="1,16", help="comma-separated rows of x")
    ap.add_argument("--fmt", default="nvfp4", choices=FORMAT_NAMES, help="weight format (default nvfp4)")
    ap.add_argument("--profile-once", default=None, choices=tuple(PROJECTIONS), metavar="PROJECTION",
                    help="only one call of each way on this projection's weight (for Nsight Compute); no JSON")
    ap.add_argument("--calls", type=int, default=None, help="calls (weight copies) per timing (default 16, CPU 2)")
    ap.add_argument("--iters", type=int, default=None, help="timed repetitions (default 50, CPU 3)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/fp4_norm_fusion_<machine>.json)")
    args = ap.parse_args(argv)
    ms = [int(m) for m in args.ms.split(",")]
    if any(m < 1 for m in ms):
        ap.error(f"--ms: expected positive integers, got {args.ms!r}")
    gpu = torch.cuda.is_available() and not args.cpu
    if not gpu and not args.cpu:
        ap.error("needs a CUDA GPU (or --cpu)")
    device = torch.device("cuda" if gpu else "cpu")
    dtype = torch.bfloat16 if gpu else torch.float32
    calls = args.calls or (16 if gpu else 2)
    iters = args.iters or (50 if gpu else 3)
    if calls < 1 or iters < 1:
        ap.error("--calls and --iters: expected positive integers")
    if args.profile_once:
        profile_once(args.profile_once, args.fmt, ms, device, dtype)
        return 0
    timer = time_gpu if gpu else time_cpu
    machine = torch.cuda.get_device_name(0) if gpu else f"CPU {platform.machine()}"
    result = {"benchmark": "fp4_norm_fusion", "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine, "torch": torch.__version__, "command": " ".join([sys.executable, *sys.argv]),
              "fmt": args.fmt, "dtype": str(dtype).replace("torch.", ""), "eps": EPS, "calls_per_timing": calls,
              "iters": iters, "runs": []}
    tag = re.sub(r"[^A-Za-z0-9]+", "_", machine).strip("_").lower()
    suffix = "" if args.fmt == "nvfp4" else f"_{args.fmt}"  # nvfp4 keeps the earlier runs' name
    out = Path(args.out) if args.out else ROOT / "results" / f"fp4_norm_fusion_{tag}{suffix}.json"
    out.parent.mkdir(exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for proj, (n, k, kind) in tqdm((CPU_PROJECTIONS if args.cpu else PROJECTIONS).items(), desc="projections"):
        q = random_weight(n, k, args.fmt, device, g)
        first = tile(q, swiglu=kind == "norm_swiglu")
        copies = [first] + [TiledFP4Weight(first.tiles.clone(), first.tile_scales.clone(), first.out_scale.clone(),
                                           first.fmt, first.shape, first.swiglu) for _ in range(calls - 1)]
        n_out = n // 2 if kind == "norm_swiglu" else n
        for m in ms:
            x, r, x_sumsq = random_inputs(m, k, n_out, device, dtype, g)
            want = reference(kind, q, x, r)
            row = {"projection": proj, "n": n, "k": k, "fusion": kind, "m": m}
            outs = {}
            for name in WAYS:
                secs, outs[name] = timer([lambda f=way(name, kind, w, x_sumsq): f(x, r) for w in copies], iters)
                row[name] = {"us": secs * 1e6}
                if name != "plain":
                    row[name]["rel_err_vs_float64"] = rel(outs[name], want)
            row["fused_rel_diff_vs_composite"] = rel(outs["fused"], outs["composite"])
            row["handoff_rel_diff_vs_fused"] = rel(outs["handoff"], outs["fused"])
            row["fused_minus_plain_us"] = row["fused"]["us"] - row["plain"]["us"]
            row["handoff_minus_plain_us"] = row["handoff"]["us"] - row["plain"]["us"]
            row["composite_minus_fused_us"] = row["composite"]["us"] - row["fused"]["us"]
            result["runs"].append(row)
            out.write_text(json.dumps(result, indent=1))  # after every row: a run cut short keeps its rows
            print(f"{proj} ({n}x{k}, {kind}) M={m}: " + ", ".join(f"{w} {row[w]['us']:.2f} us" for w in WAYS)
                  + f"; fused adds {row['fused_minus_plain_us']:.2f} us to the GEMV (handoff "
                  f"{row['handoff_minus_plain_us']:.2f}) and saves {row['composite_minus_fused_us']:.2f} us against "
                  "the composite")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
