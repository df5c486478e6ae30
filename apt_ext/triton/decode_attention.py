"""Triton kernel of ``apt::decode_attention``: attention of one new token per sequence over a KV
cache, split over the keys (flash-decoding), one launch.

Grid (B * KV heads, SPLITS). A program takes one key head and one of SPLITS equal slices of the
positions [0, length): it loads the G = H / KV query heads that read this key head as the rows of
one tile (padded to 16 rows for the tensor-core dot), so each key and value row is read from
memory once for all of them, and keeps an online softmax over its slice (float32 running max,
sum and unnormalised output). It writes those three to a float32 scratch, then counts itself done
on its key head's counter (an acquire-release atomic); the program that counts last merges the
SPLITS partial results (rescaled by exp(max_i - max)), writes the output and sets the counter back
to zero. So no second launch: decoding a token is latency-bound, and a launch costs about as much
as the work. Its counters are zeroed once, not before each call
(apt_ext/triton/arrival_counters.py).

``length`` is read on the device, so a CUDA graph captured once replays for any length up to the
cache's capacity; slices are ``ceil(length / SPLITS)`` positions each.

With APPEND (``apt::decode_attention_kvcache``) ``len_ptr`` holds each sequence's position p (the
length is p + 1): every program rotates q (ROTARY: 1 pairs (i, i + R/2), 2 pairs (2i, 2i + 1)) and
the new key with row p of the rotary tables, uses the new key and value in place of the cache's
row p (so no program waits for the cache write), and split 0 writes them into the caches.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from apt_ext.attention import _ops  # the op this kernel implements (defined on import) and its checks
from apt_ext.triton import kernel
from apt_ext.triton.arrival_counters import arrival_counters
from apt_ext.triton.host_math import cdiv, next_power_of_2
from apt_ext.triton.launch import Launcher

BLOCK_N = 64        # keys per step of a program's loop
MIN_ROWS = 16       # rows of a tensor-core dot: the query heads of a key head are padded to this
MAX_SPLITS = 64     # at most this many programs per (sequence, key head)
MERGE_TILE = 8192   # float32 elements of partial outputs the merging program loads at once


@triton.jit
def _decode_attention_kernel(q_ptr, k_ptr, v_ptr, len_ptr, out_ptr, acc_ptr, max_ptr, sum_ptr, count_ptr,
                             kn_ptr, vn_ptr, cos_ptr, sin_ptr, sm_scale, KV, HD, T,
                             q_sb, q_sh, k_sb, k_sh, k_st, v_sb, v_sh, v_st, o_sb, o_sh, len_sb,
                             kn_sb, kn_sh, vn_sb, vn_sh, rot_st,
                             G: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr,
                             BLOCK_N: tl.constexpr, SPLITS: tl.constexpr, SPLITS_POW2: tl.constexpr,
                             G_POW2: tl.constexpr, MERGE_SPLITS: tl.constexpr, DOT_PRECISION: tl.constexpr,
                             APPEND: tl.constexpr, ROTARY: tl.constexpr, ROT_HALF: tl.constexpr):
    pid = tl.program_id(0)  # sequence * KV + key head
    split = tl.program_id(1)
    b = (pid // KV).to(tl.int64)  # 64-bit offsets: a cache may hold more than 2^31 elements
    kvh = (pid % KV).to(tl.int64)
    # clamped to the cache (a check would cost the host a synchronisation; see _ops.decode_attention)
    if APPEND:
        pos = tl.minimum(tl.maximum(tl.load(len_ptr + b * len_sb).to(tl.int32), 0), T - 1)
        length = pos + 1
    else:
        length = tl.minimum(tl.maximum(tl.load(len_ptr + b * len_sb).to(tl.int32), 0), T)
        pos = length - 1
    chunk = tl.cdiv(length, SPLITS)
    start = split * chunk
    end = tl.minimum(start + chunk, length)

    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    gmask = g < G
    dmask = d < HD
    heads = kvh * G + g
    q_rows = q_ptr + b * q_sb + heads[:, None] * q_sh
    q = tl.load(q_rows + d[None, :], mask=gmask[:, None] & dmask[None, :], other=0.0)
    k_base = k_ptr + b * k_sb + kvh * k_sh
    v_base = v_ptr + b * v_sb + kvh * v_sh
    if APPEND:
        kn_row = kn_ptr + b * kn_sb + kvh * kn_sh
        k_new = tl.load(kn_row + d, mask=dmask, other=0.0)
        v_new = tl.load(vn_ptr + b * vn_sb + kvh * vn_sh + d, mask=dmask, other=0.0)
        if ROTARY != 0:
            # column d's partner and its table entry: y_d = x_d cos - x_partner sin (first of its
            # pair) or x_d cos + x_partner sin; columns from 2 ROT_HALF on pass unchanged
            rot = d < 2 * ROT_HALF
            if ROTARY == 2:
                first = d % 2 == 0
                partner = tl.where(first, d + 1, d - 1)
                entry = d // 2
            else:
                first = d < ROT_HALF
                partner = tl.where(first, d + ROT_HALF, d - ROT_HALF)
                entry = tl.where(first, d, d - ROT_HALF)
            cos = tl.load(cos_ptr + pos * rot_st + entry, mask=rot, other=1.0).to(tl.float32)
            sin = tl.load(sin_ptr + pos * rot_st + entry, mask=rot, other=0.0).to(tl.float32)
            sin = tl.where(first, -sin, sin)
            q_pair = tl.load(q_rows + partner[None, :], mask=gmask[:, None] & rot[None, :], other=0.0)
            q = (q.to(tl.float32) * cos[None, :] + q_pair.to(tl.float32) * sin[None, :]).to(q.dtype)
            k_pair = tl.load(kn_row + partner, mask=rot, other=0.0)
            k_new = (k_new.to(tl.float32) * cos + k_pair.to(tl.float32) * sin).to(k_new.dtype)

    run_max = tl.full([BLOCK_G], float("-inf"), tl.float32)
    run_sum = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        nmask = n < end
        kv_mask = nmask[:, None] & dmask[None, :]
        k = tl.load(k_base + n[:, None] * k_st + d[None, :], mask=kv_mask, other=0.0)
        if APPEND:  # row p is the new key (its cache row is written by split 0, unordered with this)
            k = tl.where((n == pos)[:, None], k_new[None, :], k)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * sm_scale  # [BLOCK_G, BLOCK_N]
        s = tl.where(nmask[None, :], s, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(s, 1))
        rescale = tl.exp(run_max - new_max)
        p = tl.exp(s - new_max[:, None])
        run_sum = run_sum * rescale + tl.sum(p, 1)
        v = tl.load(v_base + n[:, None] * v_st + d[None, :], mask=kv_mask, other=0.0)
        if APPEND:
            v = tl.where((n == pos)[:, None], v_new[None, :], v)
        acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        run_max = new_max

    if APPEND:
        if split == 0:  # the new key and value into the caches, once per key head
            tl.store(k_base + pos * k_st + d, k_new, mask=dmask)
            tl.store(v_base + pos * v_st + d, v_new, mask=dmask)

    # this slice's partial result: scratch [B * H, SPLITS, (BLOCK_D)]
    row = b * KV * G + heads
    part = row * SPLITS + split
    tl.store(acc_ptr + part[:, None] * BLOCK_D + d[None, :], acc, mask=gmask[:, None])
    tl.store(max_ptr + part, run_max, mask=gmask)
    tl.store(sum_ptr + part, run_sum, mask=gmask)
    tl.debug_barrier()  # every thread's stores before the count that releases them
    done = tl.atomic_add(count_ptr + pid, 1, sem="acq_rel", scope="gpu")
    if done == SPLITS - 1:  # the last slice of this key head merges all of them
        tl.store(count_ptr + pid, 0)  # every slice has counted: zero for the next call
        # the G real query heads only (no padding to 16 rows), MERGE_SPLITS slices per load (tiles of
        # at least 2 rows and slices: every arange spans a power of two above 1)
        r = tl.arange(0, G_POW2)
        rmask = r < G
        mrow = b * KV * G + kvh * G + r
        s_idx = tl.arange(0, SPLITS_POW2)
        maxes = tl.load(max_ptr + mrow[:, None] * SPLITS + s_idx[None, :],
                        mask=rmask[:, None] & (s_idx[None, :] < SPLITS), other=float("-inf"),
                        cache_modifier=".cg")  # [G_POW2, SPLITS_POW2]
        top = tl.max(maxes, 1)
        top = tl.where(top == float("-inf"), 0.0, top)  # every slice empty (length 0, padding rows)
        total = tl.zeros([G_POW2], tl.float32)
        out = tl.zeros([G_POW2, BLOCK_D], tl.float32)
        for s0 in range(0, SPLITS, MERGE_SPLITS):
            m_idx = s0 + tl.arange(0, MERGE_SPLITS)
            pmask = rmask[:, None] & (m_idx[None, :] < SPLITS)
            parts = mrow[:, None] * SPLITS + m_idx[None, :]  # [G_POW2, MERGE_SPLITS]
            weight = tl.exp(tl.load(max_ptr + parts, mask=pmask, other=float("-inf"),
                                    cache_modifier=".cg") - top[:, None])  # 0 for an empty slice
            total += tl.sum(weight * tl.load(sum_ptr + parts, mask=pmask, other=0.0, cache_modifier=".cg"), 1)
            accs = tl.load(acc_ptr + parts[:, :, None] * BLOCK_D + d[None, None, :], mask=pmask[:, :, None],
                           other=0.0, cache_modifier=".cg")  # [G_POW2, MERGE_SPLITS, BLOCK_D]
            out += tl.sum(accs * weight[:, :, None], 1)
        out = out / tl.maximum(total, 1e-30)[:, None]  # length 0: zeros
        out_heads = kvh * G + r  # a new name: a variable reassigned in an if must keep its type
        tl.store(out_ptr + b * o_sb + out_heads[:, None] * o_sh + d[None, :], out.to(out_ptr.dtype.element_ty),
                 mask=rmask[:, None] & dmask[None, :])


_LAUNCH = Launcher(_decode_attention_kernel)


@functools.lru_cache(maxsize=None)
def _multiprocessors(index: int | None) -> int:
    """Streaming multiprocessors of CUDA device ``index`` (None: the current one)."""
    props = torch.cuda.get_device_properties(index if index is not None else torch.cuda.current_device())
    return props.multi_processor_count


def num_splits(programs: int, capacity: int, device: torch.device) -> int:
    """Slices of the keys per (sequence, key head): a power of two filling the GPU's
    multiprocessors with ``programs`` (sequence, key head) pairs, at most one per BLOCK_N
    positions of the cache's ``capacity`` and at most MAX_SPLITS."""
    sms = _multiprocessors(device.index) if device.type == "cuda" else 4
    want = max(1, sms // max(programs, 1))
    cap = min(MAX_SPLITS, next_power_of_2(cdiv(capacity, BLOCK_N)))
    return max(1, min(1 << (want.bit_length() - 1), cap))


def _launch(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, lengths: torch.Tensor,
            scale: float | None, append: tuple | None = None) -> torch.Tensor:
    """The launch of both ops: ``lengths`` the lengths (decode_attention) or, with ``append`` =
    (k_new, v_new, rotary_cos, rotary_sin, rotary_interleaved), the positions (decode_attention_kvcache)."""
    b, h, hd = q.shape
    kv, t = k_cache.shape[1], k_cache.shape[2]
    q = q if q.stride(-1) == 1 else q.contiguous()
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    splits = num_splits(b * kv, t, q.device)
    block_d = max(16, next_power_of_2(hd))
    rows = b * h * splits
    # one float32 scratch: partial outputs [rows, block_d], then the running maxima and sums [rows]
    scratch = torch.empty(rows * (block_d + 2), device=q.device, dtype=torch.float32)
    acc, maxes, sums = scratch.split([rows * block_d, rows, rows])
    counts = arrival_counters(b * kv, q.device)
    g = h // kv
    g_pow2 = max(2, next_power_of_2(g))
    k_new, v_new, cos, sin, interleaved = append if append is not None else (q, q, None, None, False)
    rotary = 0 if cos is None else (2 if interleaved else 1)
    cos, sin = (q, q) if cos is None else (cos, sin)  # (unread without ROTARY)
    _LAUNCH((b * kv, splits),
            (q, k_cache, v_cache, lengths, out, acc, maxes, sums, counts, k_new, v_new, cos, sin,
             float(hd ** -0.5 if scale is None else scale), kv, hd, t,
             q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
             v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), out.stride(0), out.stride(1),
             lengths.stride(0) if lengths.shape[0] > 1 else 0,
             k_new.stride(0), k_new.stride(1), v_new.stride(0), v_new.stride(1), cos.stride(0) if rotary else 0),
            {"G": g, "BLOCK_G": max(MIN_ROWS, next_power_of_2(g)), "BLOCK_D": block_d, "BLOCK_N": BLOCK_N,
             "SPLITS": splits, "SPLITS_POW2": max(2, splits), "G_POW2": g_pow2,
             "MERGE_SPLITS": max(2, min(splits, MERGE_TILE // (g_pow2 * block_d))),
             "DOT_PRECISION": "ieee" if q.dtype == torch.float32 else "tf32",
             "APPEND": append is not None, "ROTARY": rotary, "ROT_HALF": cos.shape[1] if rotary else 1},
            num_warps=4)
    return out


@kernel("decode_attention")
def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, length: torch.Tensor,
                     scale: float | None = None) -> torch.Tensor:
    """apt::decode_attention (docs/contract.md §2). q [B, H, D]; caches [B, KV, T, D], last dim
    contiguous; length int [B] or [1]. Returns [B, H, D] in q's dtype."""
    _ops.check_arguments(q, k_cache, v_cache, length, scale)
    return _launch(q, k_cache, v_cache, length, scale)


@kernel("decode_attention_kvcache")
def decode_attention_kvcache(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, k_new: torch.Tensor,
                             v_new: torch.Tensor, cache_seqlens: torch.Tensor, rotary_cos: torch.Tensor | None = None,
                             rotary_sin: torch.Tensor | None = None, rotary_interleaved: bool = False,
                             scale: float | None = None) -> torch.Tensor:
    """apt::decode_attention_kvcache (docs/contract.md §2): the caches updated in place at each
    sequence's position, the attention over the positions up to it. Returns [B, H, D]."""
    _ops.check_kvcache_arguments(q, k_cache, v_cache, k_new, v_new, cache_seqlens, rotary_cos, rotary_sin,
                                 rotary_interleaved, scale)
    return _launch(q, k_cache, v_cache, cache_seqlens, scale,
                   (k_new, v_new, rotary_cos, rotary_sin, rotary_interleaved))
