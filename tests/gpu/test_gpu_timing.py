"""apt_ext.triton.autotune.gpu_ms on CUDA, both L2 states: every timed call runs the function
(counted at capture), and the result is a positive, finite time per call.

Run:  python -m pytest tests/gpu/test_gpu_timing.py -q
"""
from __future__ import annotations

import math

import pytest
import torch

from apt_ext.triton import autotune


@pytest.mark.parametrize("cold_l2", [True, False])
def test_gpu_ms_times_each_call(cold_l2):
    x = torch.randn(1 << 22, device="cuda")
    out = torch.empty((), device="cuda")
    calls = []

    def fn():
        calls.append(1)
        torch.sum(x, dim=0, out=out)

    ms = autotune.gpu_ms(fn, x.device, cold_l2=cold_l2)
    # one warm-up call, then _GRAPH_CALLS captured per graph with fn (the flush-only graph has none)
    assert len(calls) == 1 + autotune._GRAPH_CALLS
    assert math.isfinite(ms) and 0.0 < ms < 100.0
    torch.testing.assert_close(out, x.sum(), rtol=1e-4, atol=1e-2)
