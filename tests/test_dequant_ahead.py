"""apt_ext.nn.dequant_ahead on the CPU: argument checks, the handle's lifetime, and that calls it
does not take (here: every CPU call) run FP4Linear as before. The managed CUDA calls are tested
in tests/gpu/test_dequant_ahead_gpu.py."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from apt_ext.nn import DequantAhead, FP4Linear, dequant_ahead


def _model() -> nn.Sequential:
    return nn.Sequential(FP4Linear(64, 48), nn.GELU(), FP4Linear(48, 32, fmt="nf4")).eval()


def test_rejects_bad_arguments():
    with pytest.raises(TypeError, match="model: expected an nn.Module"):
        dequant_ahead("not a model")
    for bad in (0, -3, 1.5, True, "8"):
        with pytest.raises(ValueError, match="min_rows: expected a positive int"):
            dequant_ahead(_model(), min_rows=bad)
    for bad in (0, -1, 2.0, False):
        with pytest.raises(ValueError, match="group_bytes: expected a positive int"):
            dequant_ahead(_model(), group_bytes=bad)
    with pytest.raises(ValueError, match="model: has no FP4Linear"):
        dequant_ahead(nn.Linear(4, 4))


def test_one_handle_per_layer_and_remove():
    model = _model()
    ahead = dequant_ahead(model)
    assert isinstance(ahead, DequantAhead) and all(m._ahead is ahead for m in model if isinstance(m, FP4Linear))
    with pytest.raises(ValueError, match="already managed by a dequant_ahead handle"):
        dequant_ahead(model)
    ahead.remove()
    ahead.remove()  # idempotent
    assert all(m._ahead is None for m in model if isinstance(m, FP4Linear))
    with dequant_ahead(model) as again:  # free again once removed
        assert again is not ahead
    assert all(m._ahead is None for m in model if isinstance(m, FP4Linear))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_calls_run_as_before(dtype):
    model = _model()
    x = torch.randn(5, 7, 64, dtype=dtype)
    with torch.no_grad():
        want = model(x)
        with dequant_ahead(model, min_rows=1) as ahead:
            got = model(x)
    assert torch.equal(got, want) and ahead.order == []


def test_bad_x_is_still_rejected_by_the_layer():
    model = _model()
    with dequant_ahead(model), pytest.raises(ValueError, match=r"x: expected \[\.\.\., 64\]"):
        model(torch.randn(3, 65))
