"""VGPU stack benchmark: link bandwidth, SSD reads, offloaded inference (one run, one machine).

  python benchmarks/vgpu.py            # full run (H100: ~8 GB bf16 model, 25% device budget)
  python benchmarks/vgpu.py --quick    # small sizes (~1 GB model on GPU)
  python benchmarks/vgpu.py --cpu      # CPU only: the 'device' level is the CPU (tiny sizes)

Sections (each compares apt_ext with the alternatives side by side):
 1. host->device: a pinned copy_ and a pageable copy_ of N bytes vs the pager's promotion of a
    tensor of N bytes from its host slab (get() of an entry whose only fast copy is in the slab).
 2. SSD: the pager reading an N-byte page (SSD -> host) and writing one (host -> SSD, evict) with
    io_uring and with the pread/pwrite pool vs `dd iflag=direct` / `dd oflag=direct` (and fio, if
    installed) reading and writing files of the same size in the same directory.
 3. Offloaded inference of a stack of MLP blocks with a device budget of 25% of the weights,
    M in {1, 256}: resident, apt_ext offload(prefetch=2), accelerate cpu_offload / disk_offload,
    the PCIe bound (bytes moved / measured pinned bandwidth); repeated with FP4 weights when the
    FP4 kernels are built. Hit rate and bytes moved come from stats().
Writes benchmarks/results/vgpu_<machine>.json and benchmarks/plots/vgpu_<machine>.png.
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

import apt_ext
from apt_ext import _native
from apt_ext.vgpu import VGPUStack, offload

ROOT = Path(__file__).resolve().parent
MB = 1 << 20


# ---- timing ---------------------------------------------------------------------------
def timed(fn, reps: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``reps`` runs after one warm-up (CUDA events on GPU)."""
    fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def device_level(device: torch.device, mb: float) -> dict:
    if device.type == "cuda":
        return {"device": str(device), "capacity_mb": mb}
    return {"device": "cpu", "kind": "device", "capacity_mb": mb}


# ---- 1. host -> device ----------------------------------------------------------------
def bench_link(device: torch.device, nbytes: int, reps: int) -> dict:
    src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8)
    dst = torch.empty(nbytes, dtype=torch.uint8, device=device)
    pinned = src.pin_memory() if device.type == "cuda" else src
    t_pinned = timed(lambda: dst.copy_(pinned, non_blocking=True), reps, device)
    t_pageable = timed(lambda: dst.copy_(src), reps, device)
    mb = nbytes / MB
    with VGPUStack([device_level(device, 1.05 * mb), {"device": "cpu", "capacity_mb": 1.05 * mb}]) as st:
        st.put("x", src)
        st.evict("x")  # only copy now in the host slab

        def promote() -> None:
            st.get("x")
            st.evict("x")  # drops the device copy (the slab copy stays): no transfer

        t_pager = timed(promote, reps, device)
        link = st.stats()["links"]["host->device"]
    gb = nbytes / 1e9
    return {"bytes": nbytes, "pinned_copy_gbps": gb / t_pinned, "pageable_copy_gbps": gb / t_pageable,
            "pager_gbps": gb / t_pager, "pager_link_stat_gbps": link["gbps"],
            "pager_vs_pinned": t_pinned / t_pager}


# ---- 2. SSD -> host -------------------------------------------------------------------
def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False


def run_dd(path: str) -> float | None:
    if shutil.which("dd") is None:
        return None
    p = subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=4M", "iflag=direct"], capture_output=True, text=True)
    m = re.search(r"(\d+) bytes .* copied, ([\d.]+) s", p.stderr)
    return int(m.group(1)) / float(m.group(2)) / 1e9 if p.returncode == 0 and m else None


def run_dd_write(src: str, dst: str) -> float | None:
    """GB/s of `dd oflag=direct` copying ``src`` (read once first, so it comes from the page
    cache) into a new file ``dst``."""
    if shutil.which("dd") is None:
        return None
    with open(src, "rb") as f:
        while f.read(1 << 24):
            pass
    p = subprocess.run(["dd", f"if={src}", f"of={dst}", "bs=4M", "oflag=direct"], capture_output=True, text=True)
    m = re.search(r"(\d+) bytes .* copied, ([\d.]+) s", p.stderr)
    return int(m.group(1)) / float(m.group(2)) / 1e9 if p.returncode == 0 and m else None


FIO_BLOCKS = ("1M", "4M")  # fio runs with each; the better one is the tool's figure


def run_fio(path: str, size: int, rw: str = "read", bs: str = "1M") -> float | None:
    """GB/s of fio reading (``rw`` "read") or writing ("write") ``size`` bytes of ``path``
    sequentially: ``bs`` blocks, io_uring, queue depth 64, O_DIRECT."""
    if shutil.which("fio") is None:
        return None
    cmd = ["fio", f"--name=seq{rw}", f"--filename={path}", f"--rw={rw}", f"--bs={bs}", "--iodepth=64",
           "--ioengine=io_uring", "--direct=1", f"--size={size}", "--output-format=json"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return None
    return json.loads(p.stdout)["jobs"][0][rw]["bw_bytes"] / 1e9


def ssd_stack(nbytes: int, ssd_dir: str, backend: str, io_chunk_mb: float = 4) -> VGPUStack:
    """A host level and an SSD level (under ``ssd_dir``) with room for one ``nbytes`` page in the
    host slab and two on the SSD; 64 requests in flight."""
    return VGPUStack([{"device": "cpu", "capacity_mb": 1.05 * nbytes / MB},
                      {"device": "ssd", "capacity_mb": 2.2 * nbytes / MB, "path": ssd_dir}],
                     io_backend=backend, queue_depth=64, io_chunk_mb=io_chunk_mb)


def time_read(st: VGPUStack, key: str) -> float:
    """Seconds to bring ``key``'s page from the SSD level into the host slab through the I/O
    backend (checksum verified); the slab copy is dropped again after (the SSD copy stays)."""
    t0 = time.perf_counter()
    st.prefetch(key)
    st.wait_prefetch()
    secs = time.perf_counter() - t0
    st.evict(key)
    return secs


def time_write(st: VGPUStack, key: str, src: torch.Tensor) -> float:
    """Seconds for evict() to write ``src``, stored under ``key``, to the SSD level (O_DIRECT where
    the file system allows); the page is removed after."""
    st.put(key, src)
    t0 = time.perf_counter()
    st.evict(key)
    secs = time.perf_counter() - t0
    st.remove(key)
    return secs


def bench_ssd(nbytes: int, ssd_dir: str, reps: int) -> dict:
    out: dict = {"bytes": nbytes, "dir": ssd_dir}
    src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8)
    page_file = None
    for backend in ("io_uring", "pread"):
        try:
            st = ssd_stack(nbytes, ssd_dir, backend)
        except RuntimeError as exc:
            out[backend] = {"error": str(exc)}
            continue
        st.put("x", src)
        st.evict("x")  # written to SSD
        s = st.stats()
        out["o_direct"] = s["o_direct"]
        out["checksum"] = s["checksum"]
        secs = []
        for _ in range(reps):
            dropped = drop_caches()
            secs.append(time_read(st, "x"))
        link = st.stats()["links"]["ssd->host"]
        write_secs = [time_write(st, "w", src) for _ in range(reps)]
        out[backend] = {"gbps": nbytes / statistics.median(secs) / 1e9, "link_stat_gbps": link["gbps"],
                        "write_gbps": nbytes / statistics.median(write_secs) / 1e9,
                        "page_cache_dropped": dropped}
        if backend == "io_uring":  # keep a copy of the page file for dd/fio
            files = os.listdir(s["ssd_dir"])
            page_file = os.path.join(ssd_dir, "bench_page.bin")
            shutil.copyfile(os.path.join(s["ssd_dir"], files[0]), page_file)
        st.close()
    if page_file:
        drop_caches()
        out["dd_direct_gbps"] = run_dd(page_file)
        scratch = os.path.join(ssd_dir, "bench_write.bin")
        out["dd_direct_write_gbps"] = run_dd_write(page_file, scratch)
        out["fio_by_block"] = {}
        for bs in FIO_BLOCKS:
            drop_caches()
            read = run_fio(page_file, nbytes, "read", bs)
            if os.path.exists(scratch):
                os.unlink(scratch)
            out["fio_by_block"][bs] = {"gbps": read, "write_gbps": run_fio(scratch, nbytes, "write", bs)}
        for key, field in (("fio_gbps", "gbps"), ("fio_write_gbps", "write_gbps")):
            values = [v[field] for v in out["fio_by_block"].values() if v[field]]
            out[key] = max(values) if values else None
        for f in (page_file, scratch):
            if os.path.exists(f):
                os.unlink(f)
    for kind, tools, key in (("read", ("dd_direct_gbps", "fio_gbps"), "gbps"),
                             ("write", ("dd_direct_write_gbps", "fio_write_gbps"), "write_gbps")):
        best = max([v for v in (out.get(t) for t in tools) if v] or [0.0])
        if best and isinstance(out.get("io_uring"), dict) and key in out["io_uring"]:
            out["io_uring_vs_best_tool" if kind == "read" else "io_uring_write_vs_best_tool"] = out["io_uring"][key] / best
    return out


def bench_chunks(nbytes: int, ssd_dir: str, reps: int, chunks_mb: tuple[float, ...] = (1, 4, 8)) -> dict:
    """io_uring read and write GB/s of one ``nbytes`` page per ``io_chunk_mb``: one stack per
    chunk size, every round timing each in turn (rotating order), medians over ``reps`` rounds."""
    src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8)
    stacks = {}
    for c in chunks_mb:
        try:
            stacks[c] = ssd_stack(nbytes, ssd_dir, "io_uring", io_chunk_mb=c)
        except RuntimeError as exc:
            return {"error": str(exc)}
        stacks[c].put("x", src)
        stacks[c].evict("x")
    reads: dict = {c: [] for c in chunks_mb}
    writes: dict = {c: [] for c in chunks_mb}
    for r in range(reps):
        for c in chunks_mb[r % len(chunks_mb):] + chunks_mb[:r % len(chunks_mb)]:
            drop_caches()
            reads[c].append(time_read(stacks[c], "x"))
            writes[c].append(time_write(stacks[c], "w", src))
    for st in stacks.values():
        st.close()
    return {str(c): {"gbps": nbytes / statistics.median(reads[c]) / 1e9,
                     "write_gbps": nbytes / statistics.median(writes[c]) / 1e9} for c in chunks_mb}


# ---- 3. offloaded inference -----------------------------------------------------------
class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.nn.functional.gelu(self.up(x)))


def build_model(d: int, n_blocks: int, dtype: torch.dtype) -> nn.Module:
    with torch.device("meta"):
        model = nn.Sequential(*[Block(d) for _ in range(n_blocks)])
    model = model.to_empty(device="cpu").to(dtype)
    # One random pool, copied into every weight at a different offset: random data, fast to build.
    g = torch.Generator().manual_seed(0)
    pool = (torch.randn(8 * d * d + 4099 * n_blocks, generator=g) * d ** -0.5).to(dtype)
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            off = (i * 4099) % (pool.numel() - p.numel() + 1)
            p.copy_(pool[off:off + p.numel()].view(p.shape))
    return model.eval()


def quantize_fp4(model: nn.Module, device: torch.device) -> nn.Module:
    """nvfp4 copy of ``model`` (CPU), quantised block by block on ``device``."""
    from apt_ext import quantize_

    q = copy.deepcopy(model)
    for i in range(len(q)):
        q[i] = quantize_(q[i].to(device), fmt="nvfp4").to("cpu")
    return q


def weight_bytes(model: nn.Module) -> int:
    return sum(t.nbytes for t in list(model.parameters()) + list(model.buffers()))


def bench_offload(model_cpu: nn.Module, device: torch.device, budget: float, ms: list[int], reps: int,
                  pinned_gbps: float, tmp: str, label: str, ref_outputs: dict | None) -> tuple[dict, dict]:
    """Per M: seconds per forward resident / offloaded / accelerate, bytes moved, hit rate."""
    d = model_cpu[0].up.in_features
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    wb = weight_bytes(model_cpu)
    res: dict = {"label": label, "weight_bytes": wb, "device_budget_bytes": int(budget * wb), "per_m": {}}
    xs = {m: torch.randn(m, d, generator=torch.Generator().manual_seed(m)).to(device=device, dtype=dtype) for m in ms}
    outputs: dict = {}
    # (a) resident
    if device.type == "cpu" or wb < 0.8 * torch.cuda.mem_get_info()[0]:
        resident = copy.deepcopy(model_cpu).to(device)
        with torch.no_grad():
            for m in ms:
                res["per_m"].setdefault(m, {})["resident_s"] = timed(lambda: resident(xs[m]), reps, device)
                outputs[m] = resident(xs[m]).float().cpu()
        del resident
        torch.cuda.empty_cache() if device.type == "cuda" else None
    # (b) apt_ext offload
    model = copy.deepcopy(model_cpu)
    levels = [device_level(device, budget * wb / MB), {"device": "cpu", "capacity_mb": 1.1 * wb / MB}]
    with VGPUStack(levels) as st:
        handle = offload(model, st, prefetch=2)
        with torch.no_grad():
            for m in ms:
                model(xs[m])  # records the execution order
                sync(device)
                s0 = st.stats()
                t = timed(lambda: model(xs[m]), reps, device)
                sync(device)
                s1 = st.stats()
                n_fwd = reps + 1
                moved = (s1["links"].get("host->device", {}).get("bytes", 0)
                         - s0["links"].get("host->device", {}).get("bytes", 0)) / n_fwd
                hits = s1["levels"][0]["hits"] - s0["levels"][0]["hits"]
                gets = s1["gets"] - s0["gets"]
                r = res["per_m"].setdefault(m, {})
                r.update({"vgpu_s": t, "bytes_moved_per_forward": moved, "hit_rate": hits / gets if gets else 0.0,
                          "h2d_link_gbps": s1["links"].get("host->device", {}).get("gbps", 0.0),
                          "pcie_bound_s": moved / (pinned_gbps * 1e9) if pinned_gbps else None})
                out = model(xs[m]).float().cpu()
                ref = outputs.get(m) if ref_outputs is None else ref_outputs.get(m)
                if ref is not None:  # max |out - ref| / max |ref|
                    r["rel_err_vs_resident"] = float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
                outputs.setdefault(m, out)
        del handle, model
    # (c) accelerate
    try:
        import accelerate  # noqa: F401  (installed on the GPU machine; optional elsewhere)
        from accelerate import cpu_offload, disk_offload
    except ImportError as exc:
        res["accelerate"] = f"not installed: {exc}"
        return res, outputs
    res["accelerate"] = accelerate.__version__
    # offload_buffers=True: FP4Linear keeps its 4-bit weight in buffers, which accelerate would
    # otherwise leave resident on the device.
    for name, fn in (("cpu_offload", lambda m: cpu_offload(m, execution_device=device, offload_buffers=True)),
                     ("disk_offload", lambda m: disk_offload(m, os.path.join(tmp, "accel_disk"), execution_device=device,
                                                             offload_buffers=True))):
        model = copy.deepcopy(model_cpu)
        try:
            fn(model)
            with torch.no_grad():
                for m in ms:
                    res["per_m"][m][f"accelerate_{name}_s"] = timed(lambda: model(xs[m]), reps, device)
        except Exception as exc:  # recorded, so that our own numbers are still written
            res[f"accelerate_{name}_error"] = f"{type(exc).__name__}: {exc}"
        del model
        shutil.rmtree(os.path.join(tmp, "accel_disk"), ignore_errors=True)
    return res, outputs


def fp4_available(device: torch.device) -> bool:
    """FP4 linear usable on ``device`` (a CUDA/CPU kernel, or the Triton kernel on a GPU)."""
    if device.type == "cpu":
        return _native.has_kernel("fp4_linear", "CPU") and _native.has_kernel("fp4_quantize", "CPU")
    ops = apt_ext.capabilities()["ops"]
    return all(ops[o]["cuda"]["usable"] or ops[o]["triton"]["usable"] for o in ("fp4_linear", "fp4_quantize"))


# ---- report ---------------------------------------------------------------------------
def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    link = result["link"]
    axes[0].bar(["pinned copy_", "pageable copy_", "VGPU pager"],
                [link["pinned_copy_gbps"], link["pageable_copy_gbps"], link["pager_gbps"]], color=["C0", "C1", "C2"])
    axes[0].set_title(f"host->{result['device']} ({link['bytes'] / MB:.0f} MiB)")
    axes[0].set_ylabel("GB/s")
    ssd = result["ssd"]
    names, vals = [], []
    colors = []
    for key, kind, color in (("gbps", "read", "C3"), ("write_gbps", "write", "C4")):
        for k, lab in (("io_uring", "VGPU io_uring"), ("pread", "VGPU pread/pwrite")):
            if isinstance(ssd.get(k), dict) and key in ssd[k]:
                names.append(f"{lab} {kind}"), vals.append(ssd[k][key]), colors.append(color)
    for k, lab, color in (("dd_direct_gbps", "dd iflag=direct", "C3"), ("fio_gbps", "fio read", "C3"),
                          ("dd_direct_write_gbps", "dd oflag=direct", "C4"), ("fio_write_gbps", "fio write", "C4")):
        if ssd.get(k):
            names.append(lab), vals.append(ssd[k]), colors.append(color)
    axes[1].bar(names, vals, color=colors)
    axes[1].set_title(f"SSD read / write ({ssd['bytes'] / MB:.0f} MiB, O_DIRECT={ssd.get('o_direct')})")
    axes[1].set_ylabel("GB/s")
    axes[1].tick_params(axis="x", rotation=20)
    ax = axes[2]
    runs = result["offload"]
    methods = ["resident_s", "vgpu_s", "pcie_bound_s", "accelerate_cpu_offload_s", "accelerate_disk_offload_s"]
    labels, xs, width = [], [], 0.8 / max(1, len(methods))
    bars = [(f"{r['label']} M={m}", v) for r in runs for m, v in r["per_m"].items()]
    for j, meth in enumerate(methods):
        ys = [v.get(meth) or 0.0 for _, v in bars]
        ax.bar([i + j * width for i in range(len(bars))], [y * 1e3 for y in ys], width, label=meth[:-2])
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(bars))])
    ax.set_xticklabels([b[0] for b in bars], rotation=20)
    ax.set_yscale("log")
    ax.set_ylabel("ms per forward")
    ax.set_title("offloaded inference (device budget 25%)")
    ax.legend(fontsize=7)
    fig.suptitle(f"apt_ext VGPU — {result['machine']} — {result['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--cpu", action="store_true", help="CPU only (the 'device' level is the CPU)")
    ap.add_argument("--ssd-dir", default=None, help="directory for SSD pages (default: a temp dir under /tmp)")
    ap.add_argument("--model-gb", type=float, default=None, help="total bf16 weight size of the MLP stack")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--ssd-mb", type=int, default=None, help="SSD page size timed (default 2048 on a GPU, 128 --cpu)")
    ap.add_argument("--ssd-only", action="store_true", help="only the SSD part (and its io_chunk_mb comparison)")
    args = ap.parse_args(argv)
    device = torch.device("cuda:0" if torch.cuda.is_available() and not args.cpu else "cpu")
    gpu = device.type == "cuda"
    if gpu:
        link_bytes, ssd_bytes = (256 * MB, 512 * MB) if args.quick else (1024 * MB, 2048 * MB)
        model_gb = args.model_gb or (1.0 if args.quick else 8.0)
        d, reps = 4096, args.reps or 3
    else:
        link_bytes, ssd_bytes = (16 * MB, 32 * MB) if args.quick else (64 * MB, 128 * MB)
        model_gb = args.model_gb or (0.016 if args.quick else 0.064)
        d, reps = 256, args.reps or 3
    if args.ssd_mb is not None:
        if args.ssd_mb < 1:
            ap.error("--ssd-mb must be >= 1")
        ssd_bytes = args.ssd_mb * MB
    dtype = torch.bfloat16 if gpu else torch.float32
    block_bytes = 8 * d * d * torch.tensor([], dtype=dtype).element_size()
    n_blocks = max(8, round(model_gb * 1e9 / block_bytes))
    machine = torch.cuda.get_device_name(0) if gpu else f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()}"
    tmp = tempfile.mkdtemp(prefix="apt_vgpu_bench_", dir=args.ssd_dir)
    result: dict = {
        "benchmark": "vgpu", "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine, "device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
        "command": " ".join([sys.executable, *sys.argv]), "build": _native.build_info(),
        "note": "" if gpu else "CPU-only run on a shared machine: preliminary, noisy numbers",
    }
    try:
        steps = tqdm(total=2 if args.ssd_only else 5, desc="vgpu benchmark")
        if not args.ssd_only:
            steps.set_postfix_str("host->device link")
            result["link"] = bench_link(device, link_bytes, reps)
            steps.update()
        steps.set_postfix_str("SSD->host")
        result["ssd"] = bench_ssd(ssd_bytes, tmp, reps)
        steps.update()
        steps.set_postfix_str("io_chunk_mb")
        result["ssd"]["io_uring_chunks"] = bench_chunks(ssd_bytes, tmp, reps)
        steps.update()
        if not args.ssd_only:
            steps.set_postfix_str(f"offload {n_blocks} blocks d={d}")
            model_cpu = build_model(d, n_blocks, dtype)
            ms = [1, 256]
            run, ref_out = bench_offload(model_cpu, device, 0.25, ms, reps, result["link"]["pinned_copy_gbps"], tmp,
                                         f"{dtype}".replace("torch.", ""), None)
            result["offload"] = [run]
            steps.update()
            if fp4_available(device):
                steps.set_postfix_str("offload FP4")
                q = quantize_fp4(model_cpu, device)
                del model_cpu
                run4, _ = bench_offload(q, device, 0.25 * run["weight_bytes"] / weight_bytes(q), ms, reps,
                                        result["link"]["pinned_copy_gbps"], tmp, "nvfp4", ref_out)
                run4["note"] = "same device budget in bytes as the unquantised run; rel_err is vs the unquantised model"
                run4["fits_x_more_weights"] = run["weight_bytes"] / run4["weight_bytes"]
                result["offload"].append(run4)
            else:
                result["fp4"] = "FP4 kernels not built in this checkout: FP4 repeat skipped"
            steps.update()
        steps.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    tag = re.sub(r"[^A-Za-z0-9]+", "_", machine).strip("_").lower()
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "plots").mkdir(exist_ok=True)
    json_path = ROOT / "results" / (f"vgpu_ssd_{tag}.json" if args.ssd_only else f"vgpu_{tag}.json")
    json_path.write_text(json.dumps(result, indent=2, default=str))
    if not args.ssd_only:
        plot(result, ROOT / "plots" / f"vgpu_{tag}.png")

    ssd = result["ssd"]
    print(f"\n{machine}, torch {torch.__version__}")
    if not args.ssd_only:
        link = result["link"]
        print(f"host->device {link['bytes'] / MB:.0f} MiB: pinned copy_ {link['pinned_copy_gbps']:.2f} GB/s, pageable "
              f"{link['pageable_copy_gbps']:.2f} GB/s, pager {link['pager_gbps']:.2f} GB/s "
              f"= {100 * link['pager_vs_pinned']:.0f}% of pinned")
    tools = ", ".join(f"{k} {ssd[k]:.2f} GB/s" for k in ("dd_direct_gbps", "fio_gbps", "dd_direct_write_gbps",
                                                          "fio_write_gbps") if ssd.get(k))
    for b in ("io_uring", "pread"):
        v = ssd.get(b, {})
        print(f"SSD {ssd['bytes'] / MB:.0f} MiB {b}: " + (f"read {v['gbps']:.2f} GB/s, write {v['write_gbps']:.2f} GB/s"
                                                          if "gbps" in v else v.get("error", "-")))
    print(f"  tools: {tools or '-'}; O_DIRECT={ssd.get('o_direct')}; io_uring/best tool: read "
          f"{ssd.get('io_uring_vs_best_tool', float('nan')):.2f}, write {ssd.get('io_uring_write_vs_best_tool', float('nan')):.2f}")
    for c, v in ssd["io_uring_chunks"].items():
        print(f"  io_uring, io_chunk_mb={c}: " + (f"read {v['gbps']:.2f} GB/s, write {v['write_gbps']:.2f} GB/s"
                                                 if isinstance(v, dict) else str(v)))
    if args.ssd_only:
        print(f"wrote {json_path}")
        return 0
    print(f"{'run':8s} {'M':>4s} {'resident':>10s} {'vgpu':>10s} {'bound':>10s} {'acc_cpu':>10s} {'acc_disk':>10s} "
          f"{'cpu/vgpu':>9s} {'vgpu/bound':>10s} {'hit':>5s} {'MB moved':>9s}")
    for r in result["offload"]:
        for m, v in r["per_m"].items():
            def f(k: str) -> str:
                return f"{v[k] * 1e3:10.2f}" if v.get(k) else f"{'-':>10s}"
            ratio = v["accelerate_cpu_offload_s"] / v["vgpu_s"] if v.get("accelerate_cpu_offload_s") else float("nan")
            bound = v["vgpu_s"] / v["pcie_bound_s"] if v.get("pcie_bound_s") else float("nan")
            print(f"{r['label']:8s} {m:4d} {f('resident_s')} {f('vgpu_s')} {f('pcie_bound_s')} "
                  f"{f('accelerate_cpu_offload_s')} {f('accelerate_disk_offload_s')} {ratio:9.2f} {bound:10.2f} "
                  f"{v['hit_rate']:5.2f} {v['bytes_moved_per_forward'] / MB:9.1f}")
    print("(times in ms per forward; bound = bytes moved / pinned copy_ bandwidth)")
    print(f"wrote {json_path.relative_to(ROOT.parent)} and benchmarks/plots/vgpu_{tag}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
