"""Arrival counters for the Triton kernels whose programs count themselves done, the last to arrive
finishing the work and setting its counter back to zero: the split-K sum (split_k.store_tile) and
decode attention's merge (decode_attention.py).

Since every launch leaves its counters at zero, they are zeroed once, when made, not before each
launch:

- eager launches share one buffer per device and stream (launches on one stream run one after
  another; another stream gets its own buffer);
- a launch being captured into a CUDA graph gets counters of its own, never handed out again (a
  graph may be replayed on any stream, alongside eager launches and other graphs): a slice of the
  device's capture pool, made and zeroed by the device's first eager launch, so the graph holds no
  memset; without a pool (no eager launch before the capture) or once the pool is used up, fresh
  zeros (a memset node of the graph).

Zeroing per launch cost an eager split-K call about 10.5 us of host time
(benchmarks/results/fp4_triton_host_NVIDIA_H100_80GB_HBM3.json), and a graph-replayed decoder
step about 30 us of memsets, one per layer's decode attention (docs/fp4_gpu_notes.md, forty-third
session).
"""
from __future__ import annotations

import threading

import torch

MIN_COUNTERS = 1024     # counters in a stream's buffer at least
POOL_COUNTERS = 1 << 16  # counters in a device's capture pool (256 KB)

_STREAM: dict[tuple[torch.device, int], torch.Tensor] = {}  # (device, stream) -> int32 zeros
_POOL: dict[torch.device, list] = {}  # CUDA device -> [its int32 capture pool, the first free index]
_POOL_LOCK = threading.Lock()  # two threads capturing at once never get the same slice


def arrival_counters(n: int, device: torch.device) -> torch.Tensor:
    """int32 counters [>= n] on ``device``, all zero, for one launch on its current stream; the
    launch must leave them at zero (module docstring)."""
    if device.type == "cuda":
        if torch.cuda.is_current_stream_capturing():
            return _captured(n, device)
        if device not in _POOL:
            _POOL[device] = [torch.zeros(POOL_COUNTERS, dtype=torch.int32, device=device), 0]
        key = (device, torch._C._cuda_getCurrentRawStream(device.index))  # what Triton launches on
    elif device.type == "cpu":  # the interpreter runs launches one after another
        key = (device, 0)
    else:  # devices whose streams are not looked up here
        return torch.zeros(n, dtype=torch.int32, device=device)
    counters = _STREAM.get(key)
    if counters is None or counters.numel() < n:
        counters = _STREAM[key] = torch.zeros(max(n, MIN_COUNTERS), dtype=torch.int32, device=device)
    return counters


def _captured(n: int, device: torch.device) -> torch.Tensor:
    """Counters [n] of a launch being captured: the next free slice of ``device``'s capture pool,
    or fresh zeros where it has none left."""
    with _POOL_LOCK:
        pool = _POOL.get(device)
        if pool is not None and pool[1] + n <= pool[0].numel():
            start = pool[1]
            pool[1] = start + n
            return pool[0][start:start + n]
    return torch.zeros(n, dtype=torch.int32, device=device)
