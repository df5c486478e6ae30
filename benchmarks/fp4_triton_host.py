"""Host time of the Triton FP4 path: where an eager ``fp4_linear`` call spends its CPU time.

Eagerly, a Triton call costs its host-side work (argument checks, the autotune cache lookup,
buffers, Triton's launcher per kernel) on top of its GPU time; when the host takes longer than
the GPU, the GPU waits and the host time is what a caller measures. This script enqueues CALLS
calls of each piece on a tiny weight (so the GPU is never the bottleneck), synchronises once,
and reports microseconds of host time per call, beside F.linear's; then profiles the full call
with cProfile. The Triton launches are timed both ways: through the bound kernel's launcher
(apt_ext.triton.launch, the default) and through Triton's JIT dispatch (``... (JIT launch)`` rows).

    python benchmarks/fp4_triton_host.py        # writes benchmarks/results/fp4_triton_host_<card>.json
"""
from __future__ import annotations

import cProfile
import datetime
import io
import json
import os
import platform
import pstats
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from fp4_linear import HERE, card_name  # benchmarks/fp4_linear.py (this script's folder is on sys.path)

CALLS = 300


@triton.jit
def _empty(a, b, c, d, e, f, g, h, i, j, k_, l_, m_, n_, o, BLOCK: tl.constexpr):
    """A launch with 15 tensor arguments and no work: Triton's launcher alone."""
    pass


def host_us(fn: Callable[[], object]) -> float:
    """Median over 5 rounds of (host seconds to enqueue CALLS calls of fn) / CALLS, microseconds."""
    fn()
    torch.cuda.synchronize()
    rounds = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(CALLS):
            fn()
        rounds.append((time.perf_counter() - t0) / CALLS * 1e6)
        torch.cuda.synchronize()
    return sorted(rounds)[2]


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("fp4_triton_host: needs a CUDA GPU")
    from apt_ext import _native
    from apt_ext.fp4 import quantize
    from apt_ext.triton import fp4_gemm, fp4_gemv, launch, split_k
    from apt_ext.triton import fp4_linear as tri
    from apt_ext.triton.fp4_decode import scales_as_raw

    n, k = 512, 512
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
    q = quantize(w, "nvfp4")
    x1 = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    x16 = torch.randn(16, k, device="cuda", dtype=torch.bfloat16)
    raw = scales_as_raw(q.scales, "nvfp4")
    ts = q.tensor_scale.reshape(()).float()
    args = (q.packed, raw, ts, None, "nvfp4", q.block_size, False)
    gemv_cfg = {c.kwargs["SPLIT_K"]: c for c in fp4_gemv.configs(n, 2 * q.packed.shape[1], x1.device)}
    gemm_cfg = {c.kwargs["SPLIT_K"]: c for c in fp4_gemm.configs(16, n, 2 * q.packed.shape[1], x1.device)}
    out = torch.empty((1, n), dtype=torch.bfloat16, device="cuda")

    pieces: dict[str, Callable[[], object]] = {
        "F.linear bf16 M=1": lambda: F.linear(x1, w),
        "apt_ext.triton fp4_linear M=1 (tuned)": lambda: tri.fp4_linear(x1, q.packed, q.scales, q.tensor_scale,
                                                                      None, "nvfp4", q.block_size),
        "apt_ext.triton fp4_linear M=16 (tuned)": lambda: tri.fp4_linear(x16, q.packed, q.scales, q.tensor_scale,
                                                                       None, "nvfp4", q.block_size),
        "torch.ops.apt.fp4_linear M=1 (tuned; the Triton kernel under APT_FORCE_TRITON=1)":
            lambda: torch.ops.apt.fp4_linear(x1, q.packed, q.scales, q.tensor_scale, None, "nvfp4", q.block_size),
        "native check_linear": lambda: _native._C.fp4.check_linear(x1, q.packed, q.scales, q.tensor_scale, None,
                                                                   "nvfp4", q.block_size),
        "scales_as_raw + tensor_scale reshape": lambda: (scales_as_raw(q.scales.contiguous(), "nvfp4"),
                                                         q.tensor_scale.reshape(()).to(torch.float32)),
        "torch.empty [1, N]": lambda: torch.empty((1, n), dtype=torch.bfloat16, device="cuda"),
        "split_k.workspace (partials; the stream's counters)": lambda: split_k.workspace(4, 1, n, 16, out),
        "torch.zeros [16] int32 (fresh counters, as before the thirty-first session)":
            lambda: torch.zeros(16, dtype=torch.int32, device="cuda"),
        "empty Triton kernel, 15 args": lambda: _empty[(1,)](*([x1] * 15), BLOCK=16),
    }
    for split, cfg in sorted(gemv_cfg.items()):
        pieces[f"gemv M=1 SPLIT_K={split}"] = lambda cfg=cfg: fp4_gemv.gemv(x1, *args, config=cfg)
    for split, cfg in sorted(gemm_cfg.items()):
        pieces[f"gemm M=16 SPLIT_K={split}"] = lambda cfg=cfg: fp4_gemm.gemm(x16, *args, config=cfg)
    launched = [name for name in pieces if "fp4_linear" in name or name.startswith(("gemv", "gemm"))]
    with torch.inference_mode():
        rows = {name: host_us(fn) for name, fn in pieces.items()}
        launch.set_direct_launch(False)
        rows.update({f"{name} (JIT launch)": host_us(pieces[name]) for name in launched})
        launch.set_direct_launch(True)
        prof = cProfile.Profile()
        fn = pieces["apt_ext.triton fp4_linear M=1 (tuned)"]
        prof.enable()
        for _ in range(CALLS):
            fn()
        prof.disable()
        torch.cuda.synchronize()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(25)
    for name, us in rows.items():
        print(f"{name:45s} {us:8.1f} us")
    print(text.getvalue())
    res = {"card": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "host": platform.node(), "command": " ".join([sys.executable, *sys.argv]), "weight": [n, k],
           "calls": CALLS, "apt_force_triton": os.environ.get("APT_FORCE_TRITON") == "1", "host_us_per_call": rows, "cprofile_fp4_linear_m1_by_tottime": text.getvalue()}
    out_path = HERE / "results" / f"fp4_triton_host_{card_name()}.json"
    out_path.write_text(json.dumps(res, indent=1))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
