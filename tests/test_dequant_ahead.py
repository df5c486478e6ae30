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


def test_copies_of_a_managed_model_are_not_managed():
    import copy

    model = _model()
    x = torch.randn(4, 64)
    with dequant_ahead(model):
        for clone in (copy.deepcopy(model), torch.load(_saved(model), weights_only=False)):
            fp4 = [m for m in clone if isinstance(m, FP4Linear)]
            assert fp4 and all(m._ahead is None for m in fp4)
            with torch.no_grad():
                assert torch.equal(clone(x), model(x))
        assert all(m._ahead is not None for m in model if isinstance(m, FP4Linear))


def _saved(model: nn.Module):
    import io

    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    return buf


def test_bad_x_is_still_rejected_by_the_layer():
    model = _model()
    with dequant_ahead(model), pytest.raises(ValueError, match=r"x: expected \[\.\.\., 64\]"):
        model(torch.randn(3, 65))


# --------------------------------------------------------------------------------------------
# The handle's bookkeeping on the CPU: CUDA's streams and events replaced by no-ops, calls on
# float32 CPU x taken, the banks filled by the Triton kernel under TRITON_INTERPRET=1 (set before
# triton is imported, so in a child process). Checks that every managed call multiplies by the
# right weight whatever the order, the group size and the weights' changes.
# --------------------------------------------------------------------------------------------
_CHILD = r'''
import contextlib, os, sys
os.environ["TRITON_INTERPRET"] = "1"
import torch
from torch import nn
from apt_ext.nn import FP4Linear, dequant_ahead
da = sys.modules["apt_ext.nn.dequant_ahead"]  # the module (the package exports its function by the same name)


class _Stream:
    def __init__(self, *a, **k): pass
    def wait_stream(self, other): pass
    def wait_event(self, event): pass


class _Event:
    def record(self, stream=None): pass


torch.cuda.current_stream = lambda device=None: _Stream()
torch.cuda.Stream, torch.cuda.Event = _Stream, _Event
torch.cuda.stream = lambda s: contextlib.nullcontext()
torch.cuda.is_current_stream_capturing = lambda: False
da.DequantAhead.takes = lambda self, layer, x: not torch.is_grad_enabled() and x.shape[-1] == layer.in_features
da.DequantAhead._retire = staticmethod(lambda state, current: None)
torch.manual_seed(int(sys.argv[1]))


def want(layer, x):
    w = layer.weight.dequantize(torch.float32)[:, :layer.in_features]
    return torch.nn.functional.linear(x, w, layer.bias)


def check(layer, x):
    got, ref = layer(x), want(layer, x)
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-5), (layer, float((got - ref).abs().max()))


fmts = ["nvfp4", "nf4", "mxfp4", "nvfp4", "nf4"]
layers = [FP4Linear(128, 128, fmt=f, bias=i % 2 == 0) for i, f in enumerate(fmts)]
model = nn.ModuleList(layers).eval()
x = torch.randn(7, 128)
one = 128 * 128 * 2  # bytes of one dequantised weight (bf16 sizes: the handle's unit)
with torch.no_grad():
    for group_layers in (1, 2, 5):
        with dequant_ahead(model, min_rows=1, group_bytes=group_layers * one) as ahead:
            for _ in range(3):
                for layer in layers:
                    check(layer, x)
            assert ahead.order == layers
            assert ahead._members == [list(range(i, min(i + group_layers, 5))) for i in range(0, 5, group_layers)]
            for i in (4, 0, 1, 3, 2, 2, 0, 4, 1, 3):
                check(layers[i], x)
            other = nn.ModuleList(FP4Linear(128, 128, fmt=f, bias=i % 2 == 0) for i, f in enumerate(fmts))
            model.load_state_dict(other.state_dict())  # in place: the banks must not keep the old weights
            for layer in layers:
                check(layer, x)
            layers[2].packed = layers[2].packed.clone()  # a new tensor
            layers[2].packed[0, 0] ^= 0x11
            for layer in layers:
                check(layer, x)
        assert all(layer._ahead is None for layer in layers)
print("ok")
'''


def test_bookkeeping_on_the_cpu(tmp_path, apt_seed):
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(script), str(apt_seed)], capture_output=True, text=True, timeout=600,
                       cwd=root, env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout[-2000:] + r.stderr[-4000:]
