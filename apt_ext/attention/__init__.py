"""Attention for incremental decoding.

``decode_attention(q, k_cache, v_cache, length)`` (``torch.ops.apt.decode_attention``): one new
token per sequence attends over the first ``length`` positions of a static KV cache, grouped query
heads (GQA) included. On a GPU one Triton launch splits the keys over the multiprocessors
(flash-decoding) and reads each key and value once for all the query heads that share it; the
length is read on the device, so a CUDA graph captured once replays at every position. Elsewhere a
composite of torch ops computes the same.

``decode_attention_kvcache(q, k_cache, v_cache, k_new, v_new, cache_seqlens, rotary_cos, rotary_sin)``
(``torch.ops.apt.decode_attention_kvcache``): the same step with the cache update folded in, as
FlashAttention's ``flash_attn_with_kvcache``: q and the new key rotated (rotary embedding) at each
sequence's position, the new key and value written into the caches there, then the attention over
the positions up to it, in the same launch on a GPU.
"""
from apt_ext.attention._ops import decode_attention, decode_attention_kvcache

__all__ = ["decode_attention", "decode_attention_kvcache"]
