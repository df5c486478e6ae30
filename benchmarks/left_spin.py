"""Left-spin residual: apt CUDA, apt Triton, eager reference and torch.compile(reference),
side by side, forward and forward+backward, in one run.

GPU (default when CUDA is available), bf16, (rows, D) in (16384, 4096), (65536, 1024),
(8192, 8192); timings are triton.testing.do_bench medians. Achieved bandwidth counts the
bytes each implementation must move at least: forward reads u, du, du_prev and writes out
(4 tensors; phi_prev/phi are one float per row and left out); forward+backward adds reading
u, du, du_prev, grad_out and writing the three input gradients (11 tensors). The card's copy
bandwidth (torch copy_ of a 1 GiB buffer, read + write) and the plain residual u + du
(3 tensors, forward only) are measured in the same run as the floor.

Also timed, per shape: the residual site under bf16 autocast (float32 u beside bf16 du and
du_prev), the op on the bf16 tensors as they are against casting them to float32 first, with
the largest difference between the two forms' outputs and gradients ("autocast_site" in the JSON).

CPU mode (--device cpu) uses smaller shapes and the median of repeated wall-clock timings
(apt CPU vs eager and torch.compile of the reference).

    python benchmarks/left_spin.py            # full GPU run (about 2-3 minutes)
    python benchmarks/left_spin.py --quick    # one shape
    python benchmarks/left_spin.py --device cpu [--quick] [--no-compile] [--threads 1]

Writes benchmarks/results/left_spin_<device>_<timestamp>.json and
benchmarks/plots/left_spin_<device>.png.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

import apt_ext  # noqa: F401  (registers torch.ops.apt.*)
from apt_ext import _native

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from reference import left_spin as ref  # noqa: E402  (the plain-PyTorch definition: the eager baseline)

from machine_info import cpu_model  # noqa: E402  (benchmarks/machine_info.py, beside this script)
GPU_SHAPES = [(16384, 4096), (65536, 1024), (8192, 8192)]
CPU_SHAPES = [(2048, 1024), (512, 4096), (256, 8192)]
PARAMS = tuple(ref.DEFAULTS.values())
FWD_TENSORS, FWD_BWD_TENSORS = 4, 11
PLAIN = "plain u + du (no gate)"


def _time_gpu(fn: Callable[[], object], quick: bool) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=10 if quick else 25, rep=50 if quick else 150,
                                         return_mode="median"))


def _time_cpu(fn: Callable[[], object], quick: bool) -> float:
    fn()
    reps = 5 if quick else 15
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def copy_bandwidth_gbs(device: str, quick: bool) -> float:
    """Read + write bandwidth of copy_ (GB/s, 1 GB = 1e9 bytes): 1 GiB on the GPU; 32 MiB on
    the CPU, about the working set of the CPU shapes (which may sit partly in the L3 cache)."""
    n = (1 << 30) if device == "cuda" else (1 << 25)
    src = torch.empty(n, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    timer = _time_gpu if device == "cuda" else _time_cpu
    ms = timer(lambda: dst.copy_(src), quick)
    return 2 * n / (ms * 1e-3) / 1e9


def autograd_fb(fwd: Callable) -> Callable:
    """forward(u, du, dp, pp) -> forward_backward(u, du, dp, pp, go, gphi): the forward, then
    autograd's four input gradients for the output gradients go, gphi."""
    def run(u, du, dp, pp, go, gphi):
        out, phi = fwd(u, du, dp, pp)
        return torch.autograd.grad((out, phi), (u, du, dp, pp), (go, gphi))
    return run


def _implementations(device: str, use_compile: bool) -> dict[str, tuple[Callable, Callable | None] | str]:
    """name -> (forward(u, du, dp, pp), forward_backward(u, du, dp, pp, go, gphi)) or a reason
    it is unavailable. forward_backward returns the four input gradients."""
    impls: dict[str, tuple[Callable, Callable | None] | str] = {}
    op_fwd = lambda u, du, dp, pp: torch.ops.apt.left_spin_residual(u, du, dp, pp, *PARAMS)  # noqa: E731
    if device == "cuda":
        cuda_built = bool(_native.build_info().get("cuda")) and _native.has_kernel("left_spin_residual", "CUDA")
        if not cuda_built:
            impls["apt CUDA"] = "apt_ext built without CUDA kernels"
        elif os.environ.get("APT_FORCE_TRITON") == "1":
            impls["apt CUDA"] = "APT_FORCE_TRITON=1"
        else:
            impls["apt CUDA"] = (op_fwd, autograd_fb(op_fwd))
        try:
            from apt_ext.triton import left_spin as tls

            tri_fwd = lambda u, du, dp, pp: tls.left_spin_residual(u, du, dp, pp, *PARAMS)  # noqa: E731

            def tri_fb(u, du, dp, pp, go, gphi):  # the kernels autograd would run, called directly
                tls.left_spin_residual(u, du, dp, pp, *PARAMS)
                return tls.left_spin_residual_backward(go, gphi, u, du, dp, pp, *PARAMS)

            impls["apt Triton"] = (tri_fwd, tri_fb)
        except ImportError as exc:
            impls["apt Triton"] = f"triton unavailable: {exc}"
    else:
        impls["apt CPU"] = (op_fwd, autograd_fb(op_fwd))
    eager = lambda u, du, dp, pp: ref.left_spin_residual(u, du, dp, pp)  # noqa: E731
    impls["eager reference"] = (eager, autograd_fb(eager))
    if use_compile:
        compiled = torch.compile(ref.left_spin_residual, dynamic=False)
        comp = lambda u, du, dp, pp: compiled(u, du, dp, pp)  # noqa: E731
        impls["torch.compile(reference)"] = (comp, autograd_fb(comp))
    else:
        impls["torch.compile(reference)"] = "skipped (--no-compile)"
    # Not an alternative but the floor: the plain residual moves 3 tensors (forward only).
    impls[PLAIN] = (lambda u, du, dp, pp: torch.add(u, du), None)
    return impls


def run(args: argparse.Namespace) -> dict:
    device = args.device
    shapes = (GPU_SHAPES if device == "cuda" else CPU_SHAPES)[: 1 if args.quick else None]
    timer = _time_gpu if device == "cuda" else _time_cpu
    dtype = torch.bfloat16
    impls = _implementations(device, not args.no_compile)
    copy_gbs = copy_bandwidth_gbs(device, args.quick)
    results = []
    jobs = [(s, n, m) for s in shapes for n in impls for m in ("forward", "forward+backward")]
    gen = torch.Generator().manual_seed(0)
    cache: dict = {}
    for shape, name, mode in tqdm(jobs, desc="left_spin bench", unit="case"):
        if shape not in cache:
            cache.clear()
            if device == "cuda":
                torch.cuda.empty_cache()
            u, du, dp, pp = ref.make_inputs(shape, dtype, device, True, True, gen, requires_grad=True)
            go = torch.randn(shape, generator=gen).to(device, dtype)
            gphi = torch.randn(shape[:-1], generator=gen).to(device)
            cache[shape] = (u, du, dp, pp, go, gphi)
        u, du, dp, pp, go, gphi = cache[shape]
        row = {"shape": list(shape), "impl": name, "mode": mode}
        impl = impls[name]
        if isinstance(impl, str):
            row["skipped"] = impl
        else:
            fwd, fb = impl
            if mode == "forward":
                with torch.no_grad():
                    ms = timer(lambda: fwd(u, du, dp, pp), args.quick)
                n_tensors = 3 if name == PLAIN else FWD_TENSORS
            elif fb is None:
                row["skipped"] = "forward only"
                results.append(row)
                continue
            else:
                ms = timer(lambda: fb(u, du, dp, pp, go, gphi), args.quick)
                n_tensors = FWD_BWD_TENSORS
            nbytes = n_tensors * u.numel() * u.element_size()
            row.update(ms=ms, gbs=nbytes / (ms * 1e-3) / 1e9, bytes=nbytes)
        results.append(row)
    return {"copy_gbs": copy_gbs, "results": results,
            "autocast_site": autocast_site(shapes, device, timer, args.quick, gen)}


# Minimum bytes per element of a float32-u / bf16-du site: forward reads u (4), du and du_prev
# (2 each) and writes out (4); forward+backward also reads u, du, du_prev, grad_out (4) and
# writes grad_u (4), grad_du and grad_du_prev (2 each).
SITE_BYTES = {"forward": 12, "forward+backward": 32}


def autocast_site(shapes: list[tuple[int, int]], device: str, timer: Callable, quick: bool,
                  gen: torch.Generator) -> list[dict]:
    """The residual site under bf16 autocast (float32 stream u, bf16 branch output du): the op on
    du / du_prev as they are, against casting them to float32 first (what the model did before
    the op took 16-bit du), forward and forward+backward, with the two forms' largest difference."""
    def as_is(u, du, dp, pp):
        return torch.ops.apt.left_spin_residual(u, du, dp, pp, *PARAMS)

    def cast_first(u, du, dp, pp):
        return torch.ops.apt.left_spin_residual(u, du.float(), dp.float(), pp, *PARAMS)

    forms = {"bf16 du as is": as_is, "du cast to float32 first": cast_first}
    rows = []
    for shape in tqdm(shapes, desc="autocast site", unit="shape"):
        u, du, dp, pp = ref.make_inputs(shape, torch.float32, device, True, True, gen, requires_grad=True,
                                        du_dtype=torch.bfloat16)
        go = torch.randn(shape, generator=gen).to(device)
        gphi = torch.randn(shape[:-1], generator=gen).to(device)
        outs = {}
        for name, fwd in forms.items():
            fb = autograd_fb(fwd)
            with torch.no_grad():
                outs[name] = fwd(u, du, dp, pp)
            outs[name] += fb(u, du, dp, pp, go, gphi)
            for mode, fn in (("forward", lambda fwd=fwd: fwd(u, du, dp, pp)),
                             ("forward+backward", lambda fb=fb: fb(u, du, dp, pp, go, gphi))):
                with torch.set_grad_enabled(mode != "forward"):
                    ms = timer(fn, quick)
                nbytes = SITE_BYTES[mode] * u.numel()
                rows.append({"shape": list(shape), "impl": name, "mode": mode, "ms": ms, "bytes": nbytes,
                             "gbs": nbytes / (ms * 1e-3) / 1e9})
        a, b = outs.values()
        diffs = {k: float((x.float() - y.float()).abs().max())
                 for k, x, y in zip(("out", "phi", "grad_u", "grad_du", "grad_du_prev", "grad_phi_prev"), a, b)}
        rows.append({"shape": list(shape), "max_abs_diff_between_forms": diffs})
    return rows


def ratio_table(results: list[dict], base_impl: str, ours: list[str]) -> list[str]:
    lines = [f"{'shape':>14} {'mode':>17} " + " ".join(f"{n:>26}" for n in ours)]
    by_key = {(tuple(r["shape"]), r["mode"], r["impl"]): r for r in results}
    for shape, mode in dict.fromkeys((tuple(r["shape"]), r["mode"]) for r in results):
        base = by_key.get((shape, mode, base_impl), {})
        cells = []
        for n in ours:
            r = by_key.get((shape, mode, n), {})
            if "ms" in r and "ms" in base:
                cells.append(f"{base['ms'] / r['ms']:>25.2f}x")
            else:
                cells.append(f"{'-':>26}")
        lines.append(f"{str(shape):>14} {mode:>17} " + " ".join(cells))
    return lines


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in data["results"] if "gbs" in r]
    shapes = list(dict.fromkeys(tuple(r["shape"]) for r in results))
    names = list(dict.fromkeys(r["impl"] for r in results))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), sharey=True)
    width = 0.8 / max(1, len(names))
    for ax, mode in zip(axes, ("forward", "forward+backward")):
        for i, n in enumerate(names):
            vals = [next((r["gbs"] for r in results if tuple(r["shape"]) == s and r["impl"] == n
                          and r["mode"] == mode), 0.0) for s in shapes]
            ax.bar([k + i * width for k in range(len(shapes))], vals, width, label=n)
        ax.axhline(data["copy_gbs"], color="k", ls="--", lw=1, label="copy_ bandwidth")
        ax.set_xticks([k + width * (len(names) - 1) / 2 for k in range(len(shapes))])
        ax.set_xticklabels([f"{r}x{d}" for r, d in shapes])
        ax.set_title(f"left_spin_residual {mode} (bf16)")
        ax.set_xlabel("rows x D")
    axes[0].set_ylabel("achieved GB/s (minimum bytes moved / time)")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"{data['meta']['device_name']} | torch {data['meta']['torch']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"),
                   default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="one shape, fewer repetitions")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile(reference)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice); 1 avoids OpenMP "
                        "oversubscription on a shared machine")
    p.add_argument("--out-dir", type=Path, default=HERE)
    args = p.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            p.error("--threads: expected a positive number")
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA GPU visible")
    data = run(args)
    now = dt.datetime.now(dt.timezone.utc)
    data["meta"] = {
        "date": now.isoformat(timespec="seconds"),
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else cpu_model(),
        "cpu_threads": torch.get_num_threads(),
        "host": platform.node(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "dtype": "bfloat16",
        "bytes_counted": "forward 4 tensors (u, du, du_prev read; out written); forward+backward 11",
        "autocast_site_bytes_per_element": SITE_BYTES,
    }
    ours = [n for n in ("apt CUDA", "apt Triton", "apt CPU") if any(r["impl"] == n for r in data["results"])]
    print(f"\ncopy_ bandwidth: {data['copy_gbs']:.0f} GB/s")
    print(f"{'shape':>14} {'mode':>17} {'impl':>26} {'ms':>9} {'GB/s':>8} {'% copy':>7}")
    for r in data["results"]:
        if "ms" in r:
            print(f"{str(tuple(r['shape'])):>14} {r['mode']:>17} {r['impl']:>26} {r['ms']:>9.3f} "
                  f"{r['gbs']:>8.0f} {100 * r['gbs'] / data['copy_gbs']:>6.0f}%")
        else:
            print(f"{str(tuple(r['shape'])):>14} {r['mode']:>17} {r['impl']:>26}  skipped: {r['skipped']}")
    for base in ("torch.compile(reference)", "eager reference"):
        print(f"\nspeed-up over {base} (its time / ours):")
        print("\n".join(ratio_table(data["results"], base, ours)))
    print("\nautocast site (float32 u, bf16 du, du_prev): the op on bf16 du against casting du first")
    print("\n".join(ratio_table([r for r in data["autocast_site"] if "ms" in r], "du cast to float32 first",
                                 ["bf16 du as is"])))
    res_dir, plot_dir = args.out_dir / "results", args.out_dir / "plots"
    res_dir.mkdir(parents=True, exist_ok=True)
    plot_dir.mkdir(parents=True, exist_ok=True)
    out = res_dir / f"left_spin_{args.device}_{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(data, indent=1))
    plot(data, plot_dir / f"left_spin_{args.device}.png")
    print(f"\nwrote {out} and {plot_dir / f'left_spin_{args.device}.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
