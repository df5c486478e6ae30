"""Tuning sweep of the tiled FP4 GEMV (csrc/fp4/fp4_gemv_kernel_cuda.h, its launch shapes chosen in
csrc/fp4/fp4_gemv_cuda.cu) on one GPU, in one run.

Each launch variant APT_FP4_GEMV="rw,kw,stages[,mt[,xm[,balance[,evict_first[,tw[,min_steps]]]]]]" (warps
along N per block, K parts per tile, pipeline depth, x rows per block in tiles of 8 (1, 2, 4; 0 the
heuristic's), how x is read: 0 through L1 double-buffered, 1 with one x buffer and more blocks per
SM, 2 one chunk at a time, 3 one buffer refilled chunk by chunk a step ahead, 4 the same from a copy of x packed so that each
load reads 512 contiguous bytes, -1 the heuristic's; balance (default 1): warps per block chosen to
spread blocks evenly over the SMs; evict_first (default 1): weights loaded with L2 evict_first; tw:
tiles per warp, 1 or 2, 0 the heuristic's; rw = kw = 0 keeps the heuristic's; min_steps: the fewest K
steps the heuristic leaves a K part, 0 its own 4: lower lets it split short K, e.g. 768 columns, 6
steps), optionally with
"@step" (the tiles and scales copied step-major: at each step all tiles' blocks are adjacent, so
warps that advance together read one contiguous region), "+gemm=MIN_ROWS,K_PARTS[,SPLITS[,TILES_PER_WARP[,ROWS[,MMA[,J_GROUP[,WORKERS]]]]]]"
(APT_FP4_GEMM: from MIN_ROWS rows of x the tiled GEMM of csrc/fp4/fp4_gemm_tiled_cuda.cu instead
of the GEMV; MMA 1, 2 and 3 its wgmma forms, on sm_90a builds; SPLITS -1 its stream-K form, with MMA 2
or 3, -2 the same with a whole number of blocks per output block where they fit, at most WORKERS
where given, -3 the same in thread-block clusters (MMA 3, J_GROUP 2); J_GROUP 2 its two
wgmma slices per commit group)
and/or "#nf4" / "#mxfp4" (the weight format; default nvfp4) runs in its own child process (a
fresh process per variant, nothing shared between them) and times
torch.ops.apt.fp4_linear_tiled (bf16 x) on the issue's four shapes (or --shapes); the parent times bf16
F.linear and the canonical fp4_linear op on the same shapes, the card's copy bandwidth, and a read
floor per shape: `torch.sum` of a float32 buffer as large as the packed weight and its scales (what
a plain streaming read of those bytes costs, launch and ramp included).
Prints, per variant, shape and M: microseconds, weight GB/s (packed codes + scales read once /
time), % of copy bandwidth and speed-up over bf16, and per variant the largest relative error
(Frobenius norm, against float32 x @ the dequantised weight; `rel_err` in the JSON). Three timings per case: `us` is do_bench's
(L2 flushed by *writing* 256 MB before every call, so the kernel also pays for writing back up
to an L2's worth of dirty lines), `us_clean` flushes L2 by *reading* 256 MB instead (clean
lines: only the kernel's own traffic), `us_warm` is a CUDA graph of calls back to back with no
flush (a weight that fits in L2 is read from there: what an L2 prefetch ahead of the call could
reach at best).

    python benchmarks/fp4_gemv_sweep.py                 # every variant
    python benchmarks/fp4_gemv_sweep.py --variants 'default;4,2,4;default@step;2,4,4,1;default#nf4'
    python benchmarks/fp4_gemv_sweep.py --ms 32,64,128 --variants 'default;default+gemm=17,2;default+gemm=17,1'
    python benchmarks/fp4_gemv_sweep.py --shapes 768x768,3072x768,768x3072 --ms 128,1024 --variants default
Writes benchmarks/results/fp4_gemv_sweep_<card>[_<tag>].json. Notes: docs/fp4_gpu_notes.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

SHAPES = [(4096, 4096), (14336, 4096), (4096, 14336), (28672, 8192)]
MS = [1, 4, 16]
VARIANTS = (["default"] + [f"{rw},{kw},{s}" for s in (4, 2) for rw, kw in ((8, 1), (4, 2), (2, 4), (1, 8))]
            + [f"{rw},{kw},4,1" for rw, kw in ((4, 2), (2, 4), (1, 8))])
HERE = Path(__file__).resolve().parent


def bench_us(fn) -> float:
    """Median microseconds (triton do_bench: CUDA events, L2 flushed before every call)."""
    from triton.testing import do_bench

    return 1e3 * float(do_bench(fn, warmup=20, rep=60, return_mode="median"))


_FLUSH: list[torch.Tensor] = []


def bench_clean_us(fn, reps: int = 40) -> float:
    """Median microseconds with L2 evicted by a 256 MB read (no dirty lines) before every call."""
    if not _FLUSH:
        _FLUSH.append(torch.randn(64 << 20, device="cuda"))
    flush = _FLUSH[0]
    fn()
    times = []
    for _ in range(reps):
        flush.sum()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(1e3 * start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def bench_warm_us(fn) -> float:
    """Microseconds per call of a CUDA graph of calls back to back, no flush: a weight that fits
    in L2 stays there (what a kernel would see if the weight were prefetched into L2 before it)."""
    from apt_ext.triton.autotune import gpu_ms

    return 1e3 * gpu_ms(fn, torch.device("cuda"), cold_l2=False)


def weight(n: int, k: int) -> torch.Tensor:
    g = torch.Generator(device="cuda").manual_seed(n * 31 + k)
    return torch.randn(n, k, device="cuda", dtype=torch.bfloat16, generator=g) * 0.02


def step_major(t: torch.Tensor) -> torch.Tensor:
    """The same [tiles, steps, ...] view of a copy stored step by step (dims 0 and 1 swapped in memory)."""
    return t.transpose(0, 1).contiguous().transpose(0, 1)


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """'NxK[,NxK...]' -> [(N, K), ...], each a positive weight shape (rows, columns)."""
    shapes = []
    for item in text.split(","):
        dims = item.lower().split("x")
        if len(dims) != 2 or not all(d.isdigit() and int(d) > 0 for d in dims):
            raise ValueError(f"expected NxK[,NxK...] with positive integers, got {item!r} in {text!r}")
        shapes.append((int(dims[0]), int(dims[1])))
    return shapes


def child(ms: list[int], order: str, fmt: str, shapes: list[tuple[int, int]]) -> dict:
    """Times fp4_linear_tiled (this process's APT_FP4_GEMV) on every shape and M for a weight in
    format fmt; order 'tile' (as fp4_tile makes it) or 'step' (a step-major copy)."""
    import apt_ext  # noqa: F401
    from apt_ext.fp4 import quantize
    from apt_ext.fp4.tiled import tile

    out = {}
    for n, k in shapes:
        q = quantize(weight(n, k), fmt)
        t = tile(q)
        if order == "step":
            t = dataclasses.replace(t, tiles=step_major(t.tiles), tile_scales=step_major(t.tile_scales))
        nbytes = t.tiles.numel() + t.tile_scales.numel() * t.tile_scales.element_size()
        w = q.dequantize(torch.float32)
        for m in ms:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            ref = F.linear(x.float(), w)
            err = float((t.linear(x).float() - ref).norm() / ref.norm())
            torch.cuda.synchronize()
            us = bench_us(lambda: t.linear(x))
            clean = bench_clean_us(lambda: t.linear(x))
            warm = bench_warm_us(lambda: t.linear(x))
            out[f"{n}x{k}/{m}"] = {"us": us, "GBs": nbytes / (us * 1e-6) / 1e9, "us_clean": clean,
                                   "GBs_clean": nbytes / (clean * 1e-6) / 1e9, "us_warm": warm, "rel_err": err}
        del w
    return out


def profile_once(m: int, n: int, k: int) -> None:
    """One call per storage order on an n x k weight with m rows of x (for a profiler to capture)."""
    import apt_ext  # noqa: F401
    from apt_ext.fp4 import quantize
    from apt_ext.fp4.tiled import tile

    t = tile(quantize(weight(n, k), "nvfp4"))
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    for order in ("tile", "step"):
        u = t if order == "tile" else dataclasses.replace(t, tiles=step_major(t.tiles),
                                                          tile_scales=step_major(t.tile_scales))
        u.linear(x)
        torch.cuda.synchronize()
        print(f"profiled order={order}", flush=True)


def parent(variants: list[str], ms: list[int], shapes: list[tuple[int, int]]) -> dict:
    import apt_ext  # noqa: F401
    from apt_ext.fp4 import quantize

    src = torch.empty(1 << 29, dtype=torch.float16, device="cuda").normal_()
    dst = torch.empty_like(src)
    copy_gbs = 2 * src.numel() * 2 / (bench_us(lambda: dst.copy_(src)) * 1e-6) / 1e9
    del src, dst
    base = {}
    for n, k in shapes:
        w = weight(n, k)
        q = quantize(w, "nvfp4")
        floor_buf = torch.randn((q.packed.numel() + q.scales.numel()) // 4, device="cuda")
        floor_us = bench_us(lambda: floor_buf.sum())
        floor_clean = bench_clean_us(lambda: floor_buf.sum())
        del floor_buf
        for m in ms:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            base[f"{n}x{k}/{m}"] = {
                "bf16_us": bench_us(lambda: F.linear(x, w)),
                "bf16_us_clean": bench_clean_us(lambda: F.linear(x, w)),
                "bf16_us_warm": bench_warm_us(lambda: F.linear(x, w)),
                "canonical_us": bench_us(lambda: torch.ops.apt.fp4_linear(x, q.packed, q.scales, q.tensor_scale,
                                                                          None, "nvfp4", 16)),
                "read_floor_us": floor_us,
                "read_floor_us_clean": floor_clean,
            }
        del w, q
    torch.cuda.empty_cache()
    runs = {}
    for v in variants:
        env = dict(os.environ)
        env.pop("APT_FP4_GEMV", None)
        env.pop("APT_FP4_GEMM", None)
        rest, _, fmt = v.partition("#")
        rest, _, gemm = rest.partition("+gemm=")
        launch, _, order = rest.partition("@")
        if launch != "default":
            env["APT_FP4_GEMV"] = launch
        if gemm:
            env["APT_FP4_GEMM"] = gemm
        proc = subprocess.run([sys.executable, __file__, "--child", "--ms", ",".join(map(str, ms)),
                               "--shapes", ",".join(f"{n}x{k}" for n, k in shapes),
                               "--order", order or "tile", "--format", fmt or "nvfp4"], env=env,
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            runs[v] = {"error": (proc.stderr or proc.stdout)[-800:]}
            print(f"variant {v}: FAILED\n{runs[v]['error']}", flush=True)
            continue
        runs[v] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"variant {v}: done", flush=True)
    return {"copy_bandwidth_GBs": copy_gbs, "baseline": base, "variants": runs}


def print_table(res: dict) -> None:
    copy = res["copy_bandwidth_GBs"]
    print(f"\ncopy bandwidth (1 GiB d2d, read+write): {copy:.0f} GB/s")
    keys = list(res["baseline"])
    print(f"{'variant':>10} | " + " | ".join(f"{k:>18}" for k in keys))
    for name in ("bf16", "canonical"):
        print(f"{name:>10} | " + " | ".join(f"{res['baseline'][k][name + '_us']:8.1f}us {'':8}" for k in keys))
    for label, name in (("bf16 clean", "bf16_us_clean"), ("bf16 warm", "bf16_us_warm")):
        if name in res["baseline"][keys[0]]:
            print(f"{label:>10} | " + " | ".join(f"{res['baseline'][k][name]:8.1f}us {'':8}" for k in keys))
    for name in ("read_floor_us", "read_floor_us_clean"):
        if name in res["baseline"][keys[0]]:
            label = "floor" + (" clean" if name.endswith("clean") else "")
            print(f"{label:>10} | " + " | ".join(f"{res['baseline'][k][name]:8.1f}us {'':8}" for k in keys))
    titles = {"": "do_bench (L2 flushed by a write)", "_clean": "L2 flushed by a read (us_clean)",
              "_warm": "L2 warm: a CUDA graph of calls back to back (us_warm; the % is of the flushed GB/s' bytes)"}
    for suffix, title in titles.items():
        print("\n" + title)
        for v, r in res["variants"].items():
            if "error" in r:
                print(f"{v:>10} | FAILED")
                continue
            cells = []
            for k in keys:
                c = r[k]
                if "us" + suffix not in c or "bf16_us" + suffix not in res["baseline"][k]:  # before us_warm
                    cells.append(f"{'-':>18}")
                    continue
                us = c["us" + suffix]
                gbs = c["GBs"] * c["us"] / us
                base = res["baseline"][k]["bf16_us" + suffix]
                cells.append(f"{us:6.1f}us {100 * gbs / copy:3.0f}% {base / us:4.2f}x")
            worst = max(r[k].get("rel_err", float("nan")) for k in keys)
            print(f"{v:>10} | " + " | ".join(cells) + f" | max rel. err {worst:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variants", default=None,
                    help="';'-separated list of 'default' or "
                         "'rw,kw,stages[,mt[,xm[,balance[,evict_first[,tw[,min_steps]]]]]]', "
                         "each optionally '@step' and/or '#nf4' / '#mxfp4' (default: the full sweep)")
    ap.add_argument("--ms", default=",".join(map(str, MS)), help="comma-separated rows of x")
    ap.add_argument("--shapes", default=",".join(f"{n}x{k}" for n, k in SHAPES),
                    help="comma-separated weight shapes NxK (default: the issue's four; e.g. the BERT-base "
                         "encoder's 768x768,3072x768,768x3072)")
    ap.add_argument("--tag", default="", help="suffix of the JSON file name (one file per tuning round)")
    ap.add_argument("--order", choices=("tile", "step"), default="tile", help=argparse.SUPPRESS)
    ap.add_argument("--format", choices=("nvfp4", "mxfp4", "nf4"), default="nvfp4", help=argparse.SUPPRESS)
    ap.add_argument("--profile-once", action="store_true",
                    help="run --profile-shape once per storage order (tile, step) with the first of --ms "
                         "rows of x, and exit: for ncu")
    ap.add_argument("--profile-shape", default="x".join(map(str, SHAPES[-1])),
                    help="NxK, the weight --profile-once runs (default: the largest shape)")
    args = ap.parse_args()
    ms = [int(v) for v in args.ms.split(",")]
    try:
        shapes = parse_shapes(args.shapes)
        profile_shape = parse_shapes(args.profile_shape)
    except ValueError as e:
        ap.error(f"--shapes / --profile-shape: {e}")
    if len(profile_shape) != 1:
        ap.error(f"--profile-shape: expected one NxK, got {args.profile_shape!r}")
    if args.child:
        print(json.dumps(child(ms, args.order, args.format, shapes)))
        return
    if args.profile_once:
        profile_once(ms[0], *profile_shape[0])
        return
    if not torch.cuda.is_available():
        sys.exit("fp4_gemv_sweep: needs a CUDA GPU")
    variants = VARIANTS if args.variants is None else args.variants.split(";")
    res = parent(variants, ms, shapes)
    res.update(card=torch.cuda.get_device_name(), torch=torch.__version__,
               date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               command=" ".join([sys.executable, *sys.argv]))
    print_table(res)
    card = torch.cuda.get_device_name().replace(" ", "_")
    out = HERE / "results" / f"fp4_gemv_sweep_{card}{'_' + args.tag if args.tag else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
