"""Attention for incremental decoding.

``decode_attention(q, k_cache, v_cache, length)`` (``torch.ops.apt.decode_attention``): one new
token per sequence attends over the first ``length`` positions of a static KV cache, grouped query
heads (GQA) included. On a GPU one Triton launch splits the keys over the multiprocessors
(flash-decoding) and reads each key and value once for all the query heads that share it; the
length is read on the device, so a CUDA graph captured once replays at every position. Elsewhere a
composite of torch ops computes the same.
"""
from apt_ext.attention._ops import decode_attention

__all__ = ["decode_attention"]
