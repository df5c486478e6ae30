"""Training throughput of the APT model and the step-time cost of left-spin and autopoietic
attention, side by side in one run: four variants of the same model (plain residual + plain
attention; + left-spin; + autopoietic attention; + both), eager and (GPU mode) torch.compile.

One training step = forward + backward + AdamW step on random token batches (never zeros),
bf16 autocast on GPUs. Timed with CUDA events (median over the timed steps after warm-up) on
GPUs, perf_counter on CPUs.

    python benchmarks/model_throughput.py            # GPU mode (GPT-2-small-like, T=1024)
    python benchmarks/model_throughput.py --quick    # tiny CPU mode (checks the script runs)
    python benchmarks/model_throughput.py --variants plain,left-spin --profile   # + top kernels per config
    python benchmarks/model_throughput.py --compiled-only --variants plain,left-spin --interleave 6   # A/B, alternating
    python benchmarks/model_throughput.py --quick --compiled-only --count-kernels   # CPU: inductor's kernels

Compiled variants are built as apt_ext's Trainer builds them, with inductor's mix-order read cap
backported where torch lacks it (apt_ext.train.inductor_compat; --no-mix-order-cap: without).

Writes benchmarks/results/model_throughput[_quick].json and benchmarks/plots/model_throughput[_quick].png.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_common import plot_path, run_meta, save_json  # noqa: E402

from apt_ext.model import APTModel, APTModelConfiguration  # noqa: E402
from apt_ext.model.prefix_sum import prefix_sum  # noqa: E402
from apt_ext.train.inductor_compat import cap_mix_order_reads  # noqa: E402

VARIANTS = {"plain": (False, False), "left-spin": (True, False), "autopoietic": (False, True), "both": (True, True),
            "left-spin-cast-first": (True, False), "left-spin-op": (True, False),
            "left-spin-recompute-norms": (True, False),
            "autopoietic-sum-op": (False, True), "autopoietic-fused": (False, True)}
# Not in the default set, for A/B runs: left-spin-cast-first casts every site's bf16 branch output
# to the float32 residual stream's dtype before the op, as sites did before the twentieth session;
# left-spin-op compiles each site as the fused op (left_spin_compiled_form="op") where the other
# left-spin variants take the default, its math as torch operations for inductor to fuse with the
# kernels around them ("decomposed"; until the twenty-eighth session the A/B variant was
# left-spin-decomposed, against "op" as the default); left-spin-recompute-norms has the decomposed
# backward take the per-row norms again from u and du as before the thirty-second session,
# where the others' forward saves them (apt_ext/left_spin/decomposed.py);
# autopoietic-sum-op takes the training step's prefix mean as before the twenty-second session:
# the apt_model::prefix_sum op on a float32 copy of x, then the division by the counts (against the
# one apt_model::prefix_mean op, one Triton pass on CUDA, that autopoietic now runs). The
# twenty-second session's autopoietic-traced-sum (blocked_cumsum traced instead of the op) lost
# to the op (benchmarks/results/model_throughput_s22_auto.json) and is gone.
# autopoietic-fused runs q/k/v, the gate's W_g and U as one matmul of x in the training step
# (autopoietic_fused_projection=True, apt_ext/model/autopoietic.py) against the three the others
# run (slower on the H100 in the thirtieth session: benchmarks/results/model_throughput_s30_graphs.json,
# where the variant was the other way round, autopoietic-separate).
DEFAULT_VARIANTS = ("plain", "left-spin", "autopoietic", "both")


def time_steps(step_fn, device: torch.device, warmup: int, iters: int) -> list[float]:
    times = []
    for i in range(warmup + iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step_fn()
            end.record()
            torch.cuda.synchronize()
            dt = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            step_fn()
            dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
    return times


def _top_events(averages, attr: str, steps: int, top: int) -> list[dict]:
    """The ``top`` profiler averages by ``attr`` (a self-time total in us): name, ms and calls per step."""
    events = sorted(averages, key=lambda e: getattr(e, attr, 0), reverse=True)
    return [{"name": e.key[:120], "ms_per_step": getattr(e, attr, 0) / 1e3 / steps, "calls_per_step": e.count / steps}
            for e in events[:top] if getattr(e, attr, 0) > 0]


def profile_steps(step_fn, device: torch.device, steps: int = 3, top: int = 40, top_kernels: int = 120) -> dict:
    """torch.profiler over ``steps`` steps. ``top_kernels``: the ``top_kernels`` kernels (GPU; enough
    to account for nearly all of a step's device time, so two variants' steps can be compared
    kernel by kernel) or ``top`` ops (CPU) that took the most self time, per step: name,
    milliseconds and calls. On CUDA also
    ``device_busy_ms_per_step``: the summed duration of every kernel, per step (a step time well
    above it means the card waited for the host between kernels); ``top_host_ops``: the operators
    and compiled-graph calls that took the most host (CPU) self time, per step, to say where that
    host time goes."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            step_fn()
        if cuda:
            torch.cuda.synchronize()
    averages = prof.key_averages()
    if cuda:
        kernels = _top_events([e for e in averages if e.device_type == DeviceType.CUDA], "self_device_time_total",
                              steps, top_kernels)
    else:
        kernels = _top_events(averages, "self_cpu_time_total", steps, top)
    out: dict = {"top_kernels": kernels}
    if cuda:
        out["device_busy_ms_per_step"] = sum(e.self_device_time_total for e in averages
                                             if e.device_type == DeviceType.CUDA) / 1e3 / steps
        out["top_host_ops"] = _top_events([e for e in averages if e.device_type == DeviceType.CPU],
                                          "self_cpu_time_total", steps, top)
    return out


def prefix_mean_by_sum_op(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """prefix_mean as the autopoietic step took it before: the running-sum op on x in float32,
    then the division by the counts (element-wise, fused by inductor)."""
    csum = prefix_sum(x.float())
    counts = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=torch.float32).view(1, -1, 1)
    return (csum / counts).to(x.dtype), csum[:, -1]


def kernel_counts(step_fn) -> dict:
    """Runs one step (the first of a compiled configuration: it compiles) and counts the calls in
    the code inductor generated for it, per graph (forward, then backward): ``generated`` its own
    fused kernels (cpp_fused_* on CPU, triton_* on GPU), ``extern`` library kernels (matmuls),
    ``ops`` other operators it calls as they are (custom ops such as apt::left_spin_residual,
    SDPA). A proxy for the kernels a variant adds that works on the CPU too (the fusion decisions
    are the scheduler's on both)."""
    from torch._inductor.utils import run_and_get_code

    _, codes = run_and_get_code(step_fn)
    graphs = []
    for code in codes:
        body = code[code.find("def call("):]
        own = r"^\s+(?:cpp_fused_\w+\(|triton_\w+\.run\()"
        graphs.append({"generated": len(re.findall(own, body, re.M)),
                       "extern": len(re.findall(r"extern_kernels\.\w+\(", body)),
                       "ops": len(re.findall(r"torch\.ops\.\w+\.\w+\.default\(", body))})
    return {"graphs": graphs, **{k: sum(g[k] for g in graphs) for k in ("generated", "extern", "ops")}}


def build(name: str, compiled: bool, p: dict, device: torch.device, compile_mode: str = "default"):
    """(step function, model) of one configuration: forward + backward + AdamW on a fixed random
    batch. The A/B variants run their step inside their patch (cast-first sites, recomputed norms,
    sum op)."""
    left_spin, auto = VARIANTS[name]
    patch = None
    if name == "left-spin-cast-first":
        patch = mock.patch("apt_ext.nn.left_spin._branch_dtype", lambda u, du: u.dtype)
    if name == "left-spin-recompute-norms":
        patch = mock.patch("apt_ext.left_spin.decomposed._SAVE_NORMS", False)
    if name == "autopoietic-sum-op":
        patch = mock.patch("apt_ext.model.autopoietic.prefix_mean", prefix_mean_by_sum_op)
    torch.manual_seed(0)
    cfg = APTModelConfiguration(vocab_size=p["vocab"], d_model=p["d_model"], num_heads=p["heads"], d_ff=4 * p["d_model"],
                                num_encoder_layers=0, num_decoder_layers=p["layers"], decoder_only=True, dropout=0.0,
                                max_seq_len=p["seq_len"], use_left_spin=left_spin, use_autopoietic=auto,
                                left_spin_compiled_form="op" if name == "left-spin-op" else "decomposed",
                                autopoietic_fused_projection=name == "autopoietic-fused")
    model = APTModel(cfg).to(device).train()
    opt = model.configure_optimizers(lr=1e-4)
    net = torch.compile(model, mode=compile_mode) if compiled else model
    x = torch.randint(0, p["vocab"], (p["batch"], p["seq_len"] + 1), device=device)

    def train_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = net(x[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def step():
        if patch is None:
            return train_step()
        with patch:
            return train_step()

    return step, model


def summarize(name: str, compiled: bool, compile_mode: str, p: dict, model, times: list[float],
              device: torch.device) -> dict:
    """One result row from the timed steps' seconds."""
    med = statistics.median(times)
    return {"variant": name, "compiled": compiled, "compile_mode": compile_mode if compiled else None,
            "step_ms": med * 1e3, "step_ms_min": min(times) * 1e3,
            "tokens_per_s": p["batch"] * p["seq_len"] / med, "params_M": model.num_parameters() / 1e6,
            "peak_mem_GiB": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            "times_ms": [t * 1e3 for t in times]}


def bench(name: str, compiled: bool, p: dict, device: torch.device, warmup: int, iters: int,
          profile_top: bool = False, compile_mode: str = "default", count: bool = False) -> dict:
    """Builds one configuration, times it, and frees it (``count``: kernel_counts of a compiled one)."""
    step, model = build(name, compiled, p, device, compile_mode)
    counts = kernel_counts(step) if count and compiled else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    row = summarize(name, compiled, compile_mode, p, model, time_steps(step, device, warmup, iters), device)
    if counts is not None:
        row["kernel_counts"] = counts
    if profile_top:
        row |= profile_steps(step, device)
    return row


def bench_interleaved(jobs: list[tuple[str, bool]], p: dict, device: torch.device, warmup: int, iters: int,
                      rounds: int, profile_top: bool = False, compile_mode: str = "default",
                      count: bool = False) -> list[dict]:
    """All configurations built (and warmed up) first, then timed in ``rounds`` alternating rounds
    of iters // rounds steps each (one untimed step before each round), so that a slow phase
    of the host or the card falls on all of them alike. Peak memory is not per configuration
    here (None). A configuration that fails to build or warm up gets a row with its "error"
    instead of times."""
    from tqdm.auto import tqdm
    built, failed = [], []
    for v, c in tqdm(jobs, desc="build + warm up", unit="config"):
        try:
            step, model = build(v, c, p, device, compile_mode)
            counts = kernel_counts(step) if count and c else None
            time_steps(step, device, warmup, 0)
        except Exception as e:  # e.g. a compiler error: the other configurations still run
            print(f"{v} (compiled={c}) failed: {type(e).__name__}: {e}"[:2000], file=sys.stderr)
            failed.append({"variant": v, "compiled": c, "error": f"{type(e).__name__}: {e}"[:500]})
            continue
        built.append((v, c, step, model, counts))
    times: list[list[float]] = [[] for _ in built]
    per_round = max(1, iters // rounds)
    for _ in tqdm(range(rounds), desc="interleaved rounds", unit="round"):
        for i, (_, _, step, _, _) in enumerate(built):
            times[i] += time_steps(step, device, 1, per_round)
    rows = []
    for (v, c, step, model, counts), t in zip(built, times):
        row = summarize(v, c, compile_mode, p, model, t, device) | {
            "peak_mem_GiB": None, "interleaved_rounds": rounds,
            "round_medians_ms": [1e3 * statistics.median(t[i:i + per_round]) for i in range(0, len(t), per_round)]}
        if counts is not None:
            row["kernel_counts"] = counts
        if profile_top:
            row |= profile_steps(step, device)
        rows.append(row)
    return rows + failed


def add_ratios_vs_plain(rows: list[dict]) -> None:
    """Sets each timed row's step_time_vs_plain (its median step over plain's, same compiled
    setting) and, for interleaved rows, round_ratios_vs_plain (each round's median over plain's in
    the same round, where a slow phase of the card falls on every variant alike) and their median."""
    for r in rows:
        base = next((b for b in rows if b["variant"] == "plain" and b["compiled"] == r["compiled"]
                     and "error" not in b), None)
        if "error" in r or base is None:
            continue
        r["step_time_vs_plain"] = r["step_ms"] / base["step_ms"]
        if "round_medians_ms" in r:
            r["round_ratios_vs_plain"] = [a / b for a, b in zip(r["round_medians_ms"], base["round_medians_ms"])]
            r["median_round_ratio_vs_plain"] = statistics.median(r["round_ratios_vs_plain"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny CPU run")
    ap.add_argument("--device", default=None)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--profile", action="store_true",
                    help="also record each configuration's top kernels by self time (torch.profiler, 3 steps)")
    ap.add_argument("--compiled-only", action="store_true", help="skip the eager configurations")
    ap.add_argument("--compile-mode", default="default", choices=["default", "reduce-overhead", "max-autotune"],
                    help="torch.compile mode (reduce-overhead: CUDA graphs, no per-kernel host launch cost)")
    ap.add_argument("--tag", help="suffix of the JSON and PNG names")
    ap.add_argument("--interleave", type=int, default=0, metavar="ROUNDS",
                    help="build every configuration first, then time them in ROUNDS alternating rounds "
                         "(a noisy host's slow phases fall on all alike); default: one after another")
    ap.add_argument("--count-kernels", action="store_true",
                    help="record the calls in inductor's generated code per compiled configuration "
                         "(kernel_counts; with --quick --compiled-only it runs on the CPU)")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                    help=f"comma-separated subset of {', '.join(VARIANTS)}")
    ap.add_argument("--no-mix-order-cap", action="store_true",
                    help="compile as torch does out of the box: without the Trainer's backport of inductor's "
                         "mix-order read cap (apt_ext.train.inductor_compat)")
    a = ap.parse_args()
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() and not a.quick else "cpu"))
    if a.quick:
        p = dict(vocab=256, d_model=64, layers=2, heads=2, seq_len=64, batch=8)
        warmup, iters = 3, 30
        compile_modes = [True] if a.compiled_only else [False]
        torch.set_num_threads(1)
    else:
        p = dict(vocab=32000, d_model=768, layers=12, heads=12, seq_len=1024, batch=8)
        warmup, iters = 5, 60  # 20 timed steps left ratios that moved by tens of percent between runs
        compile_modes = [False] if a.no_compile else [True] if a.compiled_only else [False, True]
    from tqdm.auto import tqdm
    name = ("model_throughput_quick" if a.quick else "model_throughput") + (f"_{a.tag}" if a.tag else "")
    meta = run_meta(device)
    # inductor settings from the environment (TORCHINDUCTOR_MIX_ORDER_REDUCTION=0 and the like) change the kernels
    meta["inductor_env"] = {k: v for k, v in sorted(os.environ.items()) if k.startswith("TORCHINDUCTOR_")}
    # what the Trainer does before compiling: "native" / "patched" / "absent" (inductor_compat), or "off"
    meta["mix_order_cap"] = "off" if a.no_mix_order_cap else cap_mix_order_reads()
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        ap.error(f"--variants: expected names from {', '.join(VARIANTS)}, got {a.variants!r}")
    jobs = [(v, c) for c in compile_modes for v in variants]
    if a.interleave < 0:
        ap.error(f"--interleave: expected a number of rounds >= 0, got {a.interleave}")
    rows = []
    if a.interleave:
        rows = bench_interleaved(jobs, p, device, warmup, iters, a.interleave, profile_top=a.profile,
                                 compile_mode=a.compile_mode, count=a.count_kernels)
        jobs = []
    for v, c in tqdm(jobs, desc="model throughput", unit="config"):
        rows.append(bench(v, c, p, device, warmup, iters, profile_top=a.profile, compile_mode=a.compile_mode,
                          count=a.count_kernels))
        if device.type == "cuda":
            torch.cuda.empty_cache()
        # after every configuration, so a run cut short keeps what it measured
        save_json(name, {"meta": meta, "params": p, "warmup": warmup, "iters": iters, "rows": rows,
                         "complete": len(rows) == len(jobs)})
    add_ratios_vs_plain(rows)
    print(f"\n{'variant':<12} {'compile':>7} {'step ms':>9} {'tokens/s':>12} {'vs plain':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['variant']:<12} {str(r['compiled']):>7}  failed: {r['error'][:100]}")
            continue
        vs = f"{r['step_time_vs_plain']:>8.3f}x" if "step_time_vs_plain" in r else f"{'-':>9}"
        rounds = (f"  rounds {min(r['round_ratios_vs_plain']):.3f}x-{max(r['round_ratios_vs_plain']):.3f}x, "
                  f"median {r['median_round_ratio_vs_plain']:.3f}x" if "round_ratios_vs_plain" in r else "")
        print(f"{r['variant']:<12} {str(r['compiled']):>7} {r['step_ms']:>9.2f} {r['tokens_per_s']:>12,.0f} {vs}{rounds}")
        if "device_busy_ms_per_step" in r:
            print(f"    kernels busy {r['device_busy_ms_per_step']:.2f} ms of the step (profiled)")
        for k in r.get("top_kernels", [])[:5]:
            print(f"    {k['ms_per_step']:8.3f} ms/step {k['calls_per_step']:6.0f} calls  {k['name'][:90]}")
        for k in r.get("top_host_ops", [])[:3]:
            print(f"    host {k['ms_per_step']:8.3f} ms/step {k['calls_per_step']:6.0f} calls  {k['name'][:85]}")
    out = save_json(name, {"meta": meta, "params": p, "warmup": warmup, "iters": iters, "rows": rows, "complete": True})
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    timed = [r for r in rows if "error" not in r]
    labels = [f"{r['variant']}{' (compiled)' if r['compiled'] else ''}" for r in timed]
    ax.barh(labels, [r["tokens_per_s"] for r in timed], color=["tab:gray", "tab:red", "tab:blue", "tab:purple"] * 2)
    ax.set_xlabel("training tokens/s (higher is better)")
    ax.set_title(f"APT {p['layers']}x{p['d_model']}, B{p['batch']} T{p['seq_len']}, {meta['card']}", fontsize=9)
    fig.tight_layout()
    png = plot_path(name)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    print(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
