"""Every Triton FP4 GEMV and small-M GEMM config on the issue's four shapes, beside the
autotuner's pick and bf16 F.linear (issue 11: the Triton path at M <= 16).

Each config of apt_ext.triton.fp4_gemv.configs() (M <= 16) and fp4_gemm.configs() (split-K
tiles of 16+ rows) is timed two ways: `eager_ms`, triton.testing.do_bench (host-timed, L2
flushed, median): what an eager caller sees, Triton's Python launcher included once it is
slower than do_bench's flush; and `gpu_ms`, apt_ext.triton.autotune.gpu_ms (CUDA graph, L2
flushed, flushes subtracted): the kernels' own time, which the autotuner ranks by. Then the
tuned pick of the path fp4_linear takes (APT_TRITON_GEMV_MAX_M decides GEMV or GEMM), timed both
ways. Accuracy beside speed: each config's output against the first config's (equal up to
float32 summation order) and the relative error of the pick against the bf16 layer.

    python benchmarks/fp4_triton_configs.py                      # M = 1, 4 and 16, the four shapes
    python benchmarks/fp4_triton_configs.py --ms 1 --shapes 4096x14336
    python benchmarks/fp4_triton_configs.py --ms 1 --gemv-bases 16x2048x8x4,8x4096x8x4   # candidates to try
Writes benchmarks/results/fp4_triton_configs_<card>[_<tag>].json.
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


def base_list(text: str) -> list[tuple[int, int, int, int]]:
    """'16x2048x8x4,8x4096x8x4' -> [(16, 2048, 8, 4), (8, 4096, 8, 4)]: (BLOCK_N, BLOCK_K, num_warps,
    num_stages); BLOCK_N, BLOCK_K and num_warps powers of 2, BLOCK_K at least 64, num_stages at least 1."""
    bases = []
    for part in filter(None, text.split(",")):
        try:
            base = tuple(int(v) for v in part.split("x"))
        except ValueError:
            base = ()
        if len(base) != 4 or any(v < 1 or v & (v - 1) for v in base[:3]) or base[1] < 64 or base[3] < 1:
            raise argparse.ArgumentTypeError(f"--gemv-bases: expected BLOCK_NxBLOCK_KxWARPSxSTAGES "
                                             f"(the first three powers of 2, BLOCK_K >= 64, STAGES >= 1), got {part!r}")
        bases.append(base)
    return bases


def run_case(n: int, k: int, m: int, device: str = "cuda", extra_bases: list[tuple[int, ...]] = ()) -> dict:
    """Every GEMV (M <= 16) and small-M GEMM config at (N, K, M), and GEMV configs of
    ``extra_bases`` (timed here only, not tuner candidates); the tuned pick; bf16."""
    import triton

    from apt_ext.fp4 import quantize
    from apt_ext.triton import autotune, fp4_gemm, fp4_gemv
    from apt_ext.triton import fp4_linear as tri
    from apt_ext.triton.fp4_decode import scales_as_raw

    dev = torch.device(device)
    w = torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02
    x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    q = quantize(w, "nvfp4")
    kp = q.packed.shape[1] * 2
    args = (q.packed, scales_as_raw(q.scales, q.fmt), q.tensor_scale.reshape(()).float(), None, q.fmt,
            q.block_size, False)
    families = [("gemm", fp4_gemm.gemm, fp4_gemm.configs(triton.next_power_of_2(m), n, kp, dev))]
    if m <= fp4_gemv.GEMV_MAX_M:
        families.insert(0, ("gemv", fp4_gemv.gemv, fp4_gemv.configs(n, kp, dev, tuple(extra_bases))))
    rows = []
    first = None
    for family, fn, cands in families:
        for cfg in cands:
            y = fn(x, *args, config=cfg).float()  # compiles before timing
            first = y if first is None else first
            rows.append({"family": family, "config": config_dict(cfg),
                         "max_abs_diff_vs_first_config": float((y - first).abs().max()),
                         "eager_ms": bench(lambda fn=fn, cfg=cfg: fn(x, *args, config=cfg), quick=False),
                         "gpu_ms": autotune.gpu_ms(lambda fn=fn, cfg=cfg: fn(x, *args, config=cfg), dev)})
    autotune.clear()  # a fresh pick, as a new process makes it
    canonical = (q.packed, q.scales, q.tensor_scale, None, q.fmt, q.block_size)  # linear() converts the scales
    y = tri.linear(x, *canonical)
    picked = {key[0]: config_dict(v) for key, v in autotune.tuned().items()}
    ref = F.linear(x, w).float()
    return {"N": n, "K": k, "M": m, "gemv_max_m": tri.gemv_max_m(), "configs": rows, "pick": picked,
            "pick_eager_ms": bench(lambda: tri.linear(x, *canonical), quick=False),
            "pick_gpu_ms": autotune.gpu_ms(lambda: tri.linear(x, *canonical), dev),
            "bf16_eager_ms": bench(lambda: F.linear(x, w), quick=False),
            "bf16_gpu_ms": autotune.gpu_ms(lambda: F.linear(x, w), dev),
            "rel_err_vs_bf16": float((y.float() - ref).norm() / ref.norm())}


def print_case(case: dict) -> None:
    best = min(case["configs"], key=lambda r: r["gpu_ms"])
    print(f"\n{case['N']}x{case['K']} M={case['M']}: bf16 {case['bf16_eager_ms'] * 1e3:.1f} us eager / "
          f"{case['bf16_gpu_ms'] * 1e3:.1f} us GPU; pick {case['pick']} {case['pick_eager_ms'] * 1e3:.1f} / "
          f"{case['pick_gpu_ms'] * 1e3:.1f} us, rel. error {case['rel_err_vs_bf16']:.4f}")
    for r in case["configs"]:
        mark = " <- best" if r is best else ""
        print(f"  {r['family']} {r['config']}: {r['eager_ms'] * 1e3:7.1f} eager / {r['gpu_ms'] * 1e3:7.1f} GPU us{mark}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ms", type=int_list, default=[1, 4, 16], help="comma-separated rows of x (1..64)")
    ap.add_argument("--shapes", type=shape_list, default=SHAPES, help="comma-separated NxK weight shapes")
    ap.add_argument("--tag", default="", help="suffix of the JSON name")
    ap.add_argument("--gemv-bases", type=base_list, default=[],
                    help="extra GEMV bases to time, comma-separated BLOCK_NxBLOCK_KxWARPSxSTAGES (e.g. 16x2048x8x4)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("fp4_triton_configs: needs a CUDA GPU")
    if any(not 1 <= m <= 64 for m in args.ms):
        sys.exit("fp4_triton_configs: --ms must lie within 1..64 (the small-M tiles' rows)")
    out = HERE / "results" / f"fp4_triton_configs_{card_name()}{'_' + args.tag if args.tag else ''}.json"
    res = {"benchmark": "fp4_triton_configs", "card": torch.cuda.get_device_name(), "torch": torch.__version__,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "command": " ".join([sys.executable, *sys.argv]), "format": "nvfp4", "x_dtype": "bfloat16", "cases": []}
    for (n, k), m in tqdm([(s, m) for m in args.ms for s in args.shapes], desc="shapes x M"):
        res["cases"].append(run_case(n, k, m, extra_bases=args.gemv_bases))
        print_case(res["cases"][-1])
        out.write_text(json.dumps(res, indent=1))  # after every case: a run cut short keeps what it measured
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
