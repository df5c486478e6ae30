"""apt_ext/triton/arrival_counters.py on the CPU: one zeroed buffer per stream for eager launches,
grown on demand; captured launches' counters as disjoint slices of the device's pool, fresh zeros
once it is used up. (The kernels' use of them, and a real CUDA-graph capture: the Triton tests
under the interpreter, tests/gpu/test_fp4_cuda.py and tests/gpu/test_decode_attention_cuda.py.)"""
from __future__ import annotations

import torch

from apt_ext.triton import arrival_counters as ac

CPU = torch.device("cpu")


def test_eager_launches_share_the_streams_buffer(monkeypatch):
    monkeypatch.setattr(ac, "_STREAM", {})
    monkeypatch.setattr(ac, "MIN_COUNTERS", 8)
    first = ac.arrival_counters(3, CPU)
    assert first.dtype == torch.int32 and first.numel() == 8 and not first.any()
    assert ac.arrival_counters(8, CPU) is first
    bigger = ac.arrival_counters(9, CPU)
    assert bigger is not first and bigger.numel() == 9 and not bigger.any()
    assert ac.arrival_counters(2, CPU) is bigger


def test_captured_launches_take_their_own_slices_of_the_pool(monkeypatch):
    pool = torch.zeros(10, dtype=torch.int32)
    monkeypatch.setattr(ac, "_POOL", {CPU: [pool, 0]})
    a, b = ac._captured(4, CPU), ac._captured(6, CPU)
    assert a.data_ptr() == pool.data_ptr() and b.data_ptr() == pool[4:].data_ptr() and b.numel() == 6
    c = ac._captured(1, CPU)  # the pool is used up: fresh zeros
    assert c.numel() == 1 and not c.any() and not (pool.data_ptr() <= c.data_ptr() < pool[10:].data_ptr())
    monkeypatch.setattr(ac, "_POOL", {})  # no eager launch made a pool: fresh zeros
    d = ac._captured(5, CPU)
    assert d.numel() == 5 and not d.any()
