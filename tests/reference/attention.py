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
