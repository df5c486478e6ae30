"""End to end: a decoder stack of Llama-3-8B layer shapes decoding one token at a time, bf16
weights against nvfp4 weights (issue 11's decoder goal: batch 1 at >= 2.5x the bf16 tokens/s,
weights <= 0.3x).

32 layers, d 4096, d_ff 14336 (SwiGLU), 32 query / 8 KV heads, random weights (std 0.02), no
embedding or output head (the stack alone). A static KV cache of ``--context`` positions filled
with the same random keys and values for both models, so one decode step has fixed shapes and is
captured in a CUDA graph. Per model and batch: one decode step's time eager (Python and launches
included) and replayed from a CUDA graph (the GPU's time), tokens/s from the latter, and the step's
output against the bf16 model's (relative error and cosine of the output, and relative error of
the layers' contribution, output - input: the residual stream alone would hide the 4-bit error). nvfp4 = ``apt_ext.quantize_(model,
fmt="nvfp4")`` on the bf16 model: every Linear becomes an FP4Linear, which at these batch sizes
runs its tiled kernels on a tiled copy of the weight (kept beside the canonical one: both are
counted in the weight bytes).

    python benchmarks/e2e_decoder.py              # full size on a GPU (about 14 GB of bf16 weights)
    python benchmarks/e2e_decoder.py --quick      # 4 layers
    python benchmarks/e2e_decoder.py --cpu        # tiny, on the CPU (eager only; the tests run it)
    python benchmarks/e2e_decoder.py --fused      # q/k/v and gate/up as one Linear each; the MLP's
                                                  # silu(gate) * up by apt_ext.nn.swiglu (FP4: one
                                                  # fused kernel; --swiglu composite: the chunks)
    python benchmarks/e2e_decoder.py --fused --fuse-norms  # nvfp4: the norms folded and run inside the
                                                  # q/k/v and gate/up GEMVs, the residual adds in the
                                                  # o and down GEMVs (apt_ext.nn.fold_rms_norm_ ...)
    python benchmarks/e2e_decoder.py --fused --fuse-norms --norm-handoff  # and each norm takes its
                                                  # sums of squares from the o / down GEMV before it
                                                  # (linear_residual(..., return_sumsq=True))
    python benchmarks/e2e_decoder.py --one-copy   # FP4Linear holds only its tiled copy (release_canonical)
    python benchmarks/e2e_decoder.py --compile    # both steps also compiled (torch.compile fuses the
                                                  # norms, rotary and element-wise work the graph
                                                  # otherwise launches one kernel each for)
    python benchmarks/e2e_decoder.py --attention sdpa  # F.scaled_dot_product_attention over the
                                                  # whole cache, masked (the default before the
                                                  # forty-sixth session), after rotary and cache-write
                                                  # kernels
    python benchmarks/e2e_decoder.py --attention matmul  # attention by two batched matmuls and a
                                                  # float32 softmax (compiled: inductor's kernels)
    python benchmarks/e2e_decoder.py --attention flex  # flex_attention, visiting the cache's blocks
                                                  # up to the position only (compiled: torch's
                                                  # split-KV decoding kernel)
    python benchmarks/e2e_decoder.py --attention apt  # apt_ext.attention.decode_attention over the
                                                  # positions up to the current one (one launch)
    (default: --attention apt_kvcache, apt_ext.attention.decode_attention_kvcache: the same launch
    also applies the rotary embedding and writes the cache; both models use the same attention)
Writes benchmarks/results/e2e_decoder_<machine>[_quick][_fused][_one_copy][_compiled][_matmul|_flex|_apt|_apt_kvcache (sdpa: no suffix)][_composite_swiglu]
[_fused_norms][_separate_mlp_norm][_norm_handoff][_profile].json.
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, flex_attention
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))
from vgpu import sync  # noqa: E402  (benchmarks/vgpu.py)

from apt_ext.attention import decode_attention, decode_attention_kvcache  # noqa: E402
from apt_ext.nn import fold_rms_norm_, linear_residual, rms_norm_linear, rms_norm_swiglu  # noqa: E402
from apt_ext.nn import swiglu as apt_swiglu  # noqa: E402


@dataclass
class Shape:
    layers: int = 32
    d: int = 4096
    d_ff: int = 14336
    heads: int = 32
    kv_heads: int = 8
    context: int = 1024


class StaticKV:
    """One layer's keys and values [B, kv_heads, context, head_dim], written in place."""

    def __init__(self, b: int, s: Shape, device: torch.device, dtype: torch.dtype, g: torch.Generator) -> None:
        hd = s.d // s.heads
        self.k = (torch.randn(b, s.kv_heads, s.context, hd, generator=g) * 0.5).to(device, dtype)
        self.v = (torch.randn(b, s.kv_heads, s.context, hd, generator=g) * 0.5).to(device, dtype)


ATTENTIONS = ("sdpa", "matmul", "flex", "apt", "apt_kvcache")
FLEX_BLOCK = 128  # keys per block of flex_attention's block mask
SWIGLUS = ("fused", "composite")


def grouped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention of one new token's queries q [B, H, 1, hd] over the cache k, v [B, KV, T, hd]
    (query head i reads key head i // (H / KV), as ``enable_gqa``), positions where the bool
    ``mask`` [1, 1, 1, T] is False left out: two batched matmuls, the softmax in float32 between
    them. Returns [B, H, 1, hd] in q's dtype."""
    b, h, _, hd = q.shape
    qg = q.reshape(b, k.shape[1], h // k.shape[1], hd)  # the query heads of one key head as rows
    scores = torch.matmul(qg, k.transpose(-1, -2)).float() * hd ** -0.5  # [B, KV, H / KV, T]
    p = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1).to(q.dtype)
    return torch.matmul(p, v).view(b, h, 1, hd)


def decode_block_mask(pos: torch.Tensor, context: int) -> BlockMask:
    """flex_attention's block mask for one new token at position ``pos`` (a [1] device tensor) over
    a cache of ``context`` positions: only the FLEX_BLOCK-key blocks up to the one holding ``pos``
    are visited, and keys after ``pos`` are masked inside that last block. Built from device
    tensors only (no host sync), so a CUDA graph replays it for any position."""
    n_blocks = -(-context // FLEX_BLOCK)
    kv_num_blocks = (pos // FLEX_BLOCK + 1).to(torch.int32).view(1, 1, 1)
    kv_indices = torch.arange(n_blocks, device=pos.device, dtype=torch.int32).view(1, 1, 1, n_blocks)

    def up_to_pos(b, h, q_idx, kv_idx):
        return kv_idx <= pos[0]
    return BlockMask.from_kv_blocks(kv_num_blocks, kv_indices, BLOCK_SIZE=FLEX_BLOCK, mask_mod=up_to_pos,
                                    seq_lengths=(1, context), compute_q_blocks=False)


class Layer(nn.Module):
    """Pre-norm Llama layer for one new token x [B, 1, d] at position ``pos`` (a [1] device tensor).
    ``fused``: q, k and v as one Linear [d + 2 kv_heads head_dim, d] and gate and up as one
    [2 d_ff, d] (as serving stacks load Llama: the same weights, three GEMVs a layer fewer).
    ``attention``: "sdpa" (F.scaled_dot_product_attention with a bool mask over the whole cache),
    "matmul" (grouped_attention), "flex" (flex_attention over the blocks up to ``pos`` alone,
    decode_block_mask; compiled, torch's split-KV decoding kernel) or "apt"
    (apt_ext.attention.decode_attention over the positions up to ``pos``: one split-KV launch) or
    "apt_kvcache" (apt_ext.attention.decode_attention_kvcache: the same launch also rotates q and
    the new key and writes the new key and value into the cache).
    ``swiglu`` (fused projections only): "fused" (apt_ext.nn.swiglu: FP4Linear's SwiGLU kernel) or
    "composite" (silu and product of gate_up's two halves). ``fuse_norms`` (fused projections only):
    the norms and residual adds through apt_ext.nn's rms_norm_linear / rms_norm_swiglu /
    linear_residual (for FP4 layers after fold_rms_norm_: inside the GEMVs; otherwise the same
    composite). ``separate_mlp_norm`` (with ``fuse_norms``): the MLP's norm runs on its own and
    gate/up is a plain projection (n2 not folded); q/k/v's norm and the residual adds stay fused.
    ``norm_handoff`` (off; Stack.set_norm_handoff): the o and down projections also return their
    output's sums of squares (linear_residual(..., return_sumsq=True)), which the next norm takes
    (x_sumsq) instead of summing x's squares; forward then takes the layer input's sums
    (``x_sumsq``, None for the first layer) and returns (x, its sums)."""

    def __init__(self, s: Shape, fused: bool = False, attention: str = "sdpa", swiglu: str = "fused",
                 fuse_norms: bool = False, separate_mlp_norm: bool = False) -> None:
        super().__init__()
        if fuse_norms and not fused:
            raise ValueError("fuse_norms: needs the fused projections (fused=True)")
        if separate_mlp_norm and not fuse_norms:
            raise ValueError("separate_mlp_norm: needs fuse_norms=True")
        self.fuse_norms, self.separate_mlp_norm, self.norm_handoff = fuse_norms, separate_mlp_norm, False
        if attention not in ATTENTIONS:
            raise ValueError(f"attention: expected one of {ATTENTIONS}, got {attention!r}")
        if swiglu not in SWIGLUS:
            raise ValueError(f"swiglu: expected one of {SWIGLUS}, got {swiglu!r}")
        self.swiglu = swiglu
        self.h, self.kv, self.hd, self.fused = s.heads, s.kv_heads, s.d // s.heads, fused
        self.attention = attention
        self.n1, self.n2 = nn.RMSNorm(s.d, eps=1e-5), nn.RMSNorm(s.d, eps=1e-5)
        kv_dim = s.kv_heads * self.hd
        if fused:
            self.qkv = nn.Linear(s.d, s.d + 2 * kv_dim, bias=False)
            self.gate_up = nn.Linear(s.d, 2 * s.d_ff, bias=False)
        else:
            self.q = nn.Linear(s.d, s.d, bias=False)
            self.k = nn.Linear(s.d, kv_dim, bias=False)
            self.v = nn.Linear(s.d, kv_dim, bias=False)
            self.gate = nn.Linear(s.d, s.d_ff, bias=False)
            self.up = nn.Linear(s.d, s.d_ff, bias=False)
        self.o = nn.Linear(s.d, s.d, bias=False)
        self.down = nn.Linear(s.d_ff, s.d, bias=False)

    def forward(self, x: torch.Tensor, kv: StaticKV, pos: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | BlockMask,
                x_sumsq: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        if self.fuse_norms:
            qkv = rms_norm_linear(self.n1, self.qkv, x, x_sumsq)
        elif self.fused:
            qkv = self.qkv(self.n1(x))
        if self.fused:
            q, k, v = qkv.split([self.h * self.hd, self.kv * self.hd, self.kv * self.hd], -1)
        else:
            h = self.n1(x)
            q, k, v = self.q(h), self.k(h), self.v(h)
        if self.attention == "apt_kvcache":  # cos, sin: the whole tables; mask: the positions
            y = decode_attention_kvcache(q.view(b, self.h, self.hd), kv.k, kv.v, k.view(b, self.kv, self.hd),
                                         v.view(b, self.kv, self.hd), mask, cos, sin, rotary_interleaved=True)
            return self.mlp(x, y.view(b, 1, -1))
        q = rotate(q.view(b, 1, self.h, self.hd).transpose(1, 2), cos, sin)
        k = rotate(k.view(b, 1, self.kv, self.hd).transpose(1, 2), cos, sin)
        kv.k.index_copy_(2, pos, k)
        kv.v.index_copy_(2, pos, v.view(b, 1, self.kv, self.hd).transpose(1, 2))
        if self.attention == "sdpa":
            y = F.scaled_dot_product_attention(q, kv.k, kv.v, attn_mask=mask, enable_gqa=True)
        elif self.attention == "flex":
            y = flex_attention(q, kv.k, kv.v, block_mask=mask, enable_gqa=True)
        elif self.attention == "apt":
            y = decode_attention(q.squeeze(2), kv.k, kv.v, mask).unsqueeze(2)
        else:
            y = grouped_attention(q, kv.k, kv.v, mask)
        return self.mlp(x, y.transpose(1, 2).reshape(b, 1, -1))

    def mlp(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The rest of the layer after attention y [B, 1, d]: o, residual, norm, MLP, residual."""
        if self.norm_handoff:
            x, x_sumsq = linear_residual(self.o, y, x, return_sumsq=True)
            if self.swiglu == "fused":
                h = rms_norm_swiglu(self.n2, self.gate_up, x, x_sumsq)
            else:
                gate, up = rms_norm_linear(self.n2, self.gate_up, x, x_sumsq).chunk(2, -1)
                h = F.silu(gate) * up
            return linear_residual(self.down, h, x, return_sumsq=True)
        if self.fuse_norms:
            x = linear_residual(self.o, y, x)
            if self.separate_mlp_norm:
                h = self.n2(x)
                if self.swiglu == "fused":
                    return linear_residual(self.down, apt_swiglu(self.gate_up, h), x)
                gate, up = self.gate_up(h).chunk(2, -1)
            elif self.swiglu == "fused":
                return linear_residual(self.down, rms_norm_swiglu(self.n2, self.gate_up, x), x)
            else:
                gate, up = rms_norm_linear(self.n2, self.gate_up, x).chunk(2, -1)
            return linear_residual(self.down, F.silu(gate) * up, x)
        x = x + self.o(y)
        h = self.n2(x)
        if self.fused and self.swiglu == "fused":
            return x + self.down(apt_swiglu(self.gate_up, h))
        if self.fused:
            gate, up = self.gate_up(h).chunk(2, -1)
        else:
            gate, up = self.gate(h), self.up(h)
        return x + self.down(F.silu(gate) * up)


def rope_tables(s: Shape) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [context, head_dim / 2] of the rotary embedding (base 500000, as Llama 3)."""
    hd = s.d // s.heads
    inv = 1.0 / (500000.0 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    ang = torch.arange(s.context, dtype=torch.float32)[:, None] * inv[None, :]
    return ang.cos(), ang.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x [B, H, 1, hd] with this position's cos / sin [hd / 2]."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), -1).flatten(-2)


class Stack(nn.Module):
    """The layers, with the rotary tables and the positions as buffers (static shapes per step)."""

    def __init__(self, s: Shape, fused: bool = False, attention: str = "sdpa", swiglu: str = "fused",
                 fuse_norms: bool = False, separate_mlp_norm: bool = False) -> None:
        super().__init__()
        self.attention, self.norm_handoff = attention, False
        self.layers = nn.ModuleList(Layer(s, fused, attention, swiglu, fuse_norms, separate_mlp_norm)
                                    for _ in range(s.layers))
        cos, sin = rope_tables(s)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.register_buffer("positions", torch.arange(s.context), persistent=False)

    def set_norm_handoff(self) -> "Stack":
        """Turns on Layer's ``norm_handoff`` in every layer (layers with fuse_norms and without
        separate_mlp_norm: the FP4 model's, after fold_rms_norm_). Returns self."""
        for i, layer in enumerate(self.layers):
            if not layer.fuse_norms or layer.separate_mlp_norm:
                raise ValueError(f"layers[{i}]: norm_handoff needs fuse_norms=True and separate_mlp_norm=False")
            layer.norm_handoff = True
        self.norm_handoff = True
        return self

    def forward(self, x: torch.Tensor, caches: list[StaticKV], pos: torch.Tensor) -> torch.Tensor:
        cos, sin = self.cos.index_select(0, pos).to(x.dtype), self.sin.index_select(0, pos).to(x.dtype)
        if self.attention == "apt_kvcache":  # the op reads the tables at the positions itself
            cos, sin, mask = self.cos, self.sin, pos
        elif self.attention == "flex":
            mask = decode_block_mask(pos, self.positions.numel())
        elif self.attention == "apt":
            mask = pos + 1  # the lengths decode_attention reads
        else:
            mask = (self.positions <= pos).view(1, 1, 1, -1)
        x_sumsq = None  # (norm_handoff) the sums of squares of x from the layer before
        for layer, kv in zip(self.layers, caches):
            if self.norm_handoff:
                x, x_sumsq = layer(x, kv, pos, cos, sin, mask, x_sumsq)
            else:
                x = layer(x, kv, pos, cos, sin, mask)
        return x


def build(s: Shape, device: torch.device, dtype: torch.dtype, fused: bool = False,
          attention: str = "sdpa", swiglu: str = "fused", fuse_norms: bool = False,
          separate_mlp_norm: bool = False) -> Stack:
    """Random weights (std 0.02; norms 1) made on ``device``, in ``dtype``; the rotary tables stay
    float32 (cast per step). ``fused``, ``attention``, ``swiglu``, ``fuse_norms``,
    ``separate_mlp_norm``: Layer's."""
    torch.manual_seed(0)
    with torch.device(device):
        model = Stack(s, fused, attention, swiglu, fuse_norms, separate_mlp_norm)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("n1.weight", "n2.weight")):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    model = model.to(dtype)
    model.cos, model.sin = model.cos.float(), model.sin.float()
    return model.eval()


def weight_bytes(model: nn.Module) -> dict:
    """Bytes of the Linear weights held: bf16 weights, or FP4Linear's packed codes + scales (none
    after release_canonical), and the tiled copies FP4Linear keeps beside them (CUDA or CPU, built
    at the first inference call)."""
    from apt_ext.nn import FP4Linear
    canonical = tiled = 0
    for m in model.modules():
        if isinstance(m, nn.Linear):
            canonical += m.weight.nbytes
        elif isinstance(m, FP4Linear):
            canonical += sum(t.nbytes for t in (m.packed, m.scales, m.tensor_scale))
            for t in (m._tiled, m._cpu_tiled):
                if t is not None:
                    tiled += t.tiles.nbytes + t.tile_scales.nbytes
    return {"canonical": canonical, "tiled_copy": tiled}


def median_s(fn, device: torch.device, iters: int) -> tuple[float, torch.Tensor]:
    """(median seconds of fn() over ``iters`` calls, synchronised each time; the last output)."""
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def top_kernels(fn, calls: int, layers: int, n: int = 15) -> tuple[list[dict], list[dict]]:
    """The ``n`` GPU kernels with the most device time over ``calls`` calls of ``fn`` (a step of
    ``layers`` layers; torch.profiler): name, microseconds and launches per call; and the FP4
    GEMV's launches by grid and order in a layer (kernels_by_grid of the profile's trace), which
    tells the projections apart."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        us = getattr(e, "device_time_total", None)
        us = e.cuda_time_total if us is None else us
        if us > 0 and e.device_type == torch.autograd.DeviceType.CUDA:
            rows.append({"name": e.key[:120], "us_per_call": us / calls, "launches_per_call": e.count / calls})
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        by_grid = kernels_by_grid(json.loads(trace.read_text()), calls, "gemv", layers)
    return sorted(rows, key=lambda r: -r["us_per_call"])[:n], by_grid


def kernels_by_grid(trace: dict, calls: int, match: str, layers: int = 1) -> list[dict]:
    """GPU kernels of a Chrome trace (torch.profiler's ``export_chrome_trace``) whose name contains
    ``match``, grouped by name, grid, block and slot: microseconds and launches per call of the
    profiled function and microseconds per launch (median), most time first. The slot tells apart
    launches of one kernel and grid within a layer by their order (a kernel launched r times per
    call of ``layers`` layers: launch j of a call is slot j mod (r / layers)), so in the decoder,
    where o and down launch the same GEMV with the same grid, each projection gets its own row (r
    not a multiple of ``layers``: each launch of a call is its own slot)."""
    if calls < 1 or layers < 1:
        raise ValueError(f"kernels_by_grid: calls and layers must be >= 1, got calls={calls}, layers={layers}")
    launches: dict[tuple, list[tuple[float, float]]] = {}
    for e in trace.get("traceEvents", []):
        if e.get("cat") != "kernel" or match not in e.get("name", ""):
            continue
        args = e.get("args", {})
        key = (e["name"][:120], tuple(args.get("grid", ())), tuple(args.get("block", ())))
        launches.setdefault(key, []).append((float(e.get("ts", 0.0)), float(e.get("dur", 0.0))))
    groups: dict[tuple, list[float]] = {}
    for key, events in launches.items():
        per_call = max(1, len(events) // calls)
        per_layer = per_call // layers if per_call % layers == 0 else per_call
        for j, (_, dur) in enumerate(sorted(events)):
            groups.setdefault(key + ((j % per_call) % per_layer,), []).append(dur)
    rows = [{"name": name, "grid": list(grid), "block": list(block), "slot": slot,
             "us_per_call": sum(durs) / calls, "launches_per_call": len(durs) / calls,
             "us_per_launch": statistics.median(durs)}
            for (name, grid, block, slot), durs in groups.items()]
    return sorted(rows, key=lambda r: -r["us_per_call"])


def capture_graph(fn, warmups: int = 1) -> tuple[torch.cuda.CUDAGraph, object]:
    """(a CUDA graph of one ``fn()`` call, that call's output), after ``warmups`` calls on a side
    stream (compiles, caches, allocator pools)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmups):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


def replay_seconds(graph: torch.cuda.CUDAGraph, iters: int) -> float:
    """Median GPU seconds of one replay of ``graph`` over ``iters`` replays (CUDA events)."""
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def time_step(model: Stack, caches: list[StaticKV], x: torch.Tensor, pos: torch.Tensor, device: torch.device,
              iters: int, compile_step: bool = False, profile: bool = False) -> dict:
    """One decode step's median seconds eager and (CUDA) replayed from a graph, and its output.
    With ``compile_step`` the step is also compiled (torch.compile, after the eager calls, so that
    FP4Linear's tiled copies exist when it is traced): its time called as is (``compiled_s``) and its
    difference from the eager output; on CUDA the graph then captures the compiled step. With
    ``profile`` (CUDA) the top kernels of 3 graph replays are kept (``graph_top_kernels``), and the FP4
    GEMV's launches by grid (``graph_gemv_by_grid``: one row per projection)."""
    with torch.no_grad():
        for _ in range(3):
            model(x, caches, pos)  # warm-up; FP4Linear builds its tiled copies here
        sync(device)
        eager_s, out = median_s(lambda: model(x, caches, pos), device, iters)
        res = {"eager_s": eager_s, "out": out.float().cpu(), "compiled": compile_step}
        step = model
        if compile_step:
            step = torch.compile(model, dynamic=False)
            for _ in range(3):
                step(x, caches, pos)  # traces and compiles, then warm
            sync(device)
            res["compiled_s"], c_out = median_s(lambda: step(x, caches, pos), device, iters)
            c_out = c_out.float().cpu()
            res["compiled_rel_diff_vs_eager"] = float((c_out - res["out"]).norm() / res["out"].norm())
        if device.type == "cuda":
            graph, static_out = capture_graph(lambda: step(x, caches, pos))
            graph.replay()
            sync(device)
            res["graph_s"] = replay_seconds(graph, iters)
            if profile:
                res["graph_top_kernels"], res["graph_gemv_by_grid"] = top_kernels(graph.replay, 3, len(model.layers))
            # the replay against the step it captured (eager, or compiled)
            res["graph_out_equals_eager"] = bool(torch.equal(static_out.float().cpu(),
                                                             c_out if compile_step else res["out"]))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 layers")
    ap.add_argument("--cpu", action="store_true", help="tiny, on the CPU, eager only")
    ap.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    ap.add_argument("--iters", type=int, default=None, help="timed steps per case (default 50, CPU 5)")
    ap.add_argument("--fused", action="store_true",
                    help="q/k/v and gate/up as one Linear each (three GEMVs fewer per layer)")
    ap.add_argument("--one-copy", action="store_true",
                    help="FP4Linear.release_canonical() on every layer: only the tiled copy of each weight is held")
    ap.add_argument("--compile", action="store_true",
                    help="also compile each model's step (torch.compile; on CUDA the graph replays the compiled step)")
    ap.add_argument("--attention", choices=ATTENTIONS, default="apt_kvcache",
                    help="both models' attention: F.scaled_dot_product_attention (masked, whole cache), two batched "
                         "matmuls and a float32 softmax (grouped_attention), flex_attention over the cache up "
                         "to the position alone (decode_block_mask), apt_ext.attention.decode_attention "
                         "(the same positions, one split-KV launch), or decode_attention_kvcache (default since "
                         "the forty-sixth session, the fastest for both models on an H100: that launch also "
                         "applies the rotary embedding and writes the cache)")
    ap.add_argument("--swiglu", choices=SWIGLUS, default="fused",
                    help="with --fused, the MLP's silu(gate) * up: apt_ext.nn.swiglu (FP4: one fused kernel) or "
                         "silu and product of the two halves")
    ap.add_argument("--fuse-norms", action="store_true",
                    help="with --fused: the nvfp4 model's RMSNorm weights folded into q/k/v and gate/up before "
                         "quantising (apt_ext.nn.fold_rms_norm_), the norms run inside those GEMVs and the "
                         "residual adds in the o and down GEMVs' epilogues (rms_norm_linear, rms_norm_swiglu, "
                         "linear_residual; the bf16 model runs the same helpers, i.e. its usual composite)")
    ap.add_argument("--separate-mlp-norm", action="store_true",
                    help="with --fuse-norms: the MLP's RMSNorm runs as its own kernel and gate/up is the plain "
                         "(SwiGLU) projection, not folded; q/k/v's norm and the residual adds stay fused (for when "
                         "the norm inside the SwiGLU GEMV costs more than a separate norm kernel: compare "
                         "fp4_norm_fusion.py's fused and composite gate_up)")
    ap.add_argument("--norm-handoff", action="store_true",
                    help="with --fuse-norms: the o and down GEMVs also return their output's sums of squares "
                         "(in parts of 16 features) and the next norm's GEMV adds those instead of summing "
                         "x's squares (linear_residual(..., return_sumsq=True), rms_norm_*(..., x_sumsq)); the "
                         "nvfp4 model only (the bf16 model would only compute sums it cannot use)")
    ap.add_argument("--profile", action="store_true",
                    help="(CUDA) also record and print the top GPU kernels of the graph-replayed step, and the FP4 "
                         "GEMV's time by launch grid (one row per projection)")
    ap.add_argument("--out", default=None,
                    help="JSON path (default benchmarks/results/e2e_decoder_<machine>[_quick][...].json)")
    args = ap.parse_args(argv)
    if args.fuse_norms and not args.fused:
        ap.error("--fuse-norms: needs --fused")
    if args.separate_mlp_norm and not args.fuse_norms:
        ap.error("--separate-mlp-norm: needs --fuse-norms")
    if args.norm_handoff and (not args.fuse_norms or args.separate_mlp_norm):
        ap.error("--norm-handoff: needs --fuse-norms, without --separate-mlp-norm")
    batches = [int(b) for b in args.batches.split(",")]
    if any(b < 1 for b in batches):
        ap.error(f"--batches: expected positive integers, got {args.batches!r}")
    device = torch.device("cuda:0" if torch.cuda.is_available() and not args.cpu else "cpu")
    gpu = device.type == "cuda"
    if gpu:
        shape = Shape(layers=4) if args.quick else Shape()
        dtype = torch.bfloat16
    else:
        shape = Shape(layers=2, d=256, d_ff=512, heads=4, kv_heads=2, context=64)
        dtype = torch.float32
    iters = args.iters or (50 if gpu else 5)
    import apt_ext
    machine = torch.cuda.get_device_name(0) if gpu else f"CPU {platform.machine()} x{os.cpu_count()}"
    result: dict = {"benchmark": "e2e_decoder",
                    "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "machine": machine, "device": str(device), "torch": torch.__version__,
                    "command": " ".join([sys.executable, *sys.argv]), "shape": asdict(shape),
                    "dtype": str(dtype).replace("torch.", ""), "iters": iters, "compiled": args.compile,
                    "fused_projections": args.fused, "one_copy": args.one_copy, "attention": args.attention,
                    "swiglu": args.swiglu if args.fused else "composite", "fused_norms": args.fuse_norms,
                    "separate_mlp_norm": args.separate_mlp_norm, "norm_handoff": args.norm_handoff,
                    "runs": {}}
    ref_model = build(shape, device, dtype, args.fused, args.attention, args.swiglu, args.fuse_norms,
                      args.separate_mlp_norm)
    fp4_model = copy.deepcopy(ref_model)
    if args.fuse_norms:
        for layer in fp4_model.layers:
            fold_rms_norm_(layer.n1, layer.qkv)
            if not args.separate_mlp_norm:
                fold_rms_norm_(layer.n2, layer.gate_up)
    if args.norm_handoff:
        fp4_model.set_norm_handoff()
    fp4_model = apt_ext.quantize_(fp4_model, fmt="nvfp4")
    if args.one_copy:
        from apt_ext.nn import FP4Linear
        for m in fp4_model.modules():
            if isinstance(m, FP4Linear):
                m.release_canonical()
    for b in tqdm(batches, desc="batches"):
        g = torch.Generator().manual_seed(b)
        x = (torch.randn(b, 1, shape.d, generator=g)).to(device, dtype)
        pos = torch.tensor([shape.context // 2], device=device)
        runs = {}
        for name, model in ((result["dtype"], ref_model), ("nvfp4", fp4_model)):
            caches = [StaticKV(b, shape, device, dtype, torch.Generator().manual_seed(100 + i))
                      for i in range(shape.layers)]
            r = time_step(model, caches, x, pos, device, iters, args.compile, args.profile)
            r["tokens_per_s"] = b / r.get("graph_s", r.get("compiled_s", r["eager_s"]))
            runs[name] = r
            del caches
        ref = runs[result["dtype"]].pop("out")
        fp4 = runs["nvfp4"].pop("out")
        runs["nvfp4"]["rel_error_vs_" + result["dtype"]] = float((fp4 - ref).norm() / ref.norm())
        # the residual stream carries x through: the layers' own contribution, out - x, shows
        # the 4-bit weights' error without it
        upd = ref - x.float().cpu()
        runs["nvfp4"]["update_rel_error_vs_" + result["dtype"]] = float((fp4 - ref).norm() / upd.norm())
        runs["nvfp4"]["cosine_vs_" + result["dtype"]] = float(F.cosine_similarity(fp4.flatten(1), ref.flatten(1)).mean())
        runs["nvfp4"]["speedup_vs_" + result["dtype"]] = runs["nvfp4"]["tokens_per_s"] / runs[result["dtype"]]["tokens_per_s"]
        result["runs"][str(b)] = runs
    wb_ref, wb_fp4 = weight_bytes(ref_model), weight_bytes(fp4_model)
    result["weight_bytes"] = {result["dtype"]: wb_ref["canonical"], "nvfp4": wb_fp4["canonical"],
                              "nvfp4_tiled_copy": wb_fp4["tiled_copy"]}
    result["nvfp4_weight_ratio"] = wb_fp4["canonical"] / wb_ref["canonical"]
    result["nvfp4_with_tiled_copy_weight_ratio"] = (wb_fp4["canonical"] + wb_fp4["tiled_copy"]) / wb_ref["canonical"]
    tag = (re.sub(r"[^A-Za-z0-9]+", "_", machine).strip("_").lower() + ("_quick" if args.quick and gpu else "")
           + ("_fused" if args.fused else "") + ("_one_copy" if args.one_copy else "")
           + ("_compiled" if args.compile else "") + ("" if args.attention == "sdpa" else "_" + args.attention)
           + ("_composite_swiglu" if args.fused and args.swiglu == "composite" else "")
           + ("_fused_norms" if args.fuse_norms else "") + ("_separate_mlp_norm" if args.separate_mlp_norm else "")
           + ("_norm_handoff" if args.norm_handoff else "")
           + ("_profile" if args.profile else ""))
    out = Path(args.out) if args.out else ROOT / "results" / f"e2e_decoder_{tag}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\n{machine}: {shape.layers} layers x d {shape.d}, d_ff {shape.d_ff}, context {shape.context}; "
          f"nvfp4 weights held {result['nvfp4_with_tiled_copy_weight_ratio']:.3f}x the {result['dtype']} model's "
          f"(canonical tensors {result['nvfp4_weight_ratio']:.3f}x, tiled copy "
          f"{wb_fp4['tiled_copy'] / wb_ref['canonical']:.3f}x)")
    for b, runs in result["runs"].items():
        for name, r in runs.items():
            extra = (f", {r['speedup_vs_' + result['dtype']]:.2f}x, rel. error {r['rel_error_vs_' + result['dtype']]:.4f}"
                     f" (of the layers' contribution {r['update_rel_error_vs_' + result['dtype']]:.4f})"
                     if name == "nvfp4" else "")
            graph = f", graph {r['graph_s'] * 1e3:.3f} ms" if "graph_s" in r else ""
            comp = f", compiled {r['compiled_s'] * 1e3:.3f} ms" if "compiled_s" in r else ""
            print(f"  B={b:>2} {name:9s} eager {r['eager_s'] * 1e3:.3f} ms{comp}{graph}, {r['tokens_per_s']:.1f} tokens/s"
                  f"{extra}")
            for k in r.get("graph_top_kernels", []):
                print(f"      {k['us_per_call']:9.1f} us {k['launches_per_call']:6.1f}x  {k['name'][:90]}")
            for k in r.get("graph_gemv_by_grid", []):
                print(f"      {k['us_per_call']:9.1f} us {k['launches_per_call']:6.1f}x {k['us_per_launch']:7.2f} us a launch, "
                      f"grid {k['grid']} block {k['block']} slot {k['slot']}  {k['name'][60:110]}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
