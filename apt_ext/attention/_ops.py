"""``apt::decode_attention``: its schema, checks, fake kernel and composite kernel (CPU, and any
device without the Triton kernel, apt_ext/triton/decode_attention.py).

Unlike the FP4 and left-spin ops (schemas in csrc/ops.cpp) this op has no native kernel, so its
schema is defined here, in the same ``apt`` namespace, when this module is imported. Like every
``torch.ops.apt`` op it needs the native extension loaded (the namespace is its library); without
it, importing this module raises the extension's load error.
"""
from __future__ import annotations

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


def _check_types(q, k_cache, v_cache, length, scale) -> None:
    """TypeError naming the argument: tensors where tensors go, a number or None for scale."""
    for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache), ("length", length)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))):
        raise TypeError(f"scale: expected a float or None, got {type(scale).__name__}")


def check_arguments(q, k_cache, v_cache, length, scale) -> None:
    """ValueError / TypeError naming the argument, for anything decode_attention does not take
    (every kernel of the op runs it, the fake one included, so a direct torch.ops call is checked
    too)."""
    _check_types(q, k_cache, v_cache, length, scale)
    if q.dim() != 3:
        raise ValueError(f"q: expected [B, H, D] (3 dims), got shape {tuple(q.shape)}")
    if q.dtype not in _DTYPES:
        raise TypeError(f"q: expected one of {_DTYPES}, got {q.dtype}")
    b, h, d = q.shape
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
        raise ValueError(f"length: expected an int32/int64 tensor of shape [{b}] or [1], got {length.dtype} "
                         f"shape {tuple(length.shape)}")
    if length.device != q.device:
        raise ValueError(f"length: expected q's device {q.device}, got {length.device}")


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
    if int(length.min()) < 1 or int(length.max()) > k_cache.shape[2]:
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
