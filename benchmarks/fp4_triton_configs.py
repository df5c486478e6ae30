"""Every Triton FP4 GEMV config on the issue's four shapes, timed twice in one run, beside the
autotuner's pick and bf16 F.linear (issue 11: the Triton path at M <= 16).

apt_ext/triton/autotune.py times each candidate of apt_ext.triton.fp4_gemv.configs() once, at the
first call of a shape, and keeps the fastest. Two runs of the same code picked different configs
(docs/fp4_gpu.md, "Eleventh session") and the slower pick cost up to 2.8x. This script shows
whether the candidates' times are stable and which config is really best: every config is timed
in two passes (triton.testing.do_bench, L2 flushed, median of 100 ms), then the autotuner's pick
for a fresh key. Accuracy beside speed: each config's output against the first config's (all must
agree up to float32 summation order) and the relative error against the bf16 layer.

    python benchmarks/fp4_triton_configs.py                      # M = 1 and 16, the four shapes
    python benchmarks/fp4_triton_configs.py --ms 1 --shapes 4096x14336
Writes benchmarks/results/fp4_triton_configs_<card>.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys

import torch
import torch.nn.functional as F
from tqdm import tqdm

from fp4_linear import HERE, SHAPES, bench, card_name, int_list, shape_list


def config_dict(cfg) -> dict:
    """A triton.Config as plain JSON."""
    return {**cfg.kwargs, "num_warps": cfg.num_warps, "num_stages": cfg.num_stages}


def run_case(n: int, k: int, m: int, passes: int, device: str = "cuda") -> dict:
    """Every GEMV config at (N, K, M), ``passes`` times each; the autotuner's pick; bf16."""
    from apt_ext.fp4 import quantize
    from apt_ext.triton import autotune
    from apt_ext.triton import fp4_linear as tri
    from apt_ext.triton.fp4_decode import scales_as_raw
    from apt_ext.triton.fp4_gemv import configs, gemv

    w = torch.randn(n, k, device=device, dtype=torch.bfloat16) * 0.02
    x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
    q = quantize(w, "nvfp4")
    args = (q.packed, scales_as_raw(q.scales, q.fmt), q.tensor_scale.reshape(()).float(), None, q.fmt,
            q.block_size, False)
    ref = F.linear(x, w).float()
    cands = configs(n, q.packed.shape[1] * 2, x.device)
    first = gemv(x, *args, config=cands[0]).float()
    rows = []
    for cfg in cands:
        y = gemv(x, *args, config=cfg).float()  # compiles before timing
        rows.append({"config": config_dict(cfg),
                     "max_abs_diff_vs_first_config": float((y - first).abs().max()),
                     "ms": [bench(lambda cfg=cfg: gemv(x, *args, config=cfg), quick=False) for _ in range(passes)]})
    autotune.clear()  # a fresh pick, as a new process makes it
    canonical = (q.packed, q.scales, q.tensor_scale, None, q.fmt, q.block_size)  # linear() converts the scales
    y = tri.linear(x, *canonical)
    picked = next(v for key, v in autotune.tuned().items() if key[0] == "fp4_gemv")
    return {"N": n, "K": k, "M": m, "configs": rows, "autotune_pick": config_dict(picked),
            "autotune_pick_ms": bench(lambda: tri.linear(x, *canonical), quick=False),
            "bf16_ms": bench(lambda: F.linear(x, w), quick=False),
            "rel_err_vs_bf16": float((y.float() - ref).norm() / ref.norm())}


def print_case(case: dict) -> None:
    best = min(case["configs"], key=lambda r: min(r["ms"]))
    print(f"\n{case['N']}x{case['K']} M={case['M']}: bf16 {case['bf16_ms'] * 1e3:.1f} us, autotune pick "
          f"{case['autotune_pick']} {case['autotune_pick_ms'] * 1e3:.1f} us, rel. error {case['rel_err_vs_bf16']:.4f}")
    for r in case["configs"]:
        mark = " <- best" if r is best else ""
        times = " / ".join(f"{t * 1e3:7.1f}" for t in r["ms"])
        print(f"  {r['config']}: {times} us{mark}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ms", type=int_list, default=[1, 16], help="comma-separated rows of x (1..16)")
    ap.add_argument("--shapes", type=shape_list, default=SHAPES, help="comma-separated NxK weight shapes")
    ap.add_argument("--passes", type=int, default=2, help="timings of each config (at least 1)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("fp4_triton_configs: needs a CUDA GPU")
    if args.passes < 1 or any(not 1 <= m <= 16 for m in args.ms):
        sys.exit("fp4_triton_configs: --passes must be >= 1 and --ms within 1..16 (the GEMV's rows)")
    out = HERE / "results" / f"fp4_triton_configs_{card_name()}.json"
    res = {"benchmark": "fp4_triton_configs", "card": torch.cuda.get_device_name(), "torch": torch.__version__,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "command": " ".join([sys.executable, *sys.argv]), "format": "nvfp4", "x_dtype": "bfloat16", "cases": []}
    for (n, k), m in tqdm([(s, m) for m in args.ms for s in args.shapes], desc="shapes x M"):
        res["cases"].append(run_case(n, k, m, args.passes))
        print_case(res["cases"][-1])
        out.write_text(json.dumps(res, indent=1))  # after every case: a run cut short keeps what it measured
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
