"""Reference of apt::decode_attention: each query head's softmax over the first ``length`` keys of
its key head (head i reads key head i // (H / KV)), in float64."""
from __future__ import annotations

import torch


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, length: torch.Tensor,
                     scale: float | None = None) -> torch.Tensor:
    """q [B, H, D], caches [B, KV, T, D], length [B] or [1]: float64 [B, H, D], one row at a time."""
    b, h, d = q.shape
    kv = k_cache.shape[1]
    lengths = length.expand(b).tolist()
    out = torch.zeros(b, h, d, dtype=torch.float64)
    for i in range(b):
        for j in range(h):
            n = lengths[i]
            k = k_cache[i, j // (h // kv), :n].double()
            v = v_cache[i, j // (h // kv), :n].double()
            w = torch.softmax(k @ q[i, j].double() * (d ** -0.5 if scale is None else scale), 0)
            out[i, j] = w @ v
    return out


def make_inputs(b: int, h: int, kv: int, t: int, d: int, dtype: torch.dtype, device: str,
                rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fresh random q [B, H, D] and caches [B, KV, T, D] (scores of order one)."""
    q = torch.randn(b, h, d, generator=rng).to(device, dtype)
    k = torch.randn(b, kv, t, d, generator=rng).to(device, dtype)
    v = torch.randn(b, kv, t, d, generator=rng).to(device, dtype)
    return q, k, v


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """x [..., D] rotated by angle theta (cos, sin [R / 2]) as complex numbers, in float64: pair j is
    (x[2j], x[2j + 1]) when interleaved, else (x[j], x[j + R / 2]); values past R unchanged."""
    r = 2 * cos.shape[-1]
    x = x.double()
    re, im = (x[..., 0:r:2], x[..., 1:r:2]) if interleaved else (x[..., :r // 2], x[..., r // 2:r])
    z = torch.complex(re, im) * torch.complex(cos.double(), sin.double())
    y = x.clone()
    if interleaved:
        y[..., 0:r:2], y[..., 1:r:2] = z.real, z.imag
    else:
        y[..., :r // 2], y[..., r // 2:r] = z.real, z.imag
    return y


def decode_attention_kvcache(q, k_cache, v_cache, k_new, v_new, cache_seqlens, cos=None, sin=None,
                             interleaved=False, scale=None):
    """apt::decode_attention_kvcache in float64: (output [B, H, D], updated k_cache, v_cache), the
    caches cloned (the inputs left as they are); the rotated q and key rounded to q's dtype first."""
    b = q.shape[0]
    k_cache, v_cache = k_cache.clone(), v_cache.clone()
    pos = cache_seqlens.expand(b).tolist()
    q = q.clone()
    for i, p in enumerate(pos):
        kn = k_new[i]
        if cos is not None:
            q[i] = rotate(q[i], cos[p], sin[p], interleaved).to(q.dtype)
            kn = rotate(kn, cos[p], sin[p], interleaved).to(q.dtype)
        k_cache[i, :, p] = kn
        v_cache[i, :, p] = v_new[i]
    return decode_attention(q, k_cache, v_cache, torch.tensor([p + 1 for p in pos]), scale), k_cache, v_cache
