"""The running sum of autopoietic attention's prefix mean (apt_ext/model/prefix_sum.py) on one GPU:
torch.cumsum over dim 1 against blocked_cumsum (both with ATen's autograd, whose cumsum backward
flips the gradient around a scan) and against prefix_sum and the custom op apt_model::prefix_sum
(since the twenty-second session one Triton pass each way where triton is installed; before,
the blocked forward and a backward as the total minus the running sum: suffix_sum), forward and
forward + backward, float32 [B, T, D] at the model benchmark's size (B 8, T 1024, D 768) and at T 4096.
Also the training step's whole prefix mean, the op apt_model::prefix_mean (``prefix_mean``, one
Triton pass each way; also on bf16 x, what the step passes under autocast since the twenty-third
session) against the earlier path (prefix_sum, then the division by the counts), and the Triton
pass's chunk shapes (rows x features per program) forward, against the defaults; and on bf16 x
the pass as the training step calls it (forward: mean and total; backward: the reverse mean from
a total) with each chunk's sums scanned in registers (the default) or taken as a tensor-core
product with a triangle of ones (``scan(matmul=True)``) at several chunk shapes, timed inside a
CUDA graph with a cold L2 (as the compiled step replays it; per-call event timing of a 20-50 us
kernel also counts its host launch), each with its largest difference from float64.

    python benchmarks/prefix_sum.py

Median milliseconds of CUDA-event timings (20 warm-up calls, 200 timed); the largest
difference between the two results is recorded beside the times.
Writes benchmarks/results/prefix_sum_<card>.json.
"""
from __future__ import annotations

import functools
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_common import run_meta, save_json  # noqa: E402

from apt_ext.model.prefix_sum import blocked_cumsum, prefix_mean, prefix_sum  # noqa: E402

try:
    from apt_ext.triton.autotune import gpu_ms
    from apt_ext.triton.prefix_sum import scan
except ImportError:  # no triton: the ops run their ATen paths, no chunk shapes to time
    scan = None

SHAPES = [(8, 1024, 768), (8, 4096, 768)]
# (rows per chunk, features per program) of the Triton pass, timed side by side (the default:
# BLOCK_T x MAX_BLOCK_D of apt_ext/triton/prefix_sum.py)
CHUNKS = [(64, 32), (128, 16), (256, 16), (128, 32), (32, 32), (64, 16)]
# (rows per chunk, features per program) of the matmul form, timed beside the default scan
MATMUL_CHUNKS = [(64, 16), (64, 32), (128, 16), (32, 32), (64, 64), (32, 16)]


def mean_by_sum(x: torch.Tensor) -> torch.Tensor:
    """The prefix mean as before the twenty-second session: the running sum, then the counts."""
    counts = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=torch.float32).view(1, -1, 1)
    return (prefix_sum(x) / counts).to(x.dtype)


def time_ms(fn, warmup: int = 20, iters: int = 200) -> float:
    """Median milliseconds of fn() over ``iters`` calls, each timed by CUDA events."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def step_pass_rows(x: torch.Tensor) -> dict:
    """The training step's two passes on bf16 x (x: float32 [B, T, D]), default scan against the
    matmul form at MATMUL_CHUNKS: microseconds per call in a CUDA graph with a cold L2
    (apt_ext.triton.autotune.gpu_ms) and the largest difference from float64, keyed by variant
    ("scan" or "matmul BTxBD")."""
    xb = x.detach().bfloat16()
    t = x.shape[1]
    counts = torch.arange(1, t + 1, device=x.device, dtype=torch.float64).view(1, t, 1)
    want_m = torch.cumsum(xb.double(), dim=1) / counts
    init = torch.randn(x.shape[0], x.shape[2], device=x.device)
    want_g = torch.cumsum((xb.double() / counts).flip(1), dim=1).flip(1) + init.double().unsqueeze(1)
    variants = [("scan", {})] + [(f"matmul {bt}x{bd}", dict(block_t=bt, block_d=bd, matmul=True))
                                 for bt, bd in MATMUL_CHUNKS]
    out: dict = {f"triton_bf16_{d}_graph_us_by_variant": {} for d in ("forward", "backward")}
    out |= {f"max_abs_err_bf16_{d}_by_variant": {} for d in ("forward", "backward")}
    for name, kw in variants:
        fwd = functools.partial(scan, xb, mean=True, with_total=True, **kw)
        bwd = functools.partial(scan, xb, reverse=True, mean=True, init=init, **kw)
        for direction, fn, want in (("forward", fwd, want_m), ("backward", bwd, want_g)):
            out[f"triton_bf16_{direction}_graph_us_by_variant"][name] = gpu_ms(fn, x.device) * 1e3
            out[f"max_abs_err_bf16_{direction}_by_variant"][name] = float((fn()[0].double() - want).abs().max())
    return out


def main() -> int:
    if not torch.cuda.is_available():
        print("prefix_sum.py needs a CUDA GPU", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    rows = []
    for shape in SHAPES:
        x = torch.randn(shape, device=device, requires_grad=True)
        g = torch.randn(shape, device=device)
        row = {"shape": list(shape)}
        ref = torch.cumsum(x.detach().double(), dim=1)
        ref_grad = torch.cumsum(g.double().flip(1), dim=1).flip(1)
        variants = (("cumsum", lambda t: torch.cumsum(t, dim=1)), ("blocked", blocked_cumsum),
                    ("prefix_sum", prefix_sum), ("op", torch.ops.apt_model.prefix_sum.default))
        for name, fn in variants:
            with torch.no_grad():
                row[f"{name}_forward_ms"] = time_ms(lambda: fn(x))
            row[f"{name}_forward_backward_ms"] = time_ms(lambda: torch.autograd.grad(fn(x), x, g))
            with torch.no_grad():
                row[f"max_abs_err_{name}"] = float((fn(x).double() - ref).abs().max())
            (grad,) = torch.autograd.grad(fn(x), x, g)
            row[f"max_abs_grad_err_{name}"] = float((grad.double() - ref_grad).abs().max())
        ref_mean = ref / torch.arange(1, shape[1] + 1, device=device, dtype=torch.float64).view(1, -1, 1)
        xb = x.detach().bfloat16().requires_grad_(True)
        for name, fn, xin in (("prefix_mean", lambda t: prefix_mean(t)[0], x), ("mean_by_sum", mean_by_sum, x),
                              ("prefix_mean_bf16", lambda t: prefix_mean(t)[0], xb)):
            gin = g.to(xin.dtype)
            with torch.no_grad():
                row[f"{name}_forward_ms"] = time_ms(lambda: fn(xin))
                row[f"max_abs_err_{name}"] = float((fn(xin).double() - ref_mean).abs().max())
            row[f"{name}_forward_backward_ms"] = time_ms(lambda: torch.autograd.grad(fn(xin), xin, gin))
        if scan is not None:
            with torch.no_grad():
                row["triton_mean_forward_ms_by_chunk"] = {
                    f"{bt}x{bd}": time_ms(lambda: scan(x, mean=True, with_total=True, block_t=bt, block_d=bd))
                    for bt, bd in CHUNKS}
            row |= step_pass_rows(x)
        rows.append(row)
        print(row)
    out = save_json(f"prefix_sum_{torch.cuda.get_device_name(device).replace(' ', '_')}",
                    {"meta": run_meta(device), "rows": rows})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
