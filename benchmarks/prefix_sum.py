"""The running sum of autopoietic attention's prefix mean (apt_ext/model/prefix_sum.py) on one GPU:
torch.cumsum over dim 1 against blocked_cumsum (both with ATen's autograd, whose cumsum backward
flips the gradient around a scan) and against prefix_sum and the custom op apt_model::prefix_sum
(since the twenty-second session one Triton pass each way where triton is installed; before,
the blocked forward and a backward as the total minus the running sum: suffix_sum), forward and
forward + backward, float32 [B, T, D] at the model benchmark's size (B 8, T 1024, D 768) and at T 4096.

    python benchmarks/prefix_sum.py

Median milliseconds of CUDA-event timings (20 warm-up calls, 200 timed); the largest
difference between the two results is recorded beside the times.
Writes benchmarks/results/prefix_sum_<card>.json.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_common import run_meta, save_json  # noqa: E402

from apt_ext.model.prefix_sum import blocked_cumsum, prefix_sum  # noqa: E402

SHAPES = [(8, 1024, 768), (8, 4096, 768)]


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
        rows.append(row)
        print(row)
    out = save_json(f"prefix_sum_{torch.cuda.get_device_name(device).replace(' ', '_')}",
                    {"meta": run_meta(device), "rows": rows})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
