"""apt_ext.nn.dequant_ahead on CUDA: managed FP4Linear calls against the dequantised reference
(fresh random weights and x), the learnt order, calls out of order and a layer called twice, the
calls it must leave alone, a CUDA-graph capture, and that the prefetch runs on another stream.

Run:  python -m pytest tests/gpu/test_dequant_ahead_gpu.py -q
"""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from apt_ext.nn import FP4Linear, dequant_ahead
from fp4_helpers import assert_cuda_graph_replay_matches_eager

DEV = "cuda"


def _stack(widths: list[int], fmt: str = "nvfp4", bias: bool = True) -> nn.Sequential:
    layers = [FP4Linear(a, b, bias=bias, fmt=fmt, device=DEV) for a, b in zip(widths, widths[1:])]
    return nn.Sequential(*layers).eval()


def _reference(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """float32 x @ dequantised W.T + b through the stack, rounded to x's dtype after each layer
    (as the managed calls round)."""
    h = x
    for layer in model:
        w = layer.weight.dequantize(torch.float32)[:, :layer.in_features]
        y = h.float() @ w.T
        if layer.bias is not None:
            y = y + layer.bias.float()
        h = y.to(x.dtype)
    return h


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4", "nf4"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_managed_calls_match_reference(fmt, dtype):
    model = _stack([200, 96, 333, 64], fmt)  # K not a multiple of the block, odd N
    x = torch.randn(3, 50, 200, device=DEV, dtype=dtype)
    with torch.no_grad(), dequant_ahead(model, min_rows=1) as ahead:
        first = model(x)  # learns the order, dequantises on the current stream
        assert ahead.order == list(model)
        second = model(x)  # prefetched along the order
        torch.cuda.synchronize()
    ref = _reference(model, x)
    for y in (first, second):
        assert y.dtype == dtype and y.shape == (3, 50, 64)
        err = ((y.float() - ref.float()).norm() / ref.float().norm()).item()
        assert err < 2e-2, err
    assert torch.equal(first, second)


def test_out_of_order_and_repeated_calls_stay_right():
    a, b, c = (FP4Linear(128, 128, device=DEV).eval() for _ in range(3))
    model = nn.ModuleList([a, b, c])
    x = torch.randn(64, 128, device=DEV, dtype=torch.bfloat16)
    with torch.no_grad():
        plain = [layer(x) for layer in (a, b, c, b, a)]
        with dequant_ahead(model, min_rows=1) as ahead:
            for _ in range(2):
                for layer in (a, b, c):
                    layer(x)
            # a different order than the one learnt, with b twice: each result is still b's / a's
            got = [layer(x) for layer in (c, b, b, a, c)]
            assert ahead.order == [a, b, c]
    torch.cuda.synchronize()
    want = {id(a): plain[0], id(b): plain[1], id(c): plain[2]}
    for layer, y in zip((c, b, b, a, c), got):
        err = ((y.float() - want[id(layer)].float()).norm() / want[id(layer)].float().norm()).item()
        assert err < 1e-2, err


def test_calls_it_leaves_alone():
    model = _stack([256, 256, 256])
    x = torch.randn(8, 256, device=DEV, dtype=torch.bfloat16)
    with dequant_ahead(model, min_rows=16) as ahead:
        with torch.no_grad():
            model(x)  # 8 rows < min_rows
            model(x.float())  # float32 x
        x_grad = torch.randn(32, 256, device=DEV, dtype=torch.bfloat16, requires_grad=True)
        y = model(x_grad)  # a gradient is needed: the buffers could not be saved for it
        y.float().sum().backward()
        assert x_grad.grad is not None and ahead.order == []
        with torch.no_grad():
            model(torch.randn(32, 256, device=DEV, dtype=torch.bfloat16))
        assert len(ahead.order) == 2
    assert all(layer._ahead is None for layer in model)


def test_cuda_graph_capture_of_managed_calls():
    model = _stack([384, 768, 384, 384])
    static_x = torch.randn(256, 384, device=DEV, dtype=torch.bfloat16)
    with dequant_ahead(model) as ahead:  # default min_rows: 256 rows take it
        assert_cuda_graph_replay_matches_eager(model, static_x)
        assert ahead.order == list(model)


def test_prefetch_runs_on_a_side_stream(tmp_path):
    model = _stack([512] * 5)
    x = torch.randn(512, 512, device=DEV, dtype=torch.bfloat16)
    one_layer = 512 * 512 * 2  # bytes of one dequantised weight: one layer per group
    with torch.no_grad(), dequant_ahead(model, min_rows=1, group_bytes=one_layer) as ahead:
        model(x)
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            y = model(x)
            torch.cuda.synchronize()
        assert ahead._members == [[0], [1], [2], [3]]
    trace = tmp_path / "trace.json"
    prof.export_chrome_trace(str(trace))
    kernels = [e for e in json.loads(trace.read_text())["traceEvents"] if e.get("cat") == "kernel"]
    deq = [e["args"]["stream"] for e in kernels if "dequantize" in e["name"]]
    others = {e["args"]["stream"] for e in kernels if "dequantize" not in e["name"]}
    # the second forward: group 0 dequantised on the current stream (with the GEMMs; its bank held
    # group 2), groups 1-3 prefetched on the side stream
    assert len(deq) == 4 and len(others) == 1
    assert sum(s in others for s in deq) == 1 and len(set(deq) - others) == 1
    ref = _reference(model, x)
    assert ((y.float() - ref.float()).norm() / ref.float().norm()).item() < 2e-2


def test_groups_that_fit_the_banks_are_dequantised_once():
    model = _stack([256, 256, 256])
    x = torch.randn(200, 256, device=DEV, dtype=torch.bfloat16)
    with torch.no_grad(), dequant_ahead(model) as ahead:  # one 8 MiB group holds both layers
        first = model(x)
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            second = model(x)
            torch.cuda.synchronize()
        assert ahead._members == [[0, 1]]
    assert not any("dequantize" in e.name for e in prof.events())
    assert torch.equal(first, second)


@pytest.mark.parametrize("group_layers", [1, 2, 3])
def test_small_groups_out_of_order(group_layers):
    layers = [FP4Linear(128, 128, device=DEV).eval() for _ in range(5)]
    model = nn.ModuleList(layers)
    x = torch.randn(64, 128, device=DEV, dtype=torch.bfloat16)
    with torch.no_grad():
        want = [layer(x) for layer in layers]
        with dequant_ahead(model, min_rows=1, group_bytes=group_layers * 128 * 128 * 2):
            for _ in range(2):
                for layer in layers:
                    layer(x)
            calls = [4, 0, 1, 3, 2, 2, 0, 4, 1, 3, 0, 1, 2, 3, 4]
            got = [layers[i](x) for i in calls]
    torch.cuda.synchronize()
    for i, y in zip(calls, got):
        err = ((y.float() - want[i].float()).norm() / want[i].float().norm()).item()
        assert err < 1e-2, (i, err)


@pytest.mark.parametrize("group_layers", [1, 3])  # groups refilled every forward / kept in their banks
def test_new_weights_reach_the_banks(group_layers):
    model = _stack([256, 256, 256, 256])
    x = torch.randn(200, 256, device=DEV, dtype=torch.bfloat16)
    other = _stack([256, 256, 256, 256])
    with torch.no_grad(), dequant_ahead(model, min_rows=1, group_bytes=group_layers * 256 * 256 * 2):
        for _ in range(3):
            model(x)
        model.load_state_dict(other.state_dict())  # new tensors: the groups' tables must follow
        got = model(x)
        again = model(x)
    torch.cuda.synchronize()
    ref = _reference(other, x)
    for y in (got, again):
        assert ((y.float() - ref.float()).norm() / ref.float().norm()).item() < 2e-2
