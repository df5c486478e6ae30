"""Virtual VRAM: a decoder larger than its GPU budget, decoding with weights paged by the VGPU stack.

A Llama-3-8B-shaped decoder (32 layers, d 4096, d_ff 14336, 32 query / 8 KV heads, vocab 128256;
random weights, 16 GB in bf16) decodes greedily at batch 1 and 8 with a device budget of 4 GB.
Its layers hold q, k and v in one projection and gate and up in another, as serving stacks
store them; the rotary embedding is one complex product and the KV cache is written in place
(from the nineteenth session on: before, a layer had seven projections, a seven-op rotation
per q and k, and concatenated its cache; counted on the CPU, an nvfp4 layer's step ran 40 non-view
ops before and 24 now, so runs before then are not comparable).
The resident runs record ``ops_per_step``, the non-view ops of one step (kernel launches on a
GPU; an eager step's host time is mostly those). Runs:
  resident-bf16   the whole model on the GPU (the ceiling; skipped when it does not fit)
  resident-nvfp4  the 4-bit model whole on the GPU (its kernels' cost without paging)
  paged-bf16      apt_ext.vgpu.offload(model, stack): device level = the budget, host level = the rest
                  (float32 instead of bf16 in the --cpu runs)
  paged-nvfp4     the same after apt_ext.quantize_(model, "nvfp4") (the 4-bit weights cross the link)
  accelerate      accelerate.cpu_offload(model) (bf16), the usual alternative
  paged-*-ssd     a quarter of the 4-bit model (at most the budget) on the device level and half
                  of it on the host, so that the rest lives on the SSD level
For each: tokens/s, bytes moved host->device per generated step, the PCIe bound (those bytes /
the measured pinned copy bandwidth), for the SSD runs also the SSD bound (bytes read from the SSD
per step / the SSD level's read speed, measured in the same run on a fresh 1 GiB page) and,
against the resident bf16 model on the same tokens (teacher forcing), the logits' cosine and
top-1 agreement.

  python benchmarks/virtual_vram.py                 # full size on a GPU
  python benchmarks/virtual_vram.py --quick         # 8 layers, d 2048 (about 1 GB)
  python benchmarks/virtual_vram.py --cpu --quick   # tiny, the 'device' level is the CPU (tests)
  python benchmarks/virtual_vram.py --profile       # where a paged nvfp4 step's host time goes
Writes benchmarks/results/virtual_vram_<machine>.json (--profile: virtual_vram_profile_<machine>.json,
the paged nvfp4 run at the first batch only, under torch.profiler: the host-side events with the
most self time, among them the CUDA runtime calls that block, e.g. cudaEventSynchronize).
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
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vgpu import MB, bench_link, device_level, drop_caches, ssd_stack, sync, time_read  # noqa: E402  (benchmarks/vgpu.py)

from apt_ext.vgpu import VGPUStack, offload  # noqa: E402

ROOT = Path(__file__).resolve().parent


# ---- the model ---------------------------------------------------------------------------
@dataclass
class DecoderShape:
    layers: int = 32
    d: int = 4096
    d_ff: int = 14336
    heads: int = 32
    kv_heads: int = 8
    vocab: int = 128256


class RMSNorm(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch's fused RMSNorm (one kernel on CUDA; statistics in float32)
        return F.rms_norm(x, (x.shape[-1],), self.weight, 1e-5)


def rope_tables(pos: torch.Tensor, hd: int) -> torch.Tensor:
    """The rotary embedding at positions pos [T] as complex64 [T, 1, hd / 2] (cos + i sin, made
    once per step and shared by every layer, as Llama implementations do)."""
    inv = 1.0 / (500000.0 ** (torch.arange(0, hd, 2, device=pos.device, dtype=torch.float32) / hd))
    ang = pos.float()[:, None] * inv[None, :]
    return torch.polar(torch.ones_like(ang), ang).unsqueeze(1)


def rope(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x [B, T, H, hd] (pairs (2i, 2i + 1) rotated by ``rope_tables``' angle i),
    computed in float32 and rounded once to x's dtype: three kernels (to float32, the complex
    product, back), where the real-valued form launches seven per call."""
    xc = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(xc * rot).flatten(-2).to(x.dtype)


class KVCache:
    """One layer's keys and values [B, kv_heads, capacity, hd], allocated at the first step and
    written in place (no reallocation per step), and how many positions hold entries. A plain
    object, not a list: offloading hooks copy list arguments on their way to the device
    (accelerate's send_to_device does), and a copied cache would lose every step's keys."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.length = capacity, 0
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [B, kv_heads, T, hd] after the entries so far; all keys and values (views)."""
        t = k.shape[2]
        if self.length + t > self.capacity:
            raise ValueError(f"KVCache: {self.length} + {t} positions exceed its capacity {self.capacity}")
        if self.k is None:
            b, h, _, hd = k.shape
            self.k = k.new_empty(b, h, self.capacity, hd)
            self.v = v.new_empty(b, h, self.capacity, hd)
        self.k[:, :, self.length:self.length + t] = k
        self.v[:, :, self.length:self.length + t] = v
        self.length += t
        return self.k[:, :, :self.length], self.v[:, :, :self.length]


class Attention(nn.Module):
    """Grouped-query attention with one projection for q, k and v (as serving stacks fuse them:
    one weight read and one launch instead of three)."""

    def __init__(self, s: DecoderShape) -> None:
        super().__init__()
        self.h, self.kv, self.hd = s.heads, s.kv_heads, s.d // s.heads
        self.qkv = nn.Linear(s.d, (s.heads + 2 * s.kv_heads) * self.hd, bias=False)
        self.o = nn.Linear(s.d, s.d, bias=False)

    def forward(self, x: torch.Tensor, cache: KVCache, rot: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        qkv = self.qkv(x).view(b, t, self.h + 2 * self.kv, self.hd)
        qk = rope(qkv[:, :, :self.h + self.kv], rot)  # q and k rotated in one pass
        q, k = qk[:, :, :self.h].transpose(1, 2), qk[:, :, self.h:].transpose(1, 2)
        k, v = cache.append(k, qkv[:, :, self.h + self.kv:].transpose(1, 2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1, enable_gqa=True)
        return self.o(y.transpose(1, 2).reshape(b, t, -1))


class Layer(nn.Module):
    def __init__(self, s: DecoderShape) -> None:
        super().__init__()
        self.n1, self.attn, self.n2 = RMSNorm(s.d), Attention(s), RMSNorm(s.d)
        self.gate_up = nn.Linear(s.d, 2 * s.d_ff, bias=False)  # gate and up projections, one weight
        self.down = nn.Linear(s.d_ff, s.d, bias=False)

    def forward(self, x: torch.Tensor, cache: KVCache, rot: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.n1(x), cache, rot)
        gate, up = self.gate_up(self.n2(x)).chunk(2, -1)
        return x + self.down(F.silu(gate) * up)


class Decoder(nn.Module):
    """A Llama-shaped decoder with a KV cache kept outside the modules (so paging sees only weights)."""

    def __init__(self, s: DecoderShape) -> None:
        super().__init__()
        self.embed = nn.Embedding(s.vocab, s.d)
        self.layers = nn.ModuleList(Layer(s) for _ in range(s.layers))
        self.norm = RMSNorm(s.d)
        self.head = nn.Linear(s.d, s.vocab, bias=False)

    def forward(self, ids: torch.Tensor, caches: list[KVCache], start: int) -> torch.Tensor:
        pos = torch.arange(start, start + ids.shape[1], device=ids.device)
        x = self.embed(ids)
        rot = rope_tables(pos, self.layers[0].attn.hd)
        for layer, cache in zip(self.layers, caches):
            x = layer(x, cache, rot)
        return self.head(self.norm(x[:, -1]))


def build(shape: DecoderShape, dtype: torch.dtype) -> Decoder:
    """Random weights (std 0.02, norms 1) on the CPU, built fast from one random pool."""
    with torch.device("meta"):
        model = Decoder(shape)
    model = model.to_empty(device="cpu").to(dtype)
    g = torch.Generator().manual_seed(0)
    pool = (torch.randn(1 << 24, generator=g) * 0.02).to(dtype)
    with torch.no_grad():
        for i, (name, p) in enumerate(model.named_parameters()):
            if name.endswith(("n1.weight", "n2.weight", "norm.weight")):
                p.fill_(1.0)
                continue
            flat = p.view(-1)
            for j in range(0, flat.numel(), pool.numel()):
                n = min(pool.numel(), flat.numel() - j)
                off = (i * 7919 + j) % (pool.numel() - n + 1)
                flat[j:j + n].copy_(pool[off:off + n])
    return model.eval()


def nbytes(model: nn.Module) -> int:
    return sum(t.nbytes for t in list(model.parameters()) + list(model.buffers()))


# ---- decoding ----------------------------------------------------------------------------
def decode(model: Decoder, prompt: torch.Tensor, forced: torch.Tensor | None, n_new: int,
           device: torch.device, sync_waits: list[float] | None = None) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Prefill ``prompt`` [B, T], then ``n_new`` steps: greedy tokens, or ``forced`` [B, n_new]
    (teacher forcing, to compare logits across runs). Returns (seconds for the n_new steps after
    the first, tokens [B, n_new], logits of every step [n_new, B, vocab] float32 on the CPU).
    ``sync_waits`` gets, per timed step, the seconds the host waited for the step's logits (the
    device still working: copies or kernels the host had already queued)."""
    caches = [KVCache(prompt.shape[1] + n_new) for _ in model.layers]
    toks, logits = [], []
    with torch.no_grad():
        out = model(prompt, caches, 0)
        sync(device)
        t0 = None
        for i in range(n_new):
            if i == 1:
                sync(device)
                t0 = time.perf_counter()
            t_wait = time.perf_counter()
            logits.append(out.float().cpu())
            if sync_waits is not None and t0 is not None:
                sync_waits.append(time.perf_counter() - t_wait)
            nxt = out.argmax(-1, keepdim=True) if forced is None else forced[:, i:i + 1]
            toks.append(nxt)
            out = model(nxt, caches, prompt.shape[1] + i)
        sync(device)
    steps = max(1, n_new - 1)
    return (time.perf_counter() - t0) / steps if t0 else float("nan"), torch.cat(toks, 1), torch.stack(logits)


def ops_per_step(model: Decoder, prompt: torch.Tensor) -> int:
    """How many ATen and apt ops other than views one decoding step of ``model`` runs (after a
    prefill of ``prompt``): each is a kernel launch on a GPU, and an eager step's host time is
    mostly its launches."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops += not func.is_view
            return func(*args, **(kwargs or {}))

    caches = [KVCache(prompt.shape[1] + 1) for _ in model.layers]
    with torch.no_grad():
        model(prompt, caches, 0)
        with Count() as count:
            model(prompt[:, -1:], caches, prompt.shape[1])
    return count.ops


def dequantized(model: Decoder, fp4: Decoder) -> Decoder:
    """A copy of ``model`` whose Linear weights hold ``fp4``'s 4-bit weights dequantized to
    model's dtype: the same numbers the FP4 kernels multiply by, so logits that agree with this
    model's show the kernels right, apart from the 4-bit rounding that ``agreement`` with the
    original model also counts (random weights amplify that rounding layer by layer)."""
    from apt_ext.nn import FP4Linear

    out = copy.deepcopy(model)
    fp4_layers = dict(fp4.named_modules())
    with torch.no_grad():
        for name, mod in out.named_modules():
            if isinstance(mod, nn.Linear) and isinstance(fp4_layers.get(name), FP4Linear):
                mod.weight.copy_(fp4_layers[name].weight.dequantize(mod.weight.dtype))
    return out


def agreement(logits: torch.Tensor, ref: torch.Tensor) -> dict:
    cos = F.cosine_similarity(logits.flatten(0, 1), ref.flatten(0, 1), dim=-1)
    return {"logits_cosine_mean": float(cos.mean()), "logits_cosine_min": float(cos.min()),
            "top1_agreement": float((logits.argmax(-1) == ref.argmax(-1)).float().mean())}


def host_profile(fn, n: int = 25) -> dict:
    """One call of ``fn`` under torch.profiler: its wall milliseconds, the self CPU milliseconds of
    all recorded host events together (the rest of the wall time is Python: hooks, modules) and
    the ``n`` host-side events (ATen ops, CUDA runtime calls) with the most self time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
    rows = [{"name": e.key[:120], "self_ms": e.self_cpu_time_total / 1e3, "calls": e.count}
            for e in prof.key_averages() if e.self_cpu_time_total > 0]
    return {"wall_ms": wall * 1e3, "events_self_ms": sum(r["self_ms"] for r in rows),
            "top": sorted(rows, key=lambda r: -r["self_ms"])[:n]}


def paged_run(model_cpu: Decoder, device: torch.device, levels: list[dict], prompt: torch.Tensor,
              forced: torch.Tensor, n_new: int, keep_resident: bool = True, profile: bool = False,
              prefetch: int = 2) -> dict:
    """One model paged through a VGPUStack of ``levels``: seconds per step, bytes moved per step,
    the time the host->device link spent copying per step (``h2d_busy_s_per_step``: CUDA events
    on the copy stream; its share of the step, and the link's GB/s while copying), the logits;
    with ``profile`` also the host profile of a second timed decode (``host_top``). Where the
    host's time goes: ``host_get_s_per_step`` and ``host_prefetch_s_per_step``, the seconds spent in
    the stack's ``get`` (a unit's weights, maybe waiting for the pager's lock) and ``prefetch``
    calls of offload's hooks, and ``host_sync_wait_s_per_step``, the seconds waiting for each
    step's logits. Bytes, busy time and the host's get/prefetch time are averaged over the prefill
    and the steps, the step time and the sync wait over the steps after the first."""
    model = copy.deepcopy(model_cpu)
    with VGPUStack(levels) as st:
        handle = offload(model, st, prefetch=prefetch, keep_resident=keep_resident)
        resident = handle.resident_bytes
        decode(model, prompt, forced, n_new, device)  # records the execution order; warm-up
        host_s = {"get": 0.0, "prefetch": 0.0}

        def timed(name: str):
            method = getattr(st, name)

            def call(*a, **kw):
                t = time.perf_counter()
                try:
                    return method(*a, **kw)
                finally:
                    host_s[name] += time.perf_counter() - t
            return call

        st.get, st.prefetch = timed("get"), timed("prefetch")  # instance attributes: the hooks call these
        s0 = st.stats()
        waits: list[float] = []
        sec, _, logits = decode(model, prompt, forced, n_new, device, waits)
        s1 = st.stats()
        del st.get, st.prefetch
        paged_units = len(set(handle.order) - set(handle.resident))
        top = host_profile(lambda: decode(model, prompt, forced, n_new, device)) if profile else None
    steps = n_new + 1  # the prefill pass plus n_new steps moved bytes

    def per_step(link: str, field: str) -> float:
        return (s1["links"].get(link, {}).get(field, 0) - s0["links"].get(link, {}).get(field, 0)) / steps

    h2d_bytes, h2d_busy = per_step("host->device", "bytes"), per_step("host->device", "seconds")
    return {"s_per_step": sec, "keep_resident": keep_resident, "resident_bytes": resident, "paged_units": paged_units,
            "bytes_h2d_per_step": h2d_bytes, "h2d_busy_s_per_step": h2d_busy,
            "h2d_busy_share": h2d_busy / sec if sec > 0 else None,
            "h2d_gbps_while_busy": h2d_bytes / h2d_busy / 1e9 if h2d_busy > 0 else None,
            "host_get_s_per_step": host_s["get"] / steps, "host_prefetch_s_per_step": host_s["prefetch"] / steps,
            "host_sync_wait_s_per_step": sum(waits) / len(waits) if waits else None,
            "bytes_ssd_per_step": per_step("ssd->host", "bytes"), "logits": logits} | (
                {"host_top": top} if profile else {})


def ssd_read_gbps(ssd_dir: str, nbytes: int, reps: int = 3) -> dict:
    """The SSD level's read speed in the same run: a fresh ``nbytes`` page written to an SSD level
    under ``ssd_dir`` (io_uring, else the pread pool), read back into the host slab ``reps`` times
    with the page cache dropped where allowed; GB/s of the median read, and the backend."""
    src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8)
    for backend in ("io_uring", "pread"):
        try:
            st = ssd_stack(nbytes, ssd_dir, backend)
        except RuntimeError:
            continue
        with st:
            st.put("probe", src)
            st.evict("probe")
            secs = []
            for _ in range(reps):
                dropped = drop_caches()
                secs.append(time_read(st, "probe"))
        return {"gbps": nbytes / sorted(secs)[len(secs) // 2] / 1e9, "backend": backend,
                "bytes": nbytes, "page_cache_dropped": dropped}
    return {"error": "no SSD level could be opened"}


def add_bound(r: dict, link: str, bytes_per_step: float, gbps: float) -> None:
    """Adds to a ``paged_run`` result the bound of one link (``link``: "pcie", bytes moved to the
    device / pinned copy GB/s; "ssd", bytes read from the SSD / its measured read GB/s), in
    seconds, as ``<link>_bound_s``, and the step's ratio to it as ``step_vs_<link>_bound`` (None
    when nothing crossed the link)."""
    bound = r[f"{link}_bound_s"] = bytes_per_step / (gbps * 1e9)
    r[f"step_vs_{link}_bound"] = r["s_per_step"] / bound if bound > 0 else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 layers, d 2048 on a GPU; tiny on the CPU")
    ap.add_argument("--cpu", action="store_true", help="CPU only: the 'device' level is the CPU")
    ap.add_argument("--budget-gb", type=float, default=None, help="device level capacity (default 4, or 25%%)")
    ap.add_argument("--new-tokens", type=int, default=None, help="generated tokens per run")
    ap.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    ap.add_argument("--ssd-dir", default=None, help="directory of the SSD level (default: a temp dir)")
    ap.add_argument("--skip", default="", help="comma-separated runs to leave out: accelerate, ssd")
    ap.add_argument("--compare-lru", action="store_true",
                    help="also page bf16 and nvfp4 with keep_resident=False (LRU alone), as *-lru runs")
    ap.add_argument("--prefetch", type=int, default=2, help="offload's prefetch depth (units ahead)")
    ap.add_argument("--profile", action="store_true",
                    help="only the paged nvfp4 run at the first batch, then its host profile (see above)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/virtual_vram_<machine>.json)")
    args = ap.parse_args(argv)
    device = torch.device("cuda:0" if torch.cuda.is_available() and not args.cpu else "cpu")
    gpu = device.type == "cuda"
    if gpu:
        shape = DecoderShape(layers=8, d=2048, d_ff=7168, heads=16, kv_heads=4, vocab=32000) if args.quick \
            else DecoderShape()
        dtype, n_new = torch.bfloat16, args.new_tokens or (8 if args.quick else 16)
    else:
        shape = DecoderShape(layers=2, d=64, d_ff=128, heads=4, kv_heads=2, vocab=256)
        dtype, n_new = torch.float32, args.new_tokens or 4
    batches = [int(b) for b in args.batches.split(",")]
    skip = {v.strip() for v in args.skip.split(",") if v.strip()}
    if not skip <= {"accelerate", "ssd"}:
        ap.error(f"--skip: expected names from accelerate, ssd; got {sorted(skip)}")
    model_cpu = build(shape, dtype)
    wb = nbytes(model_cpu)
    budget = int(args.budget_gb * 1e9) if args.budget_gb else (int(4e9) if gpu and not args.quick else wb // 4)
    machine = torch.cuda.get_device_name(0) if gpu else f"CPU {platform.machine()} x{os.cpu_count()}"
    result: dict = {"benchmark": "virtual_vram", "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "machine": machine, "device": str(device), "torch": torch.__version__,
                    "command": " ".join([sys.executable, *sys.argv]), "shape": asdict(shape),
                    "dtype": str(dtype).replace("torch.", ""), "weight_bytes": wb, "device_budget_bytes": budget,
                    "new_tokens": n_new, "prefetch": args.prefetch, "runs": {}}
    link = bench_link(device, 256 * MB if gpu else 16 * MB, 3)
    result["pinned_copy_gbps"] = link["pinned_copy_gbps"]
    tag = re.sub(r"[^A-Za-z0-9]+", "_", machine).strip("_").lower() + ("_quick" if args.quick else "")
    out = Path(args.out) if args.out else \
        ROOT / "results" / (f"virtual_vram_profile_{tag}.json" if args.profile else f"virtual_vram_{tag}.json")
    out.parent.mkdir(exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="apt_vvram_", dir=args.ssd_dir)
    fp4 = None
    try:
        from apt_ext import quantize_
        fp4 = quantize_(copy.deepcopy(model_cpu).to(device), fmt="nvfp4").to("cpu")
        result["nvfp4_weight_bytes"] = nbytes(fp4)
    except Exception as exc:  # FP4 kernels not built here: recorded, the bf16 runs still go
        result["nvfp4_error"] = f"{type(exc).__name__}: {exc}"
    # device level = the budget, host level = the rest (every paged run but the SSD one)
    host = [device_level(device, budget / MB), {"device": "cpu", "capacity_mb": 1.1 * wb / MB}]
    if args.profile:
        if fp4 is None:
            sys.exit(f"virtual_vram --profile: needs the nvfp4 model ({result['nvfp4_error']})")
        b = batches[0]
        prompt = torch.randint(0, shape.vocab, (b, 16), generator=torch.Generator().manual_seed(b)).to(device)
        forced = torch.randint(0, shape.vocab, (b, n_new), generator=torch.Generator().manual_seed(b)).to(device)
        r = paged_run(fp4, device, host, prompt, forced, n_new, True, profile=True, prefetch=args.prefetch)
        r.pop("logits")
        add_bound(r, "pcie", r["bytes_h2d_per_step"], link["pinned_copy_gbps"])
        r["tokens_per_s"] = b / r["s_per_step"]
        result["runs"][str(b)] = {"paged-nvfp4": r}
        out.write_text(json.dumps(result, indent=1))
        prof = r["host_top"]
        print(f"paged nvfp4, batch {b}: {r['s_per_step'] * 1e3:.1f} ms/step, PCIe bound "
              f"{r['pcie_bound_s'] * 1e3:.1f} ms; one decode of {n_new} tokens under the profiler: "
              f"{prof['wall_ms']:.1f} ms, of it {prof['events_self_ms']:.1f} ms in recorded host events:")
        for row in prof["top"]:
            print(f"  {row['self_ms']:9.2f} ms {row['calls']:7d}x  {row['name']}")
        print(f"wrote {out}")
        return 0
    try:
        if fp4 is not None and "ssd" not in skip:
            result["ssd_read"] = ssd_read_gbps(tmp, (1024 if gpu else 64) * MB)
        deq_cpu = None  # built at its first use: only where the bf16 model fits the device
        for b in tqdm(batches, desc="batches"):
            g = torch.Generator().manual_seed(b)
            prompt = torch.randint(0, shape.vocab, (b, 16), generator=g).to(device)
            dt = result["dtype"]
            runs: dict = {}
            fits = not gpu or wb < 0.8 * torch.cuda.mem_get_info()[0]
            ref = None
            if fits:
                resident = copy.deepcopy(model_cpu).to(device)
                # warm-up at the timed lengths: after a 2-step warm-up the resident model measured
                # slower than the paged one on the H200 (first quick run, eighth session); kernels
                # chosen per new sequence length are the likely cost, so every run warms up on the
                # lengths it times
                decode(resident, prompt, None, n_new, device)
                sec, forced, ref = decode(resident, prompt, None, n_new, device)
                runs[f"resident-{dt}"] = {"s_per_step": sec, "ops_per_step": ops_per_step(resident, prompt)}
                del resident
                if gpu:
                    torch.cuda.empty_cache()
            else:
                forced = torch.randint(0, shape.vocab, (b, n_new), generator=g).to(device)
            ref4 = None  # the logits of the bf16 model holding the 4-bit weights (``dequantized``)
            if fp4 is not None and fits:
                if deq_cpu is None:
                    deq_cpu = dequantized(model_cpu, fp4)
                deq = copy.deepcopy(deq_cpu).to(device)
                _, _, ref4 = decode(deq, prompt, forced, n_new, device)
                del deq
                if gpu:
                    torch.cuda.empty_cache()
            if fp4 is not None and (not gpu or nbytes(fp4) < 0.8 * torch.cuda.mem_get_info()[0]):
                # the 4-bit model whole on the device: what its kernels cost without paging (a
                # paged FP4 layer runs the canonical op, a resident one its tiled copy)
                resident4 = copy.deepcopy(fp4).to(device)
                decode(resident4, prompt, forced, n_new, device)
                sec, _, logits = decode(resident4, prompt, forced, n_new, device)
                runs["resident-nvfp4"] = {"s_per_step": sec, "ops_per_step": ops_per_step(resident4, prompt)} | (
                    agreement(logits, ref) if ref is not None else {}) | (
                    {"vs_dequantized": agreement(logits, ref4)} if ref4 is not None else {})
                del resident4
                if gpu:
                    torch.cuda.empty_cache()
            todo = [(f"paged-{dt}", model_cpu, host, True)]
            if fp4 is not None:
                todo.append(("paged-nvfp4", fp4, host, True))
            if args.compare_lru:
                todo += [(f"{name}-lru", m, levels, False) for name, m, levels, _ in todo]
            if fp4 is not None:
                # a quarter of the 4-bit model (at most the budget) on the device, half of it on the
                # host, the rest on the SSD level: with the whole budget the 4-bit model may fit the
                # device level and never read the SSD
                cap = 0.5 * nbytes(fp4)
                if "ssd" not in skip:
                    todo.append(("paged-nvfp4-ssd", fp4,
                                 [device_level(device, min(budget, nbytes(fp4) // 4) / MB),
                                  {"device": "cpu", "capacity_mb": cap / MB},
                                  {"device": "ssd", "capacity_mb": 1.2 * wb / MB, "path": tmp}], True))
            for name, m, levels, keep in todo:
                r = paged_run(m, device, levels, prompt, forced, n_new, keep, prefetch=args.prefetch)
                logits = r.pop("logits")
                if ref is not None:
                    r.update(agreement(logits, ref))
                if ref4 is not None and m is fp4:
                    r["vs_dequantized"] = agreement(logits, ref4)
                add_bound(r, "pcie", r["bytes_h2d_per_step"], link["pinned_copy_gbps"])
                if r["bytes_ssd_per_step"] and "gbps" in result.get("ssd_read", {}):
                    add_bound(r, "ssd", r["bytes_ssd_per_step"], result["ssd_read"]["gbps"])
                r["device_level_bytes"] = int(levels[0]["capacity_mb"] * MB)
                runs[name] = r
            try:
                if "accelerate" in skip:
                    raise ImportError("left out (--skip accelerate)")
                from accelerate import cpu_offload
                m = copy.deepcopy(model_cpu)
                cpu_offload(m, execution_device=device)
                decode(m, prompt, forced, n_new, device)  # warm-up
                sec, _, logits = decode(m, prompt, forced, n_new, device)
                runs[f"accelerate-cpu_offload-{dt}"] = {"s_per_step": sec} | (agreement(logits, ref) if ref is not None else {})
                del m
            except ImportError as exc:
                if "accelerate" not in skip:
                    runs[f"accelerate-cpu_offload-{dt}"] = {"error": f"not installed: {exc}"}
            for r in runs.values():
                if r.get("s_per_step"):
                    r["tokens_per_s"] = b / r["s_per_step"]
            result["runs"][str(b)] = runs
            out.write_text(json.dumps(result, indent=1))  # after each batch: a run cut short keeps those done
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out.write_text(json.dumps(result, indent=1))
    ssd = result.get("ssd_read", {})
    print(f"\n{machine}: model {wb / 1e9:.2f} GB ({result['dtype']}), device budget {budget / 1e9:.2f} GB, "
          f"pinned copy {link['pinned_copy_gbps']:.1f} GB/s"
          + (f", SSD read {ssd['gbps']:.2f} GB/s ({ssd['backend']})" if "gbps" in ssd else ""))
    for b, runs in result["runs"].items():
        for name, r in runs.items():
            if "error" in r:
                print(f"  B={b:>2} {name:28s} {r['error']}")
                continue
            extra = (f", {r['bytes_h2d_per_step'] / 1e9:.2f} GB/step, {r['step_vs_pcie_bound']:.2f}x PCIe bound"
                     if r.get("step_vs_pcie_bound") else "")
            if r.get("h2d_busy_share") is not None and r.get("h2d_gbps_while_busy"):
                extra += (f", link copying {100 * r['h2d_busy_share']:.0f}% of the step"
                          f" at {r['h2d_gbps_while_busy']:.1f} GB/s")
            if r.get("host_sync_wait_s_per_step") is not None:
                extra += (f", {r['paged_units']} units paged, host in get/prefetch/sync wait {1e3 * r['host_get_s_per_step']:.1f}/"
                          f"{1e3 * r['host_prefetch_s_per_step']:.1f}/{1e3 * r['host_sync_wait_s_per_step']:.1f} ms")
            if r.get("ssd_bound_s"):
                extra += (f", {r['bytes_ssd_per_step'] / 1e9:.2f} GB/step from the SSD, "
                          f"{r['step_vs_ssd_bound']:.2f}x SSD bound")
            acc = f", cosine {r['logits_cosine_mean']:.4f}, top-1 {r['top1_agreement']:.3f}" if "top1_agreement" in r else ""
            if "vs_dequantized" in r:
                acc += (f" (against the dequantized 4-bit weights in {result['dtype']}: cosine "
                        f"{r['vs_dequantized']['logits_cosine_mean']:.4f}, top-1 {r['vs_dequantized']['top1_agreement']:.3f})")
            print(f"  B={b:>2} {name:28s} {r['tokens_per_s']:9.2f} tokens/s{extra}{acc}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
