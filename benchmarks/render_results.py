"""Renders benchmarks/RESULTS.md from the JSON files under benchmarks/results/.

Every number in RESULTS.md comes from a JSON written by a benchmark script; nothing is typed by
hand. Each section names its JSON, and the date, machine, torch version and command recorded
in it. Adding a benchmark's results = one ``Section`` entry in ``SECTIONS`` (a title, the JSON
file names or a glob, and a function that turns the loaded JSON into markdown).

    python benchmarks/render_results.py            # rewrite benchmarks/RESULTS.md
    python benchmarks/render_results.py --check    # exit 1 if RESULTS.md is not what the JSONs give

tests/test_published_numbers.py runs the check, and checks that every figure quoted in
README.md and docs/*.md cites a JSON that holds it (tools/check_numbers.py).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
OUT = HERE / "RESULTS.md"


# ---- formatting -----------------------------------------------------------------------------
def num(v: float | None, digits: int = 3) -> str:
    """``digits`` significant digits, plain notation ("-" for None)."""
    if v is None:
        return "-"
    if v == 0:
        return "0"
    mag = abs(v)
    decimals = max(0, digits - 1 - int(f"{mag:e}".split("e")[1]))
    return f"{v:,.{decimals}f}" if mag >= 10000 else f"{v:.{decimals}f}"


def ratio(a: float | None, b: float | None) -> str:
    """a / b as "1.23x" ("-" when either is missing)."""
    return "-" if not a or not b else f"{a / b:.2f}x"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def meta_line(name: str, d: dict) -> str:
    """Source line: the JSON link plus the date, machine, torch, command and load it recorded."""
    scopes = [d, d.get("meta", {})] + ([d["machine"]] if isinstance(d.get("machine"), dict) else [])
    pick = lambda *keys: next((s[k] for k in keys for s in scopes if s.get(k) not in (None, "")), None)  # noqa: E731
    machine = pick("machine", "card", "device_name", "host")
    if isinstance(machine, dict):
        machine = f"{machine.get('cpu', '')}, {machine.get('threads', '?')} threads"
    card = pick("card")
    if isinstance(card, str) and card and isinstance(machine, str) and card not in machine:
        machine = f"{machine} ({card})"
    parts = [f"Source: [results/{name}](results/{name})",
             f"date {pick('date', 'date_utc') or 'not recorded'}",
             f"machine {machine or 'not recorded'}",
             f"torch {pick('torch') or 'not recorded'}"]
    for when, keys in (("", ("load_avg", "uptime")), (" at start", ("load_average_start",)),
                       (" at end", ("load_average_end",))):
        load = pick(*keys)
        if load is not None:
            parts.append(f"load average{when} "
                         + (" / ".join(f"{x:.1f}" for x in load) if isinstance(load, list) else str(load)))
    cmd = pick("command")
    return "; ".join(parts) + (f"; command `{cmd}`" if cmd else "") + "."


# ---- sections -------------------------------------------------------------------------------
@dataclass
class Section:
    """One part of RESULTS.md: ``files`` (names or one glob under results/), ``render(name, data)``
    -> markdown per file; ``missing`` is printed when no file matches."""

    title: str
    files: list[str]
    render: Callable[[str, dict], str]
    missing: str = ""
    level: int = 2


FP4_CPU_FORMATS = ("nvfp4", "mxfp4", "nf4")


def fp4_cpu_speed_single(d: dict, err: dict) -> list[str]:
    """Runs before the int4 peer and the thread sweep: nvfp4 only, torch's default threads."""
    rows = [[f"{r['N']} x {r['K']}", r["M"], num(r["fp32_linear_ms"]), num(r["bf16_linear_ms"]),
             num(r["fp4_linear_ms"]), ratio(r["fp32_linear_ms"], r["fp4_linear_ms"]),
             ratio(r["bf16_linear_ms"], r["fp4_linear_ms"]), num(err.get("nvfp4", {}).get("rel_err"))]
            for r in d["speed"]]
    return [f"`apt::fp4_linear` with an nvfp4 weight (float32 x) against `F.linear` with a float32 and a "
            f"bfloat16 weight; ms per call (median of {d.get('repeats', '?')}), ratio = their time / ours. The "
            f"accuracy column is the relative output error of an nvfp4 layer against its float32 original "
            f"(Gaussian weights, same run).",
            "",
            table(["N x K", "M", "F.linear fp32 ms", "F.linear bf16 ms", "fp4_linear nvfp4 ms", "vs fp32",
                   "vs bf16", "nvfp4 rel. error"], rows)]


def fp4_cpu_speed_peers(d: dict, err: dict) -> list[str]:
    """Every format against fp32 / bf16 F.linear and torch's int4 CPU kernel, per thread count."""
    m = d["machine"]
    canonical = "nvfp4_canonical_ms" in d["speed"][0]  # runs that time FP4Linear and fp4_linear apart
    rows = []
    for r in d["speed"]:
        slowest = max(r[f"{f}_ms"] for f in FP4_CPU_FORMATS)
        rows.append([f"{r['N']} x {r['K']}", r["M"], r["threads"], num(r["fp32_linear_ms"]), num(r["bf16_linear_ms"]),
                     num(r["torch_int4_ms"]), *[num(r[f"{f}_ms"]) for f in FP4_CPU_FORMATS],
                     ratio(r["fp32_linear_ms"], slowest), ratio(r["bf16_linear_ms"], slowest),
                     ratio(r["torch_int4_ms"], slowest),
                     *([num(r[f"{f}_canonical_ms"]) for f in FP4_CPU_FORMATS] if canonical else []),
                     *([num(r["nvfp4_bf16x_ms"]), r["nvfp4_bf16x_path"]] if "nvfp4_bf16x_path" in r else []),
                     *([num(r["read_floor_ms"]), num(r["read_floor_bytes"] / r["read_floor_ms"] / 1e6)]
                       if "read_floor_ms" in r else [])])
    by = {(r["N"], r["K"], r["M"], r["threads"]): r for r in d["speed"]}
    threads = sorted({r["threads"] for r in d["speed"]})
    impls = [("fp32_linear_ms", "F.linear fp32"), ("bf16_linear_ms", "F.linear bf16"),
             ("torch_int4_ms", "torch int4"), *((f"{f}_ms", f) for f in FP4_CPU_FORMATS),
             *([("read_floor_ms", "read floor")] if "read_floor_ms" in d["speed"][0] else [])]
    scaling = [[f"{n} x {k}", mm, *[ratio(by[(n, k, mm, threads[0])][key], by[(n, k, mm, threads[-1])][key])
                                    for key, _ in impls]]
               for (n, k, mm, t) in by if t == threads[0] and (n, k, mm, threads[-1]) in by]
    accuracy = ", ".join(f"{f} {num(e['rel_err'])}" for f, e in err.items())
    layer = ("`FP4Linear` (float32 x, inference; on this path up to 64 rows of x run on its CPU tiled copy, "
             "`apt::fp4_linear_cpu_tiled`: the rows' `*_path` fields in the JSON) with `apt::fp4_linear` on the "
             "canonical tensors timed in the same rounds (the last three columns)"
             if canonical else "`apt::fp4_linear` (float32 x)")
    caps = m.get("isa_caps_env")
    torch_isa = (f"Torch's own kernels dispatched at `{m['torch_cpu_capability']}`"
                 + (" (capped by " + ", ".join(f"`{k}={v}`" for k, v in caps.items()) + ")" if caps else "") + ". "
                 if m.get("torch_cpu_capability") else "")
    out = [f"FP4 CPU path `{m['fp4_cpu_isa']}` (requires the CPU flags {', '.join(m['fp4_cpu_isa_requires']) or 'none'}). "
           f"{torch_isa}{layer} in each format against `F.linear` with a float32 and a bfloat16 weight "
           f"and torch's int4 CPU kernel `torch._weight_int4pack_mm_for_cpu` (bfloat16 x, groups of 128); ms per "
           f"call (median of {d.get('repeats', '?')} rounds, each timing every implementation once; scheduling "
           f"{m.get('scheduling', 'not recorded')}). Ratios = their time / the slowest of the three FP4 formats. "
           f"Accuracy of the timed layers (relative output error against the float32 layer, Gaussian weights, "
           f"same run): {accuracy}."
           + (" Read floor: `torch.sum` over a float32 buffer as large as the nvfp4 weight (codes and scales), "
              "timed in the same rounds." if "read_floor_ms" in d["speed"][0] else ""),
           "",
           table(["N x K", "M", "threads", "F.linear fp32 ms", "F.linear bf16 ms", "torch int4 ms",
                  *[f"{f} ms" for f in FP4_CPU_FORMATS], "vs fp32", "vs bf16", "vs torch int4",
                  *([f"{f} fp4_linear ms" for f in FP4_CPU_FORMATS] if canonical else []),
                  *(["nvfp4 layer, bf16 x ms", "its path"] if "nvfp4_bf16x_path" in d["speed"][0] else []),
                  *(["read floor ms", "read floor GB/s"] if "read_floor_ms" in d["speed"][0] else [])], rows)]
    if len(threads) > 1 and scaling:
        out += ["", f"Speed-up from {threads[0]} to {threads[-1]} threads (time at {threads[0]} / time at "
                f"{threads[-1]}):", "",
                table(["N x K", "M", *[name for _, name in impls]], scaling)]
    return out


def fp4_cpu(name: str, d: dict) -> str:
    err = {r["fmt"]: r for r in d.get("error_gaussian", [])}
    mini = {r["fmt"]: r for r in d.get("error_minilm", [])}
    peers = "torch_int4_ms" in d["speed"][0]
    out = fp4_cpu_speed_peers(d, err) if peers else fp4_cpu_speed_single(d, err)
    if d.get("memory"):
        out += ["", "Weight memory of one layer with bias (parameters + buffers):", "",
                table(["layer", "MiB", "vs bf16 nn.Linear"],
                      [[m["fmt"], num(m["bytes"] / 2**20), f"{m['ratio_vs_bf16']:.3f}x"] for m in d["memory"]])]
    if err:
        out += ["", "Relative output error ||y_fp4 - y_fp32|| / ||y_fp32||: Gaussian layer; every nn.Linear of "
                "all-MiniLM-L6-v2 on its real activations; cosine of the quantised model's sentence embeddings "
                "to the float32 model's:", "",
                table(["fmt", "Gaussian", "MiniLM layers mean", "MiniLM layers max", "embedding cosine mean",
                       "embedding cosine min"],
                      [[f, num(e["rel_err"]), num(mini.get(f, {}).get("rel_err_mean")),
                        num(mini.get(f, {}).get("rel_err_max")), num(mini.get(f, {}).get("embedding_cosine_mean"), 4),
                        num(mini.get(f, {}).get("embedding_cosine_min"), 4)] for f, e in err.items()])]
    return "\n".join(out)


def left_spin(name: str, d: dict) -> str:
    res = [r for r in d["results"] if "ms" in r]  # skipped cells carry a reason instead
    impls = list(dict.fromkeys(r["impl"] for r in res))
    ours = next(i for i in impls if i.startswith("apt"))
    by = {(tuple(r["shape"]), r["mode"], r["impl"]): r for r in res}
    shapes = list(dict.fromkeys(tuple(r["shape"]) for r in res))
    modes = list(dict.fromkeys(r["mode"] for r in res))
    copy = d.get("copy_gbs")
    rows = []
    for s in shapes:
        for mode in modes:
            base = by.get((s, mode, ours))
            if base is None:
                continue
            cells = [f"{s[0]} x {s[1]}", mode]
            for impl in impls:
                r = by.get((s, mode, impl))
                cells.append("-" if r is None else f"{num(r['ms'])} ({num(r['gbs'])} GB/s)")
            cells += [ratio(by[(s, mode, i)]["ms"], base["ms"]) if (s, mode, i) in by else "-"
                      for i in impls if i != ours]
            rows.append(cells)
    m = d.get("meta", {})
    site = autocast_site_lines(d.get("autocast_site", []))
    return "\n".join([
        f"{m.get('dtype', '')} inputs with du_prev and phi_prev (a mid-chain site); median ms and the GB/s of the "
        f"minimum bytes moved ({m.get('bytes_counted', 'not recorded')}). `copy_` bandwidth measured in the same "
        f"run: {num(copy)} GB/s. Accuracy: not recorded by this benchmark (every kernel is checked against "
        f"tests/reference/left_spin.py by the test suite). Ratios = their time / {ours}'s.",
        "",
        table(["rows x D", "mode", *[f"{i} ms" for i in impls], *[f"vs {i}" for i in impls if i != ours]], rows),
        *site])


def autocast_site_lines(site: list[dict]) -> list[str]:
    """``left_spin.py``'s autocast site (float32 u beside bf16 du / du_prev): the op on the bf16
    tensors against casting them to float32 first, and the two forms' largest difference."""
    timed = {(tuple(r["shape"]), r["mode"], r["impl"]): r for r in site if "ms" in r}
    if not timed:
        return []
    diffs = {tuple(r["shape"]): r["max_abs_diff_between_forms"] for r in site if "max_abs_diff_between_forms" in r}
    rows = []
    for (shape, mode, impl), r in timed.items():
        if impl != "bf16 du as is":
            continue
        cast = timed.get((shape, mode, "du cast to float32 first"))
        diff = diffs.get(shape, {})
        rows.append([f"{shape[0]} x {shape[1]}", mode, f"{num(r['ms'])} ({num(r['gbs'])} GB/s)",
                     "-" if cast is None else num(cast["ms"]), "-" if cast is None else ratio(cast["ms"], r["ms"]),
                     num(max(diff.values())) if diff else "-"])
    return ["", "Autocast site: float32 u beside bf16 du and du_prev, the op on them as they are against casting "
                "them to float32 first (the model's residual site before the op took 16-bit du). GB/s of the "
                "minimum bytes (12 per element forward, 32 forward+backward); last column: the largest absolute "
                "difference between the two forms' outputs and gradients.", "",
            table(["rows x D", "mode", "bf16 du as is ms", "cast first ms", "cast first / as is", "max abs diff"],
                  rows)]


def ssd_lines(ssd: dict) -> list[str]:
    """``benchmarks/vgpu.py``'s SSD part: the pager's read and write GB/s per I/O backend against dd and
    fio (the better of fio's block sizes), and io_uring per ``io_chunk_mb`` where the run has them."""
    fio_blocks = "/".join(ssd.get("fio_by_block", {}))
    lines = [f"- SSD->host, {num(ssd['bytes'] / 2**20)} MiB, O_DIRECT {'on' if ssd.get('o_direct') else 'off'}, "
             f"checksum {ssd.get('checksum')}: " + "; ".join(
                 f"{k} " + (f"{num(v['gbps'])} GB/s" if "gbps" in v else v.get("error", "?"))
                 for k, v in ssd.items() if k in ("io_uring", "pread"))
             + (f"; `dd iflag=direct` {num(ssd['dd_direct_gbps'])} GB/s" if ssd.get("dd_direct_gbps") else "")
             + (f"; fio {num(ssd['fio_gbps'])} GB/s" if ssd.get("fio_gbps") else "")
             + (f" (best of blocks {fio_blocks})" if fio_blocks and ssd.get("fio_gbps") else "") + "."
             + ("".join(f" host->SSD (writes): {k} {num(v['write_gbps'])} GB/s;" for k, v in ssd.items()
                        if k in ("io_uring", "pread") and isinstance(v, dict) and "write_gbps" in v)
                + (f" `dd oflag=direct` {num(ssd['dd_direct_write_gbps'])} GB/s;" if ssd.get("dd_direct_write_gbps") else "")
                + (f" fio {num(ssd['fio_write_gbps'])} GB/s;" if ssd.get("fio_write_gbps") else ""))]
    chunks = ssd.get("io_uring_chunks")
    if isinstance(chunks, dict) and chunks and "error" not in chunks:
        lines.append("- io_uring per `io_chunk_mb` (one stack each, timed in turn every round): " + "; ".join(
            f"{c} MiB read {num(v['gbps'])} / write {num(v['write_gbps'])} GB/s" for c, v in chunks.items()) + ".")
    if ssd.get("fio_by_block"):
        lines.append("- fio per block size: " + "; ".join(
            f"{bs} read {num(v['gbps'])} / write {num(v['write_gbps'])} GB/s" for bs, v in ssd["fio_by_block"].items()
            if v.get("gbps") and v.get("write_gbps")) + ".")
    return lines


def vgpu_ssd(name: str, d: dict) -> str:
    """``benchmarks/vgpu.py --ssd-only``: the SSD part alone."""
    return "\n".join(([f"Note recorded with the run: {d['note']}.", ""] if d.get("note") else []) + ssd_lines(d["ssd"]))


def vgpu(name: str, d: dict) -> str:
    link, ssd = d["link"], d["ssd"]
    out = [f"Note recorded with the run: {d['note']}.\n" if d.get("note") else "",
           f"- host->device, {num(link['bytes'] / 2**20)} MiB: through the pager {num(link['pager_gbps'])} GB/s; "
           f"pinned `copy_` {num(link['pinned_copy_gbps'])} GB/s, pageable {num(link['pageable_copy_gbps'])} GB/s "
           f"(pager / pinned {link['pager_vs_pinned']:.2f}).",
           *ssd_lines(ssd),
           "", "Offloaded inference (weights in the stack, device budget 25%, prefetch 2); ms per forward; "
           "bound = bytes moved / pinned copy bandwidth; error = relative output error against the resident "
           "float model (the nvfp4 rows are a quantised model: its error is the quantisation's).", ""]
    rows = []
    for o in d["offload"]:
        for m, r in o["per_m"].items():
            acc_cpu, acc_disk = r.get("accelerate_cpu_offload_s"), r.get("accelerate_disk_offload_s")
            rows.append([o["label"], num(o["weight_bytes"] / 2**20), m, num(r["resident_s"] * 1e3),
                         num(r["vgpu_s"] * 1e3), num(r["pcie_bound_s"] * 1e3) if r["pcie_bound_s"] else "-",
                         num(acc_cpu * 1e3) if acc_cpu else "-", num(acc_disk * 1e3) if acc_disk else "-",
                         ratio(acc_cpu, r["vgpu_s"]), f"{r['hit_rate']:.2f}",
                         num(r["bytes_moved_per_forward"] / 2**20), num(r["rel_err_vs_resident"])])
    out.append(table(["weights", "MiB", "M", "resident ms", "VGPU offload ms", "bound ms",
                      "accelerate cpu_offload ms", "accelerate disk_offload ms", "cpu_offload / VGPU",
                      "hit rate", "MiB moved", "error vs float"], rows))
    return "\n".join(out)


def left_spin_training(name: str, d: dict) -> str:
    p = d["params"]
    rows = [[s["lr"], "on" if s["left_spin"] else "off", f"{s['final_eval_mean']:.3f} ± {s['final_eval_std']:.3f}",
             f"{s['best_eval_mean']:.3f}", f"{s['diverged']}/{s['runs']}", s["spikes_total"],
             f"{s['late_loss_std_mean']:.4f}", num(s["step_time_ms"])] for s in d["summary"]]
    defs = "; ".join(f"{k}: {v}" for k, v in d.get("definitions", {}).items())
    return "\n".join([
        f"Decoder-only APT model, {p['layers']} layers x d_model {p['d_model']}, {p['steps']} steps x {p['batch']} x "
        f"{p['seq_len']} tokens, warm-up {p['warmup']}, {d['seeds']} seeds per cell, same data and init in both arms. "
        f"Eval loss in nats/byte (mean ± std over seeds). Definitions: {defs}.", "",
        table(["peak lr", "left-spin", "final eval loss", "best eval", "diverged", "loss spikes", "late loss std",
               "median step ms"], rows)])


def model_throughput(name: str, d: dict) -> str:
    p = d["params"]

    timed = [r for r in d["rows"] if "error" not in r]

    def vs_plain(r: dict) -> str:
        base = next((b for b in timed if b["variant"] == "plain" and b["compiled"] == r["compiled"]), None)
        return f"{r['step_ms'] / base['step_ms']:.3f}x" if base else "-"

    def label(r: dict) -> str:
        mode = r.get("compile_mode") or "default"
        return r["variant"] + ((" (compiled)" if mode == "default" else f" (compiled, {mode})") if r["compiled"] else "")

    counted = any("kernel_counts" in r for r in timed)
    by_round = any("round_ratios_vs_plain" in r for r in timed)

    def rounds_vs_plain(r: dict) -> list[str]:
        q = r.get("round_ratios_vs_plain")
        return [f"{r['median_round_ratio_vs_plain']:.3f}x ({min(q):.3f}x-{max(q):.3f}x)" if q else "-"] if by_round else []

    def kernels(r: dict) -> list[str]:
        c = r.get("kernel_counts")
        return [f"{c['generated']} / {c['extern']} / {c['ops']}" if c else "-"] if counted else []

    rows = [[label(r), num(r["step_ms"]), num(r["step_ms_min"]) if "step_ms_min" in r else "-",
             f"{r['tokens_per_s']:,.0f}", vs_plain(r)] + rounds_vs_plain(r) + kernels(r) for r in timed]
    failed = "".join(f" {label(r)} failed to build: {r['error'][:200]}." for r in d["rows"] if "error" in r)
    rounds = {r.get("interleaved_rounds") for r in timed} - {None}
    order = (f" The configurations were built first and timed in {rounds.pop()} alternating rounds."
             if rounds else "")
    cut = "" if d.get("complete", True) else (
        " The run stopped early (its JSON is saved after every configuration); the missing rows did not run.")
    return "\n".join([
        f"{p['layers']} layers x d_model {p['d_model']}, batch {p['batch']} x {p['seq_len']} tokens, forward + "
        f"backward + AdamW, median of {d['iters']} steps after {d['warmup']} warm-up. Accuracy: not applicable "
        f"(the variants are different models; their losses are in the LR-sweep section).{cut}{order}{failed}"
        + (" Kernels: the calls in inductor's generated code for one step, forward and backward graphs together: "
           "its own fused kernels / library kernels (matmuls) / other operators called as they are (custom ops, "
           "SDPA)." if counted else ""), "",
        table(["variant", "step ms", "fastest step ms", "tokens/s", "step time vs plain"]
              + (["per round vs plain: median (range)"] if by_round else [])
              + (["kernels (generated / extern / ops)"] if counted else []), rows)])


def virtual_vram(name: str, d: dict) -> str:
    """``benchmarks/virtual_vram.py``: decoding tokens/s per batch and run, the PCIe bound of the
    paged runs and their logits' agreement with the resident bfloat16 model."""
    sh = d["shape"]
    rows = []
    for batch, runs in d["runs"].items():
        for run, r in runs.items():
            bound = r.get("pcie_bound_s")
            kept = (num(r["resident_bytes"] / 1e9) if r.get("keep_resident") else "0 (LRU alone)") \
                if "keep_resident" in r else ("-" if "bytes_h2d_per_step" not in r else "0 (LRU alone, before keep_resident)")
            rows.append([batch, run, num(r["tokens_per_s"]), num(r["s_per_step"] * 1e3), kept,
                         num(r["bytes_h2d_per_step"] / 1e9) if "bytes_h2d_per_step" in r else "-",
                         num(bound * 1e3) if bound else "-",
                         f"{r['logits_cosine_mean']:.4f}" if "logits_cosine_mean" in r else "-",
                         f"{r['top1_agreement']:.3f}" if "top1_agreement" in r else "-",
                         f"{r['vs_dequantized']['logits_cosine_mean']:.4f} / {r['vs_dequantized']['top1_agreement']:.3f}"
                         if "vs_dequantized" in r else "-"])
    return "\n".join([
        f"Decoder {sh['layers']} layers x d {sh['d']} (d_ff {sh['d_ff']}, {sh['heads']} heads, {sh['kv_heads']} KV "
        f"heads, vocab {sh['vocab']}), random weights, {d['weight_bytes'] / 1e9:.2f} GB in {d['dtype']}; device "
        f"budget {d['device_budget_bytes'] / 1e9:.2f} GB; {d['new_tokens']} new tokens per run. PCIe bound: "
        "bytes copied host to device per step / the measured pinned copy bandwidth. GB kept resident: the "
        "units `offload(keep_resident=True)` pinned on the device level for good. Agreement: "
        "logits cosine and top-1 against the resident bfloat16 model (random weights: FP4's error is not "
        "damped by trained structure). Against dequantized (from the twenty-first session): logits cosine / top-1 "
        "against a bfloat16 model holding the 4-bit weights dequantized, the kernels' agreement apart from the "
        "4-bit rounding.", "",
        table(["batch", "run", "tokens/s", "ms per step", "GB kept resident", "GB to device per step", "PCIe bound ms",
               "logits cosine", "top-1 agreement", "against dequantized"], rows)])


def prefix_sum(name: str, d: dict) -> str:
    """``benchmarks/prefix_sum.py``: torch.cumsum against apt_ext's blocked cumsum, (from the
    eighteenth session) ``prefix_sum`` and the custom op with the suffix-sum backward, and (from the
    twenty-third) the whole prefix mean both ways and the Triton pass's chunk shapes."""
    variants = [v for v in ("cumsum", "blocked", "prefix_sum", "op", "prefix_mean", "mean_by_sum", "prefix_mean_bf16")
                if f"{v}_forward_ms" in d["rows"][0]]
    rows = [["x".join(map(str, r["shape"])), v, num(r[f"{v}_forward_ms"]), num(r[f"{v}_forward_backward_ms"]),
             f"{r[f'max_abs_err_{v}']:.2g}", f"{r[f'max_abs_grad_err_{v}']:.2g}" if f"max_abs_grad_err_{v}" in r else "-"]
            for r in d["rows"] for v in variants]
    return "\n".join([
        "Prefix sum over the sequence (autopoietic attention's running mean), float32 on the GPU, median ms. "
        "Errors: max abs difference from a float64 cumsum (values; the float64 mean for the prefix_mean forms "
        "and mean_by_sum) and from a float64 reverse cumsum (gradients). prefix_mean_bf16 takes x rounded to "
        "bfloat16 (its error includes that rounding).", "",
        table(["shape", "form", "fwd ms", "fwd+bwd ms", "max err", "max grad err"], rows)]
        + chunk_table(d))


def chunk_table(d: dict) -> list[str]:
    """The Triton prefix-mean pass's forward ms per chunk shape (rows x features per program), if timed."""
    timed = [r for r in d["rows"] if r.get("triton_mean_forward_ms_by_chunk")]
    if not timed:
        return []
    chunks = list(timed[0]["triton_mean_forward_ms_by_chunk"])
    rows = [["x".join(map(str, r["shape"]))] + [num(r["triton_mean_forward_ms_by_chunk"][c]) for c in chunks]
            for r in timed]
    return ["", "Triton prefix-mean pass, forward ms by chunk shape (rows x features per program; 64x32 is "
            "the default).", "", table(["shape"] + chunks, rows)]


def aim_memory(name: str, d: dict) -> str:
    """``benchmarks/aim_memory.py``: routing index alone (``results``), inertia ablation, query
    embedding (``query_embedding``) and end-to-end ``route_memory`` (``route_memory_end_to_end``);
    an ``--e2e-only`` run has only the last two."""
    out: list[str] = []
    if d.get("results"):
        rows = []
        for res in d["results"]:
            brute = res["methods"].get("numpy brute force", {}).get("p50_ms")
            aim = res["methods"].get("AIM ClusterIndex", {}).get("p50_ms")
            for meth, r in res["methods"].items():
                if "skipped" in r:
                    rows.append([res["size"], meth, f"skipped: {r['skipped']}", "", "", "", "", "", ""])
                    continue
                rows.append([res["size"], meth, r["setting"], f"{r['recall@10']:.3f}", num(r["p50_ms"]),
                             num(r["p95_ms"]),
                             "-" if r.get("scanned") is None or r["scanned"] != r["scanned"] else f"{r['scanned']:,.0f}",
                             ratio(brute, r["p50_ms"]), ratio(aim, r["p50_ms"])])
        out += ["**Routing index alone** (one query vector at a time, one thread), NOT `route_memory`: each method "
                "at its cheapest setting reaching recall@10 >= 0.95 against the exact top-10. The 10k set is real "
                "MiniLM embeddings; the larger sets are synthetic vectors.", "",
                table(["vectors", "method", "setting", "recall@10", "p50 ms", "p95 ms", "vectors scanned",
                       "speed-up vs brute force (p50)", "AIM p50 / this p50"], rows), ""]
    abl = d.get("inertia_ablation")
    if abl:
        cells: dict[tuple, dict] = {}
        for a in abl:
            cells.setdefault((a["stream"], a["n_probe"]), {})[a["lambda"]] = f"{a['recall@10']:.3f} ({a['scanned']:.0f})"
        lams = sorted({a["lambda"] for a in abl})
        out += ["**Inertia ablation** (recall@10 vs exact, vectors scanned in parentheses):", "",
                table(["stream", "n_probe", *[f"lambda {lam}" for lam in lams]],
                      [[s, n, *[v.get(lam, "-") for lam in lams]] for (s, n), v in cells.items()]), ""]
    emb = d.get("query_embedding") or []
    if emb:
        ref = emb[0]["p50_ms"]
        one_thread_onnx = any(e["embedder"].startswith("ONNX") and "(1 thread" in e["embedder"] for e in emb)
        out += [f"**Query embedding** of all-MiniLM-L6-v2, one query at a time ({emb[0]['queries']} queries; p50 / "
                f"p95 ms), with the cosine of each embedder's vectors to the float32 sentence-transformers model's "
                f"over {emb[0]['sentences']} sentences. Embedder names and thread counts as the script labelled them"
                + (" (the ONNX rows' \"1 thread\" is not always what ran: see \"Thread counts\" in docs/memory.md)"
                   if one_thread_onnx else "") + ".", "",
                table(["embedder", "p50 ms", "p95 ms", "p50 speed-up vs the first row", "cosine mean", "cosine min"],
                      [[e["embedder"], num(e["p50_ms"]), num(e["p95_ms"]), ratio(ref, e["p50_ms"]),
                        num(e["cosine_to_fp32_mean"], 4), num(e["cosine_to_fp32_min"], 4)] for e in emb]), ""]
    e2e = d.get("route_memory_end_to_end") or []
    if e2e:
        default = next((e for e in emb if "default" in e["embedder"]), None)
        accuracy = ("" if default is None else
                    f" Accuracy: no recall is recorded for these routes; the query embedder is the default int8 "
                    f"model, cosine {num(default['cosine_to_fp32_mean'], 4)} (mean) to float32 in the table above.")
        alone = any("query_embedding_alone_p50_ms" in e for e in e2e)
        routing = any("routing_only_p50_ms" in e for e in e2e)
        out += [f"**End-to-end `route_memory`** (default config and embedder: query embedding, dense, BM25 and anchor "
                f"channels, scoring; k 5; one query at a time) on memories loaded with `import_records`; "
                f"{e2e[0]['queries']} queries per size. The embedding is also timed alone just before each route "
                f"(\"embedding p50\"; the rest of the route is route p50 minus that)"
                + (", and in a loop of its own without routes in between (\"embedding alone\")" if alone else "")
                + ("; \"routing alone\" routes the same queries again with their vectors looked up, not embedded"
                   if routing else "")
                + f". Load = seconds to import and index the nodes; load average = the 1-minute value after "
                f"the size was timed.{accuracy}", "",
                table(["nodes", "clusters", "load s", "route p50 ms", "route p95 ms", "embedding p50 ms",
                       *(["embedding alone p50 ms"] if alone else []), "route minus embedding p50 ms",
                       *(["routing alone p50 ms", "routing alone p95 ms"] if routing else []),
                       "vectors scanned per route", "load average"],
                      [[f"{e['nodes']:,}", f"{e['clusters']:,}", num(e["load_s"]), num(e["route_memory_p50_ms"]),
                        num(e["route_memory_p95_ms"]), num(e["query_embedding_p50_ms"]),
                        *([num(e.get("query_embedding_alone_p50_ms"))] if alone else []),
                        num(e["route_minus_embedding_p50_ms"]),
                        *([num(e.get("routing_only_p50_ms")), num(e.get("routing_only_p95_ms"))] if routing else []),
                        f"{e['scanned_per_route']:,.0f}",
                        f"{e['load_average'][0]:.1f}"] for e in e2e])]
    return "\n".join(out)


def aim_memory_phases(name: str, d: dict) -> str:
    """``benchmarks/aim_memory_phases.py``: p50 ms per route of each phase of ``route_memory``
    without the query embedding (one row per phase, one column per size and code version)."""
    runs = d["sizes"]
    labels = list(dict.fromkeys(label for r in runs for label in r["phases"]))
    rows = [[label, *[num(r["phases"][label]["p50_ms"]) if label in r["phases"] else "-" for r in runs]]
            for label in labels]
    rows.append(["route p50 without the timers (best pass)", *[num(r["route_p50_ms"]) for r in runs]])
    both = d.get("baseline") is not None
    return "\n".join([
        f"Where one `route_memory` spends its time, without the query embedding (the query vectors of the "
        f"end-to-end benchmark's {runs[0]['queries']} queries looked up; its nodes; k 5): each phase is one "
        f"function of the route timed with perf_counter; \"rest\" is the route minus them. p50 ms per route "
        f"(means in the JSON)."
        + (f" \"baseline\" is the code in `{d['baseline']}` run in the same process, its passes alternating with "
           f"the current code's." if both else ""), "",
        table(["phase", *[f"{r['size']} {r.get('code', '')}".strip() for r in runs]], rows)])


def recall_table(d: dict, by: str, counts: dict[str, int]) -> str:
    """recall@5 per method: all questions, then each group of ``m[by]`` (``counts``: its questions)."""
    rows = [[meth, f"{m['recall@5']:.3f}", *[f"{m[by][g]:.3f}" for g in counts]] for meth, m in d["methods"].items()]
    return table(["method", "recall@5", *[f"{g} ({n} q)" for g, n in counts.items()]], rows)


def aim_memory_recall(name: str, d: dict) -> str:
    """``benchmarks/aim_memory_recall.py``: recall@5 per method and question kind on the test dialogues."""
    cfg = d["config"]
    return "\n".join([
        f"recall@5 on our synthetic multi-session dialogues (`benchmarks/memory_dialogues.py`), test seeds "
        f"{d['seeds'][0]}-{d['seeds'][-1]}, {d['questions']} questions; embedder {d['embedder']} (the same vectors "
        f"for the dense baselines and AIM-Memory). Fusion weights: `lexical_weight` `{cfg['lexical_weight']}`, "
        f"`anchor_boost` `{cfg['anchor_boost']}`, `min_similarity` `{cfg['min_similarity']}` (fitted on the dev "
        f"seeds, below). Speed in the same run, with the embeddings cached (embedding time excluded): AIM-Memory "
        f"took {num(d['per_turn_write_ms_cached_embeddings'])} ms per written turn and "
        f"{num(d['per_question_route_ms_cached_embeddings'])} ms per routed question (means over the dialogues).",
        "",
        recall_table(d, "by_kind", d["questions_by_kind"])])


def aim_memory_realtalk(name: str, d: dict) -> str:
    """``benchmarks/aim_memory_realtalk.py``: recall@5 per method, QA category and chat on REALTALK."""
    skipped = ", ".join(f"{n} {why}" for why, n in d["questions_skipped"].items()) or "none"
    methods = list(d["methods"])
    chats = [[f"{c} ({n} q)", *[f"{d['methods'][m]['by_chat'][c]:.3f}" for m in methods]]
             for c, n in d["questions_by_chat"].items()]
    return "\n".join([
        f"recall@5 on real 21-day chats, {d['data']}, "
        + {"all": "all chats", "dev": "DEV chats 1-5", "test": "TEST chats 6-10"}[d.get("split", "all")]
        + f": {d['questions']} of {d['qa_items']} QA items scored "
        f"(skipped: {skipped}); {d['turns_written']} turns written ({d['image_only_turns_skipped']} turns without "
        f"text left out). Embedder {d['embedder']} (the same vectors for the dense baselines and "
        f"AIM-Memory); AIM-Memory's config: {realtalk_config(d)}. A question with more than "
        f"{d['k']} evidence turns cannot reach 1: the most recall@5 can be is {d['ceiling_recall@5']:.3f}. "
        f"AIM-Memory's write gate rejected {d['aim_turns_rejected_by_write_gate']} turns; `route_memory` returned "
        f"fewer than {d['k']} nodes (none else above its similarity floors) for "
        + " and ".join(f"{n} questions ({m.split('(')[-1]}"
                       for m, n in d["aim_questions_answered_with_fewer_than_k"].items()) + ".", "",
        recall_table(d, "by_category", d["questions_by_category"]), "",
        "Per chat:", "",
        table(["chat", *methods], chats)])


FUSION_FIELDS = ("lexical_weight", "min_similarity", "anchor_min_similarity", "anchor_boost")


def realtalk_config(d: dict) -> str:
    """The fusion weights of a REALTALK run and where they come from."""
    cfg = d["config"]
    weights = ", ".join(f"`{f}` `{cfg[f]}`" for f in FUSION_FIELDS)
    if "split" not in d:  # runs before the dev/test split: the then defaults, fitted on synthetic dev seeds only
        return f"the defaults of then ({weights}), nothing fitted on REALTALK"
    source = ("here set by hand: " + ", ".join(f"`{x}`" for x in d["config_set"]) if d.get("config_set")
              else "these are the defaults")
    return (f"{weights} (the defaults are fitted on REALTALK dev chats 1-5 and the synthetic dev seeds, "
            f"`aim_memory_fusion_fit.json`; {source})")


def aim_memory_fusion_fit(name: str, d: dict) -> str:
    """``benchmarks/aim_memory_realtalk.py --fit``: the routing grid on both dev sets."""
    sets = list(d["dev_sets"])
    cfg = d["config"]
    rows = [[*[g[f] for f in d["grid_values"]],
             *[f"{g['by_set'][s][c]:.3f}" for s in sets for c in ("recall@5 text only", "recall@5 with fields")],
             f"{g['score']:.3f}", "default" if all(g[f] == cfg[f] for f in d["grid_values"]) else ""]
            for g in d["grid"]]
    return "\n".join([
        f"recall@5 of AIM `route_memory` on the dev sets ({'; '.join(f'{s}: ' + ', '.join(map(str, v)) for s, v in d['dev_sets'].items())}), "
        f"each dialogue written once with the config of the run and routed under each grid point. Rule: {d['rule']}. "
        f"Sorted by that score, best first; \"default\" marks the config of the run. The grid records no timings.", "",
        table([*d["grid_values"], *[f"{s}, {c}" for s in sets for c in ("text only", "with fields")], "score", ""],
              rows)])


def embedder_recipes(name: str, d: dict) -> str:
    """``benchmarks/embedder_recipes.py``: int8 recipes of the query embedder, speed and cosine to float32."""
    fastest = min(r["p50_ms"] for r in d["recipes"])
    rows = [[r["recipe"], num(r["p50_ms"]), num(r["p95_ms"]), ratio(r["p50_ms"], fastest),
             f"{r['cosine_to_fp32_mean']:.4f}", f"{r['cosine_to_fp32_min']:.4f}"] for r in d["recipes"]]
    return "\n".join([
        f"all-MiniLM-L6-v2 on ONNX Runtime ({d['threads']} threads, onnxruntime {d['onnxruntime']}): one query "
        f"embedded at a time, {d['recipes'][0]['timed_queries']} timed queries per recipe in rotating rounds (one "
        f"session alive at a time). Cosine of each recipe's vectors to the float32 sentence-transformers model "
        f"on {d['texts']} texts (generated topic sentences, one synthetic dialogue's turns and questions).", "",
        table(["recipe", "p50 ms", "p95 ms", "p50 / fastest p50", "cosine mean", "cosine min"], rows)])


def aim_memory_recall_fit(name: str, d: dict) -> str:
    """``benchmarks/aim_memory_recall.py --fit``: recall@5 of a grid of fusion weights on the dev dialogues."""
    cfg = d["config"]
    merged: dict[tuple, list] = {}  # grid rows that differ only in min_similarity and score the same: one row
    for g in d["grid"]:
        key = (g["lexical_weight"], g["anchor_boost"], g["recall@5 text only"], g["recall@5 with fields"])
        merged.setdefault(key, []).append(g["min_similarity"])
    rows = [[lw, ab, ", ".join(str(m) for m in mins), f"{text:.3f}", f"{fields:.3f}",
             "default" if (lw, ab) == (cfg["lexical_weight"], cfg["anchor_boost"]) and cfg["min_similarity"] in mins
             else ""]
            for (lw, ab, text, fields), mins in merged.items()]
    return "\n".join([
        f"recall@5 of AIM `route_memory` on the dev dialogues (seeds {d['grid_on_dev_seeds'][0]}-"
        f"{d['grid_on_dev_seeds'][-1]}), written once with the default config and routed under each grid point; "
        f"sorted by the sum of both columns. Grid points that differ only in `min_similarity` and score the same "
        f"share a row. The grid records no timings.", "",
        table(["lexical_weight", "anchor_boost", "min_similarity", "recall@5 text only", "recall@5 with fields", ""],
              rows)])


def fp4_gpu(name: str, d: dict) -> str:
    import math

    keep = [n for n in ("torch-bf16", "apt-tiled-nvfp4", "apt-tiled-mxfp4", "apt-tiled-nf4", "apt-cuda-nvfp4",
                        "apt-deq+cublas-nvfp4", "apt-triton-nvfp4", "apt-triton-mxfp4", "apt-triton-nf4",
                        "tinygemm-int4-g128", "bnb-fp4", "bnb-nf4")
            if n in d["rows"][0]["times"]]

    def cell(v: dict) -> str:
        return "-" if v.get("ms") is None else f"{num(1000 * v['ms'])} ({v['speedup_vs_bf16']:.2f}x)"

    rows = [[r["N"], r["K"], r["M"], *[cell(r["times"][n]) for n in keep],
             "-" if "pct_copy_bw" not in r["times"].get("apt-tiled-nvfp4", {}) else
             f"{r['times']['apt-tiled-nvfp4']['pct_copy_bw']:.0f}%"] for r in d["rows"]]
    def geomeans(field: str) -> list[list]:
        geo = []
        for m in sorted({r["M"] for r in d["rows"]}):
            cells = []
            for n in keep:
                vals = [r["times"][n].get(field) for r in d["rows"] if r["M"] == m]
                vals = [v for v in vals if v]
                cells.append(f"{math.exp(sum(math.log(v) for v in vals) / len(vals)):.2f}x" if vals else "-")
            geo.append([m, *cells])
        return geo

    errs = d["rows"][0].get("rel_err_vs_bf16", {})
    out = [f"y = x @ W.T with bf16 x [M, K]; microseconds per call, `triton.testing.do_bench` median (L2 "
           f"flushed by a 256 MB write before each call), speed-up over `torch-bf16` (F.linear, bf16 weight) "
           f"in parentheses; the last column is apt-tiled-nvfp4's weight bytes read per second as a share of "
           f"the card's copy bandwidth ({num(d.get('copy_bandwidth_GBs'))} GB/s, read + write). `apt-tiled-*` "
           f"is `fp4_linear_tiled` (what FP4Linear runs on CUDA for inference up to 64 rows, 128 for nvfp4 / "
           f"mxfp4 with bf16 x, on Hopper 384 for those on weights with 8192+ columns and 512 on weights "
           f"with 8192+ rows since the thirty-fifth session), `apt-cuda-*` the canonical-layout `fp4_linear` (what FP4Linear runs above "
           f"those rows or with gradients).", "",
           table(["N", "K", "M", *keep, "tiled nvfp4 % copy BW"], rows), "",
           "Geometric mean speed-up over bf16 across the shapes, per M:", "",
           table(["M", *keep], geomeans("speedup_vs_bf16"))]
    if any("gpu_speedup_vs_bf16" in v for r in d["rows"] for v in r["times"].values()):
        out += ["", "GPU time alone (`--gpu-time`: a CUDA graph of L2 flush + call, the flushes subtracted; no "
                "host launch cost), geometric mean speed-up over bf16 per M:", "",
                table(["M", *keep], geomeans("gpu_speedup_vs_bf16"))]
    if "one_element_kernel" in d:
        out += ["", "A one-element kernel (the timing's fixed cost), same run: "
                + ", ".join(f"{k} {1000 * v:.2f} us" for k, v in d["one_element_kernel"].items()) + "."]
    if errs:
        out += ["", "Accuracy, same run (first shape, M=1): relative error of y against the bf16 layer: "
                + ", ".join(f"{k} {v:.4f}" for k, v in errs.items())
                + ("." if d.get("tinygemm_weights") else ". (In this run tinygemm's weights were random int4 "
                   "codes, not a quantisation of W: its error is not meaningful, its time is.)")]
    return "\n".join(out)


def fp4_gemv_sweep(name: str, d: dict) -> str:
    keys = list(d["baseline"])
    rows = []
    for v, r in d["variants"].items():
        if "error" in r:
            rows.append([v, *["failed"] * len(keys)])
            continue
        rows.append([v, *[f"{num(r[k]['us'])} ({d['baseline'][k]['bf16_us'] / r[k]['us']:.2f}x)" for k in keys]])
    out = [f"`fp4_linear_tiled` (nvfp4, or the format after `#`), bf16 x, one child process per launch variant "
           f"`APT_FP4_GEMV=rw,kw,stages[,mt[,xm[,balance[,evict_first[,tw[,min_steps]]]]]]` "
           f"(default = the built-in heuristic); "
           f"microseconds, do_bench median, speed-up over bf16 "
           f"F.linear of the same run. Copy bandwidth {num(d['copy_bandwidth_GBs'])} GB/s. Column = N x K / M. "
           f"Accuracy: not recorded by the sweep (the variants compute the same sums; tests/gpu/"
           f"test_fp4_gemv_cuda.py checks them against the reference).", "",
           table(["variant", *keys], [["bf16 F.linear", *[num(d['baseline'][k]['bf16_us']) for k in keys]]] + rows)]
    if all("us_clean" in r[k] for r in d["variants"].values() if "error" not in r for k in keys):
        clean = [[v, *[f"{num(r[k]['us_clean'])} ({d['baseline'][k]['bf16_us_clean'] / r[k]['us_clean']:.2f}x)"
                       for k in keys]] for v, r in d["variants"].items() if "error" not in r]
        out += ["", "The same with L2 evicted by a 256 MB *read* before each call (no dirty lines to write "
                "back during the kernel):", "",
                table(["variant", *keys], [["bf16 F.linear", *[num(d['baseline'][k]['bf16_us_clean'])
                                                               for k in keys]]] + clean)]
    return "\n".join(out)


def cloud(name: str, d: dict) -> str:
    serving = d["serving"]
    rows = []
    for c in sorted(serving, key=int):
        sv = serving[c]
        srv, one, batch = sv["server"], sv["local_one"], sv["local_batch"]
        rows.append([c, num(srv["requests_per_s"]), num(srv["tokens_per_s"]), num(srv["latency_p50_s"]),
                     num(srv["latency_p95_s"]), num(srv.get("mean_batch")), num(one["requests_per_s"]),
                     num(batch["requests_per_s"]), f"{sv['server_vs_local_one']:.2f}x",
                     f"{sv['server_vs_local_batch']:.2f}x"])
    rem = d["remote"]
    rrows = [[b, num(rem[b]["local_ms"]), num(rem[b]["remote_ms"]), num(rem[b]["overhead_ms"]),
              num(rem[b]["remote_p95_ms"])] for b in rem if b.isdigit()]
    st = rem.get("stats", {})
    return "\n".join([
        "**Serving** (`apt-ext serve`, a 4-layer d_model 128 byte-level APT model, 32 requests of 32 greedy "
        "tokens per level; the clients share the two cores with the server) against the model's own "
        "`generate` in process, one request at a time and in batches of the client count. Medians of the "
        f"repeats, ratios the median of each repeat's ratio (all runs are in the JSON; load average {d.get('load_before')} before, "
        f"{d.get('load_after')} after). Accuracy: greedy outputs identical to `generate` "
        "(tests/test_cloud_server.py).", "",
        table(["clients", "serve req/s", "serve tok/s", "p50 s", "p95 s", "mean batch", "local one-at-a-time req/s",
               "local batch req/s", "serve / one-at-a-time", "serve / local batch"], rows), "",
        "**RemoteModule** (a 4096x4096 fp32 Linear in a Ray actor on a local Ray instance) against the same "
        f"layer in process; weights sent {st.get('weight_syncs', '?')} time(s), "
        f"{num(st.get('bytes_weights', 0) / 2**20)} MiB. Accuracy: outputs equal the local layer's "
        "(tests/test_cloud_remote.py).", "",
        table(["batch", "local ms", "RemoteModule ms", "overhead ms", "remote p95 ms"], rrows)])


def build_time(name: str, d: dict) -> str:
    """``benchmarks/build_time.py``: clean CMake + ninja build of the extension, per translation unit."""
    units = d["units"]
    rows = [[f"`{u}`", num(v["wall_s"]), num(v["cpu_s"])] for u, v in units.items()]
    return "\n".join([
        f"Source tree {d.get('source_commit') or 'not recorded'}; {d['jobs']} ninja jobs on {d['cores']} cores, "
        f"{d['compiler']}; ccache off. Configure {num(d['configure_s'])} s, compile and link {num(d['build_s'])} s, "
        f"**total {num(d['total_s'])} s** (link {num(d['link_s'])} s). Sum over translation units: "
        f"{num(d['sum_of_units_s'])} s wall, {num(d.get('sum_of_units_cpu_s'))} s CPU (user + system). Wall "
        "times grow with the machine's load (other builds on the same cores); CPU times much less."
        + (f" Note: {d['note']}." if d.get("note") else ""), "",
        table(["translation unit", "wall s", "CPU s"], rows)])


def fp4_cpu_pieces_ab(name: str, d: dict) -> str:
    """An A/B of ``fp4_cpu.py --quick`` runs (variants of the CPU kernels, rebuilt in between):
    per run, M = 1 at 4096 x 4096, each format's time on 2 threads and its speed-up from 1 to 2."""
    fmts = ("nvfp4", "mxfp4", "nf4")
    rows = []
    for run in d["runs"]:
        cell = {(r["M"], r["threads"]): r for r in run["speed"] if r["N"] == 4096}
        one, two = cell[(1, 1)], cell[(1, 2)]
        rows.append([run["run"], run["variant"], *(num(two[f"{f}_ms"]) for f in fmts),
                     *(ratio(one[f"{f}_ms"], two[f"{f}_ms"]) for f in fmts),
                     ratio(one["torch_int4_ms"], two["torch_int4_ms"]), ratio(one["read_floor_ms"], two["read_floor_ms"])])
    err = ", ".join(f"{e['fmt']} {num(e['rel_err'])}" for e in d["error_gaussian"])
    return "\n".join([
        "`FP4Linear` (float32 x), 4096 x 4096, M = 1; ms per call on 2 threads (median of each run's rounds) and "
        "the speed-up from 1 to 2 threads timed in the same rounds. Accuracy (relative output error against the "
        f"float32 layer, Gaussian weights): {err}; the variants compute the same values (tests/test_fp4_linear.py)."
        + (f" Note: {d['note']}." if d.get("note") else ""),
        "", table(["run", "variant", *(f"{f} ms, 2 threads" for f in fmts), *(f"{f} 1 -> 2 threads" for f in fmts),
                   "torch int4 1 -> 2", "read floor 1 -> 2"], rows)])


def cpu_threads(name: str, d: dict) -> str:
    rows = [[r["condition"], f"{r['load_average_1min']:.1f}", r["threads"],
             "yes" if r["chosen_by_threads_for_load"] else "", num(r["step_ms_median"])] for r in d["rows"]]
    out = [f"Optimizer steps of the demo's model on {d['cpus']} CPUs, median over {d['params']['rounds']} rounds of "
           f"{d['params']['steps'] - d['params']['warmup']} steps, thread counts interleaved; \"busy\" adds "
           f"{d['params']['busy']} processes that spin on the CPU. `threads_for_load` is what `apt-ext train` and "
           f"`apt-ext demo` choose.", "",
           table(["condition", "load average", "threads", "threads_for_load", "median step ms"], rows)]
    demo = d.get("demo")
    if demo:
        out += ["", f"`apt-ext demo` with its defaults: exit code {demo['exit_code']}, {demo['wall_s']:.0f} s wall, "
                f"load average {demo['load_average_1min_start']:.1f} at its start and "
                f"{demo['load_average_1min_end']:.1f} at its end ({demo['threads_line']})."]
    return "\n".join(out)


def e2e_encoder(name: str, d: dict) -> str:
    """The BERT-base-size encoder: per variant and batch, eager and CUDA-graph latency, the graph
    latency against bf16's in the same run, weights and the output's cosine against fp32."""
    rows = []
    for r in d["rows"]:
        base = next(b for b in d["rows"] if b["batch"] == r["batch"] and b["variant"] == "bf16")
        rows.append([r["variant"], r["batch"], num(r["latency_ms"]), num(r["graph_latency_ms"]),
                     ratio(r["graph_latency_ms"], base["graph_latency_ms"]), num(r["weights_MB"]),
                     f"{r['cosine_vs_fp32']:.5f}"])
    env = ", ".join(f"{k}={v}" for k, v in d.get("env", {}).items()) or "none"
    return "\n".join([f"{d['model']}; APT_FP4_* settings: {env}. Latency: median ms per forward (do_bench); "
                      "\"graph / bf16\" is the CUDA-graph latency over bf16's (lower is faster). Accuracy: "
                      "cosine of the output against the fp32 model's.", "",
                      table(["variant", "batch", "eager ms", "graph ms", "graph / bf16", "weights MB",
                             "cos vs fp32"], rows)])


def decode_attention(name: str, d: dict) -> str:
    """``benchmarks/decode_attention.py``: apt_ext.attention.decode_attention against SDPA (masked
    whole cache; sliced to the attended prefix) and compiled flex attention, per call of a 32-call
    CUDA graph, and (``--sweep``) apt's kernel at each split count and keys per step."""
    ways = ("sdpa_masked", "sdpa_prefix", "flex", "apt")
    rows = [[str(r["batch"]), str(r["context"]), str(r["length"]),
             *(f"{r[w]['us']:.1f} ({r[w]['max_abs_err']:.1e})" for w in ways),
             f"{r['apt_speedup_vs_sdpa_masked']:.2f}x", f"{r['apt_speedup_vs_flex']:.2f}x"] for r in d["runs"]]
    lines = [f"One new token's attention, {d['heads']} query / {d['kv_heads']} key heads of {d['head_dim']}, "
             f"{d['dtype']}: us per call (largest absolute error against a float64 reference).", "",
             table(["batch", "cache", "length", *ways, "apt vs sdpa_masked", "apt vs flex"], rows)]
    swept = [r for r in d["runs"] if "sweep" in r]
    if swept:
        names = list(swept[0]["sweep"])
        lines += ["", "apt's kernel with the split count and keys per step pinned (us per call):", "",
                  table(["batch", "cache", "length", *(n[4:] for n in names)],
                        [[str(r["batch"]), str(r["context"]), str(r["length"]),
                          *(f"{r['sweep'][n]['us']:.1f}" for n in names)] for r in swept])]
    return "\n".join(lines)


def fp4_norm_fusion(name: str, d: dict) -> str:
    """``benchmarks/fp4_norm_fusion.py``: the GEMV with its fused RMSNorm / residual against the
    plain GEMV and the composite (separate kernels), per call of a CUDA graph of calls."""
    handoff = all("handoff" in r for r in d["runs"])  # (a way since the forty-ninth session)
    ways = ("plain", "composite", "fused", "handoff") if handoff else ("plain", "composite", "fused")
    rows = [[r["projection"], f"{r['n']} x {r['k']}", r["fusion"], str(r["m"]),
             *(f"{r[w]['us']:.2f}" for w in ways), f"{r['fused_minus_plain_us']:+.2f}",
             *([f"{r['handoff_minus_plain_us']:+.2f}"] if handoff else []),
             f"{r['composite_minus_fused_us']:+.2f}", f"{r['fused_rel_diff_vs_composite']:.1e}"] for r in d["runs"]]
    variant = f"Kernel: {d['variant']}. " if "variant" in d else ""
    handoff_text = (" handoff: the norm GEMVs given x's sums of squares, the residual GEMVs returning their "
                    "output's." if handoff else "")
    return "\n".join([f"{variant}{d['fmt']} weights, {d['dtype']} x, us per call ({d['calls_per_timing']} calls on as many "
                      "weight copies per timing); fused - plain: what the fusion adds to the GEMV; composite - fused: "
                      f"what it saves.{handoff_text}", "",
                      table(["projection", "N x K", "fusion", "M", *ways, "fused - plain",
                             *(["handoff - plain"] if handoff else []), "composite - fused",
                             "fused vs composite"], rows)])


SECTIONS = [
    Section("FP4 on the CPU, AVX2 path (`benchmarks/fp4_cpu.py`)", ["fp4_cpu_avx2*.json"], fp4_cpu,
            missing="No JSON from a CPU on the AVX2 path yet."),
    Section("FP4 on the CPU, work-piece order A/B (`benchmarks/fp4_cpu.py --quick`)", ["fp4_cpu_pieces_ab_*.json"],
            fp4_cpu_pieces_ab, level=3),
    Section("FP4 on the CPU, AVX-512 path (`benchmarks/fp4_cpu.py`)",
            ["fp4_cpu.json", "fp4_cpu_run2.json", "fp4_cpu_avx512*.json"], fp4_cpu),
    Section("FP4 on the GPU (`benchmarks/fp4_linear.py`)", ["fp4_linear_*.json"], fp4_gpu,
            missing="No JSON: the current CUDA `fp4_linear` has not been timed on a GPU. (An earlier kernel "
                    "version was timed on an H100 once, without saving JSON; those numbers are withdrawn.)"),
    Section("FP4 GEMV launch sweep on the GPU (`benchmarks/fp4_gemv_sweep.py`)", ["fp4_gemv_sweep_NVIDIA_H200.json"],
            fp4_gemv_sweep, level=3),
    Section("Decode attention (`benchmarks/decode_attention.py`)", ["decode_attention_*.json"], decode_attention),
    Section("FP4 GEMV with its RMSNorm / residual fused (`benchmarks/fp4_norm_fusion.py`)", ["fp4_norm_fusion_*.json"],
            fp4_norm_fusion, missing="No JSON yet: not run on a GPU."),
    Section("FP4 end to end: a BERT-base-size encoder (`benchmarks/e2e_encoder.py`)", ["e2e_encoder_*.json"],
            e2e_encoder, level=3),
    Section("Left-spin residual (`benchmarks/left_spin.py`)",
            ["left_spin_cpu_20261127T034445Z.json", "left_spin_cuda_20261127T033348Z.json"], left_spin),
    Section("VGPU stack (`benchmarks/vgpu.py`)",
            ["vgpu_cpu_x86_64_x2.json", "vgpu_cpu_quiet_x86_64_x2.json", "vgpu_nvidia_h100_80gb_hbm3.json",
             "vgpu_nvidia_h200.json"], vgpu),
    Section("VGPU stack: the SSD level alone (`benchmarks/vgpu.py --ssd-only`)", ["vgpu_ssd_*.json"], vgpu_ssd,
            level=3),
    Section("APT model: left-spin learning-rate sweep (`benchmarks/left_spin_training.py`)",
            ["left_spin_training_quick.json"], left_spin_training),
    Section("APT model: step time (`benchmarks/model_throughput.py`)",
            ["model_throughput_quick.json", "model_throughput.json", "model_throughput_s21_cast_ab.json",
             "model_throughput_profile_autopoietic.json", "model_throughput_reduce_overhead.json",
             "model_throughput_s22_auto.json", "model_throughput_s22_decomposed.json",
             "model_throughput_quick_s23_kernels.json", "model_throughput_s33_cap.json",
             "model_throughput_s33_nocap.json", "model_throughput_s33_ab.json"],
            model_throughput),
    Section("APT model: prefix sum on the GPU (`benchmarks/prefix_sum.py`)", ["prefix_sum_*.json"], prefix_sum,
            level=3),
    Section("Virtual VRAM: FP4 weights paged through the VGPU stack (`benchmarks/virtual_vram.py`)",
            ["virtual_vram_*.json"], virtual_vram),
    Section("AIM-Memory routing and latency (`benchmarks/aim_memory.py`)",
            ["aim_memory_full.json", "aim_memory_quick.json", "aim_memory_e2e_*.json"], aim_memory),
    Section("AIM-Memory route phases (`benchmarks/aim_memory_phases.py`)", ["aim_memory_phases_*.json"],
            aim_memory_phases, level=3),
    Section("AIM-Memory recall on multi-session dialogues (`benchmarks/aim_memory_recall.py`)",
            ["aim_memory_recall_test.json", "aim_memory_recall_test_int8.json", "aim_memory_recall_test_aim4.json",
             "aim_memory_recall_test_main_recheck.json", "aim_memory_recall_test_fp32_same_code.json",
             "aim_memory_recall_test_int8_fp32ffn0.json"], aim_memory_recall),
    Section("AIM-Memory recall on real conversations: REALTALK (`benchmarks/aim_memory_realtalk.py`)",
            ["aim_memory_realtalk*.json"], aim_memory_realtalk, level=3),
    Section("AIM-Memory query embedder: int8 recipes (`benchmarks/embedder_recipes.py`)",
            ["embedder_recipes.json"], embedder_recipes, level=3),
    Section("AIM-Memory fusion-weight fit on the dev dialogues (`benchmarks/aim_memory_recall.py --fit`)",
            ["aim_memory_recall_fit.json"], aim_memory_recall_fit, level=3),
    Section("AIM-Memory routing fit on REALTALK dev chats and synthetic dev seeds "
            "(`benchmarks/aim_memory_realtalk.py --fit`)", ["aim_memory_fusion_fit.json"], aim_memory_fusion_fit,
            level=3),
    Section("Cloud backends (`benchmarks/cloud.py`)", ["cloud_cpu.json"], cloud),
    Section("Build time of the C++ extension (`benchmarks/build_time.py`)",
            ["build_time_cpu_baseline.json", "build_time_cpu.json"], build_time,
            missing="No JSON: run `python benchmarks/build_time.py`."),
    Section("CPU threads on a busy machine, and the demo's duration (`benchmarks/cpu_threads.py`)",
            ["cpu_threads.json"], cpu_threads),
]

HEADER = """# Benchmark results

Generated by `python benchmarks/render_results.py` from the JSON files in `benchmarks/results/`
(do not edit by hand; `tests/test_published_numbers.py` fails when this file and the JSONs
disagree). Each block names its JSON and the date, machine, torch version, load and command
recorded in it. The CPU numbers come from a shared 2-core VM: timings there vary between runs.
"""


def files_of(section: Section) -> list[Path]:
    found: list[Path] = []
    for pattern in section.files:
        found += sorted(RESULTS.glob(pattern))
    return found


def render() -> str:
    parts = [HEADER]
    rendered: set[Path] = set()
    for sec in SECTIONS:
        parts.append(f"{'#' * sec.level} {sec.title}\n")
        paths = files_of(sec)
        if not paths:
            parts.append(sec.missing + "\n")
        rendered.update(paths)
        for path in paths:
            data = json.loads(path.read_text())
            if len(paths) > 1:
                parts.append(f"### {path.stem}\n")
            parts.append(meta_line(path.name, data) + "\n")
            parts.append(sec.render(path.name, data).strip() + "\n")
    others = sorted(set(RESULTS.glob("*.json")) - rendered)
    if others:
        parts.append("## Other recorded runs\n")
        parts.append("Raw data without a section above (superseded runs, or results whose section is not "
                     "written yet):\n")
        parts += [f"- {meta_line(p.name, json.loads(p.read_text()))}" for p in others]
        parts.append("")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only compare with the committed RESULTS.md")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        if OUT.read_text() != text:
            print(f"{OUT} is out of date: run python benchmarks/render_results.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
