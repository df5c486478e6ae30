"""``apt::decode_attention``: its schema, checks, fake kernel and composite kernel (CPU, and any
device without the Triton kernel, apt_ext/triton/decode_attention.py).

Unlike the FP4 and left-spin ops (schemas in csrc/ops.cpp) this op has no native kernel, so its
schema is defined here, in the same ``apt`` namespace, when this module is imported. Like every
``torch.ops.apt`` op it needs the native extension loaded (the namespace is its library); without
it, importing this module raises the extension's load error.
"""
from __future__ import annotations

import math

import torch

from apt_ext import _native
from apt_ext._kernels import register_kernel

_native.require("apt_ext.attention (torch.ops.apt.decode_attention)")

SCHEMA = "(Tensor q, Tensor k_cache, Tensor v_cache, Tensor length, float? scale=None) -> Tensor"
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

torch.library.define("apt::decode_attention", SCHEMA)


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, length: torch.Tensor,
                     scale: float | None = None) -> torch.Tensor:
    """Attention of one new token's queries over a KV cache.

    q [B, H, D]: the token's query heads; k_cache, v_cache [B, KV, T, D] with H a multiple of KV
    (query head i reads key head i // (H / KV), as ``enable_gqa``), q's dtype (float32, bfloat16,
    float16) and device, the last dimension contiguous. length: int32/int64 [B] or [1] (one for
    all), on q's device: positions [0, length) are attended (the new token's own key and value
    written at length - 1 beforehand). scale: of the scores, default D ** -0.5. Returns [B, H, D]
    in q's dtype: softmax(q k^T * scale) v, accumulated in float32.

    A length outside [1, T] raises on the CPU; on a GPU, checking it would cost a host
    synchronisation (and break CUDA-graph capture), so it is clamped to [0, T] there (0 gives
    zeros). Not differentiable (inference).
    """
    _check_types(q, k_cache, v_cache, length, scale)  # the op's schema would reject these less clearly
    return torch.ops.apt.decode_attention(q, k_cache, v_cache, length, scale)


def _check_tensors(*named: tuple[str, object], optional: bool = False) -> None:
    """TypeError naming the argument for each (name, value) that is not a dense (strided) tensor (or
    None, when ``optional``)."""
    for name, t in named:
        if not isinstance(t, torch.Tensor) and not (optional and t is None):
            raise TypeError(f"{name}: expected a torch.Tensor{' or None' if optional else ''}, got {type(t).__name__}")
        if t is not None and t.layout != torch.strided:
            raise TypeError(f"{name}: expected a dense (strided) torch.Tensor, got layout {t.layout}")


def _check_types(q, k_cache, v_cache, length, scale, length_name: str = "length") -> None:
    """TypeError naming the argument: tensors where tensors go, a number or None for scale (ValueError
    for a NaN or infinite scale, which would turn every score into NaN)."""
    _check_tensors(("q", q), ("k_cache", k_cache), ("v_cache", v_cache), (length_name, length))
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))):
        raise TypeError(f"scale: expected a float or None, got {type(scale).__name__}")
    if scale is not None and not math.isfinite(scale):
        raise ValueError(f"scale: expected a finite float or None, got {scale!r}")


def check_arguments(q, k_cache, v_cache, length, scale, length_name: str = "length") -> None:
    """ValueError / TypeError naming the argument, for anything decode_attention does not take
    (every kernel of the op runs it, the fake one included, so a direct torch.ops call is checked
    too). ``length_name``: the length argument's name in the calling op (decode_attention_kvcache:
    cache_seqlens)."""
    _check_types(q, k_cache, v_cache, length, scale, length_name)
    if q.dim() != 3:
        raise ValueError(f"q: expected [B, H, D] (3 dims), got shape {tuple(q.shape)}")
    if q.dtype not in _DTYPES:
        raise TypeError(f"q: expected one of {_DTYPES}, got {q.dtype}")
    b, h, d = q.shape
    if d == 0:
        raise ValueError(f"q: expected a head dimension D >= 1, got shape {tuple(q.shape)}")
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
        if t.dim() != 4:
            raise ValueError(f"{name}: expected [B, KV, T, D] (4 dims), got shape {tuple(t.shape)}")
        if t.dtype != q.dtype or t.device != q.device:
            raise ValueError(f"{name}: expected q's dtype and device ({q.dtype}, {q.device}), got {t.dtype}, {t.device}")
        if t.shape[0] != b or t.shape[3] != d:
            raise ValueError(f"{name}: expected [B={b}, KV, T, D={d}] to match q {tuple(q.shape)}, got {tuple(t.shape)}")
        if t.shape[2] == 0:
            raise ValueError(f"{name}: expected a cache of at least one position, got shape {tuple(t.shape)}")
        if d > 1 and t.stride(3) != 1:
            raise ValueError(f"{name}: expected its last dimension contiguous (stride 1), got strides {t.stride()}")
    if v_cache.shape != k_cache.shape:
        raise ValueError(f"v_cache: expected k_cache's shape {tuple(k_cache.shape)}, got {tuple(v_cache.shape)}")
    kv = k_cache.shape[1]
    if kv == 0 or h % kv:
        raise ValueError(f"q: expected a number of heads ({h}) divisible by k_cache's key heads ({kv})")
    if length.dtype not in (torch.int32, torch.int64) or length.dim() != 1 or length.shape[0] not in (1, b):
        raise ValueError(f"{length_name}: expected an int32/int64 tensor of shape [{b}] or [1], got {length.dtype} "
                         f"shape {tuple(length.shape)}")
    if length.device != q.device:
        raise ValueError(f"{length_name}: expected q's device {q.device}, got {length.device}")


def decode_attention_composite(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, length: torch.Tensor,
                               scale: float | None = None) -> torch.Tensor:
    """The op in torch ops (any device): grouped scores in float32, positions >= length masked."""
    b, h, d = q.shape
    kv, t = k_cache.shape[1], k_cache.shape[2]
    qg = q.reshape(b, kv, h // kv, d).float()
    scores = torch.matmul(qg, k_cache.float().transpose(-1, -2)) * (d ** -0.5 if scale is None else scale)
    keep = torch.arange(t, device=q.device) < length.clamp(0, t).view(-1, 1, 1, 1)  # [B or 1, 1, 1, T]
    p = torch.softmax(scores.masked_fill(~keep, float("-inf")), -1).nan_to_num(0.0)  # length 0: zeros
    return torch.matmul(p, v_cache.float()).reshape(b, h, d).to(q.dtype)


def _cpu_kernel(q, k_cache, v_cache, length, scale=None):
    """The composite, after checking the lengths' values (free on the CPU; run by the kernel, so
    also under torch.compile, where the wrapper sees no values)."""
    check_arguments(q, k_cache, v_cache, length, scale)
    if length.numel() and (int(length.min()) < 1 or int(length.max()) > k_cache.shape[2]):  # (B = 0: none)
        raise ValueError(f"length: expected values in [1, {k_cache.shape[2]}] (the cache's positions), "
                         f"got {length.tolist()}")
    return decode_attention_composite(q, k_cache, v_cache, length, scale)


def _fake(q, k_cache, v_cache, length, scale=None):
    check_arguments(q, k_cache, v_cache, length, scale)
    return torch.empty_like(q, memory_format=torch.contiguous_format)


def _other_devices(q, k_cache, v_cache, length, scale=None):
    check_arguments(q, k_cache, v_cache, length, scale)
    return decode_attention_composite(q, k_cache, v_cache, length, scale)


torch.library.register_fake("apt::decode_attention", _fake)
register_kernel("decode_attention", "cpu", "composite: apt_ext.attention._ops.decode_attention_composite",
                _cpu_kernel)
# every other device (a GPU without Triton): the same composite; the Triton kernel registers as
# the CUDA one over it
torch.library.register_kernel("apt::decode_attention", None, _other_devices)


# --- apt::decode_attention_kvcache: the new token's key and value appended, rotary embedding applied

KVCACHE_SCHEMA = ("(Tensor q, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor k_new, Tensor v_new, Tensor cache_seqlens, "
                  "Tensor? rotary_cos=None, Tensor? rotary_sin=None, bool rotary_interleaved=False, "
                  "float? scale=None) -> Tensor")

torch.library.define("apt::decode_attention_kvcache", KVCACHE_SCHEMA)


def decode_attention_kvcache(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, k_new: torch.Tensor,
                             v_new: torch.Tensor, cache_seqlens: torch.Tensor, rotary_cos: torch.Tensor | None = None,
                             rotary_sin: torch.Tensor | None = None, rotary_interleaved: bool = False,
                             scale: float | None = None) -> torch.Tensor:
    """One decoding step's attention with the cache update folded in (as FlashAttention's
    ``flash_attn_with_kvcache``): the rotary embedding applied to q and k_new at each sequence's
    position p = cache_seqlens[b], k_new and v_new written into the caches at p (in place), then
    decode_attention over positions [0, p + 1).

    q [B, H, D]; k_cache, v_cache [B, KV, T, D] (as decode_attention's); k_new, v_new [B, KV, D]
    of q's dtype and device, last dimension contiguous; cache_seqlens: int32/int64 [B] or [1] (one
    for all), the positions already filled, on q's device. rotary_cos, rotary_sin: None, or
    [>= T, R / 2] (float32 or q's dtype; R <= D, even): the first R of each head's D values are
    rotated by row p, as pairs (i, i + R / 2), or (2i, 2i + 1) with ``rotary_interleaved``; the
    rest pass unchanged. The rotated q and k are rounded to q's dtype. scale: of the scores,
    default D ** -0.5. Returns [B, H, D] in q's dtype.

    A position outside [0, T - 1] raises on the CPU; on a GPU it is clamped to it (a check would
    cost a host synchronisation). Not differentiable (inference).
    """
    _check_kvcache_types(q, k_cache, v_cache, k_new, v_new, cache_seqlens, rotary_cos, rotary_sin,
                         rotary_interleaved, scale)
    return torch.ops.apt.decode_attention_kvcache(q, k_cache, v_cache, k_new, v_new, cache_seqlens, rotary_cos,
                                                  rotary_sin, rotary_interleaved, scale)


def _check_kvcache_types(q, k_cache, v_cache, k_new, v_new, cache_seqlens, rotary_cos, rotary_sin,
                         rotary_interleaved, scale) -> None:
    _check_types(q, k_cache, v_cache, cache_seqlens, scale, "cache_seqlens")
    _check_tensors(("k_new", k_new), ("v_new", v_new))
    _check_tensors(("rotary_cos", rotary_cos), ("rotary_sin", rotary_sin), optional=True)
    if not isinstance(rotary_interleaved, bool):
        raise TypeError(f"rotary_interleaved: expected a bool, got {type(rotary_interleaved).__name__}")


def check_kvcache_arguments(q, k_cache, v_cache, k_new, v_new, cache_seqlens, rotary_cos, rotary_sin,
                            rotary_interleaved, scale) -> None:
    """decode_attention's checks (cache_seqlens as its length), then k_new / v_new and the rotary
    tables' (ValueError / TypeError naming the argument)."""
    _check_kvcache_types(q, k_cache, v_cache, k_new, v_new, cache_seqlens, rotary_cos, rotary_sin,
                         rotary_interleaved, scale)
    check_arguments(q, k_cache, v_cache, cache_seqlens, scale, "cache_seqlens")
    b, d = q.shape[0], q.shape[2]
    kv = k_cache.shape[1]
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
        if any(stride == 0 and size > 1 for size, stride in zip(t.shape, t.stride())):
            raise ValueError(f"{name}: expected no broadcast (stride 0) dimension: it is written in place, so its "
                             f"sequences or heads would overwrite each other; got shape {tuple(t.shape)}, strides "
                             f"{t.stride()}")
    for name, t in (("k_new", k_new), ("v_new", v_new)):
        if t.shape != (b, kv, d):
            raise ValueError(f"{name}: expected [B={b}, KV={kv}, D={d}], got shape {tuple(t.shape)}")
        if t.dtype != q.dtype or t.device != q.device:
            raise ValueError(f"{name}: expected q's dtype and device ({q.dtype}, {q.device}), got {t.dtype}, {t.device}")
        if d > 1 and t.stride(2) != 1:
            raise ValueError(f"{name}: expected its last dimension contiguous (stride 1), got strides {t.stride()}")
    if (rotary_cos is None) != (rotary_sin is None):
        raise ValueError("rotary_cos, rotary_sin: expected both or neither")
    if rotary_cos is not None:
        for name, t in (("rotary_cos", rotary_cos), ("rotary_sin", rotary_sin)):
            if t.dim() != 2 or t.shape != rotary_cos.shape:
                raise ValueError(f"{name}: expected [>= T, R / 2] (2 dims, both tables alike), got shapes "
                                 f"{tuple(rotary_cos.shape)} and {tuple(rotary_sin.shape)}")
            if t.dtype not in (torch.float32, q.dtype) or t.device != q.device:
                raise ValueError(f"{name}: expected float32 or q's dtype on q's device, got {t.dtype} on {t.device}")
            if t.stride(1) != 1:
                raise ValueError(f"{name}: expected its last dimension contiguous (stride 1), got strides {t.stride()}")
        if rotary_sin.stride() != rotary_cos.stride():
            raise ValueError(f"rotary_sin: expected rotary_cos's strides {rotary_cos.stride()}, got {rotary_sin.stride()}")
        half = rotary_cos.shape[1]
        if half < 1 or 2 * half > d or rotary_cos.shape[0] < k_cache.shape[2]:
            raise ValueError(f"rotary_cos: expected [>= T={k_cache.shape[2]}, R / 2] with 2 <= R <= D={d}, got shape "
                             f"{tuple(rotary_cos.shape)}")


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """x [B, N, D] rotated by cos, sin [B, R / 2] (each sequence's row) in float32, rounded to x's
    dtype: pairs (i, i + R / 2), or (2i, 2i + 1) when ``interleaved``; values past R unchanged."""
    r = 2 * cos.shape[-1]
    xr = x[..., :r].float()
    c, s = cos[:, None, :].float(), sin[:, None, :].float()
    x1, x2 = (xr[..., 0::2], xr[..., 1::2]) if interleaved else (xr[..., :r // 2], xr[..., r // 2:])
    y1, y2 = x1 * c - x2 * s, x1 * s + x2 * c
    y = torch.stack((y1, y2), -1).flatten(-2) if interleaved else torch.cat((y1, y2), -1)
    return torch.cat((y.to(x.dtype), x[..., r:]), -1)


def decode_attention_kvcache_composite(q, k_cache, v_cache, k_new, v_new, cache_seqlens, rotary_cos=None,
                                       rotary_sin=None, rotary_interleaved=False, scale=None) -> torch.Tensor:
    """The op in torch ops (any device), positions clamped to [0, T - 1] as on a GPU."""
    b, kv, t = q.shape[0], k_cache.shape[1], k_cache.shape[2]
    pos = cache_seqlens.clamp(0, t - 1).long().expand(b)
    if rotary_cos is not None:
        cos, sin = rotary_cos[pos], rotary_sin[pos]
        q, k_new = rotary(q, cos, sin, rotary_interleaved), rotary(k_new, cos, sin, rotary_interleaved)
    rows, heads = torch.arange(b, device=q.device)[:, None], torch.arange(kv, device=q.device)[None, :]
    k_cache[rows, heads, pos[:, None]] = k_new
    v_cache[rows, heads, pos[:, None]] = v_new
    return decode_attention_composite(q, k_cache, v_cache, pos + 1, scale)


def _kvcache_cpu_kernel(q, k_cache, v_cache, k_new, v_new, cache_seqlens, rotary_cos=None, rotary_sin=None,
                        rotary_interleaved=False, scale=None):
    """The composite, after checking the positions' values and that the two caches are not one
    memory (free on the CPU)."""
    check_kvcache_arguments(q, k_cache, v_cache, k_new, v_new, cache_seqlens, rotary_cos, rotary_sin,
                            rotary_interleaved, scale)
    if k_cache.numel() and k_cache.data_ptr() == v_cache.data_ptr():
        raise ValueError("v_cache: expected a tensor apart from k_cache, got one that shares its memory (the new "
                         "value would overwrite the new key)")
    if cache_seqlens.numel() and (int(cache_seqlens.min()) < 0
                                  or int(cache_seqlens.max()) > k_cache.shape[2] - 1):  # (B = 0: none)
        raise ValueError(f"cache_seqlens: expected values in [0, {k_cache.shape[2] - 1}] (room for the new token "
                         f"in the cache's {k_cache.shape[2]} positions), got {cache_seqlens.tolist()}")
    return decode_attention_kvcache_composite(q, k_cache, v_cache, k_new, v_new, cache_seqlens, rotary_cos,
                                              rotary_sin, rotary_interleaved, scale)


def _kvcache_fake(q, k_cache, v_cache, k_new, v_new, cache_seqlens, rotary_cos=None, rotary_sin=None,
                  rotary_interleaved=False, scale=None):
    check_kvcache_arguments(q, k_cache, v_cache, k_new, v_new, cache_seqlens, rotary_cos, rotary_sin,
                            rotary_interleaved, scale)
    return torch.empty_like(q, memory_format=torch.contiguous_format)


def _kvcache_other_devices(q, k_cache, v_cache, k_new, v_new, cache_seqlens, rotary_cos=None, rotary_sin=None,
                           rotary_interleaved=False, scale=None):
    check_kvcache_arguments(q, k_cache, v_cache, k_new, v_new, cache_seqlens, rotary_cos, rotary_sin,
                            rotary_interleaved, scale)
    return decode_attention_kvcache_composite(q, k_cache, v_cache, k_new, v_new, cache_seqlens, rotary_cos,
                                              rotary_sin, rotary_interleaved, scale)


torch.library.register_fake("apt::decode_attention_kvcache", _kvcache_fake)
register_kernel("decode_attention_kvcache", "cpu",
                "composite: apt_ext.attention._ops.decode_attention_kvcache_composite", _kvcache_cpu_kernel)
torch.library.register_kernel("apt::decode_attention_kvcache", None, _kvcache_other_devices)
