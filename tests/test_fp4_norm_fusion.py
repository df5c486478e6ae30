"""The tiled ops' RMSNorm prologue (rms_eps, rms_sumsq) and residual epilogue (and
fp4_linear_tiled_sumsq's sums of squares) on the CPU, and apt_ext.nn's norm fusion (fold_rms_norm_,
rms_norm_linear, rms_norm_swiglu, linear_residual): against float64
references and the plain composites; the fused path's Python plumbing run on the CPU kernel. The
CUDA GEMV's fused prologue and epilogue are tested in tests/gpu/test_fp4_gemv_cuda.py."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import apt_ext  # noqa: F401
from apt_ext.fp4 import quantize
from apt_ext.fp4.tiled import sumsq_parts, tile
from apt_ext.nn import FP4Linear, fold_rms_norm_, linear_residual, quantize_, rms_norm_linear, rms_norm_swiglu, swiglu
from reference import fp4 as ref

FORMATS = ("nvfp4", "mxfp4", "nf4")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).norm() / b.detach().double().norm())


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dt", [torch.float32, torch.bfloat16])
def test_linear_tiled_rms_eps_and_residual_match_reference(fmt, dt, rng):
    q = quantize(torch.randn(37, 200, generator=rng) * 0.1, fmt)
    x = (torch.randn(2, 3, 200, generator=rng) * 3.0).to(dt)
    bias = torch.randn(37, generator=rng)
    residual = torch.randn(2, 3, 37, generator=rng).to(dt)
    t = tile(q)
    base = ref.linear(ref.rms_normalized(x, 1e-5), q.packed, q.scales, q.tensor_scale, bias, fmt, q.block_size)
    tol = 1e-5 if dt == torch.float32 else 1e-2
    y = t.linear(x, bias, rms_eps=1e-5)
    assert y.dtype == dt and y.shape == (2, 3, 37) and _rel(y, base) < tol
    y = t.linear(x, bias, rms_eps=1e-5, residual=residual)
    assert _rel(y, base + residual.double()) < tol
    y = t.linear(x, bias, gelu=True, residual=residual)
    plain = ref.linear(x.double(), q.packed, q.scales, q.tensor_scale, bias, fmt, q.block_size)
    assert _rel(y, F.gelu(plain) + residual.double()) < tol
    # the norm is over the logical K only (the layout pads K to 256 columns with zeros)
    assert not torch.allclose(t.linear(x, bias, rms_eps=1e-5), t.linear(x, bias))


@pytest.mark.parametrize("fmt", FORMATS)
def test_swiglu_tiled_rms_eps_matches_reference(fmt, rng):
    q = quantize(torch.randn(48, 130, generator=rng) * 0.1, fmt)
    x = torch.randn(5, 130, generator=rng) * 2.0
    bias = torch.randn(48, generator=rng)
    y = tile(q, swiglu=True).swiglu_linear(x, bias, rms_eps=1e-6)
    gate, up = ref.linear(ref.rms_normalized(x, 1e-6), q.packed, q.scales, q.tensor_scale, bias, fmt,
                          q.block_size).chunk(2, -1)
    assert y.shape == (5, 24) and _rel(y, F.silu(gate) * up) < 1e-5


def test_tiled_ops_refuse_bad_rms_eps_and_residual(rng):
    t = tile(quantize(torch.randn(20, 100, generator=rng), "nvfp4"))
    x = torch.randn(2, 100, generator=rng)
    args = (t.tiles, t.tile_scales, t.out_scale, None, "nvfp4", 20, 100, False)
    for eps in (-1e-5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="rms_eps"):
            torch.ops.apt.fp4_linear_tiled(x, *args, eps)
    with pytest.raises(ValueError, match="residual: expected shape"):
        torch.ops.apt.fp4_linear_tiled(x, *args, None, torch.randn(2, 19))
    with pytest.raises(TypeError, match="residual: expected x's dtype"):
        torch.ops.apt.fp4_linear_tiled(x, *args, None, torch.randn(2, 20, dtype=torch.float64))
    s = tile(quantize(torch.randn(32, 100, generator=rng), "nvfp4"), swiglu=True)
    with pytest.raises(ValueError, match="rms_eps"):
        torch.ops.apt.fp4_linear_tiled_swiglu(x, s.tiles, s.tile_scales, s.out_scale, None, "nvfp4", 32, 100, -1.0)


def _sumsq_by_groups(y: torch.Tensor) -> torch.Tensor:
    """float64 sums of y's squares over features 0..15, 16..31, ... (the last group shorter)."""
    yd = y.double()
    return torch.stack([yd[..., j:j + 16].square().sum(-1) for j in range(0, y.shape[-1], 16)], -1)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dt", [torch.float32, torch.bfloat16])
def test_linear_tiled_sumsq_returns_the_outputs_sums_of_squares(fmt, dt, rng):
    """fp4_linear_tiled_sumsq: fp4_linear_tiled's output, and float32 [..., ceil(n / 16)] sums of
    its squares (as stored) over each 16 features (n = 37: the last group has 5)."""
    q = quantize(torch.randn(37, 200, generator=rng) * 0.1, fmt)
    x = (torch.randn(2, 3, 200, generator=rng) * 3.0).to(dt)
    bias = torch.randn(37, generator=rng)
    residual = torch.randn(2, 3, 37, generator=rng).to(dt)
    t = tile(q)
    y, sq = torch.ops.apt.fp4_linear_tiled_sumsq(x, t.tiles, t.tile_scales, t.out_scale, bias, fmt, 37, 200, False,
                                                 1e-5, residual)
    assert torch.equal(y, t.linear(x, bias, rms_eps=1e-5, residual=residual))
    assert sq.dtype == torch.float32 and sq.shape == (2, 3, 3)
    torch.testing.assert_close(sq.double(), _sumsq_by_groups(y), rtol=1e-6, atol=0)
    y2, sq2 = t.linear(x, bias, gelu=True, return_sumsq=True)
    assert torch.equal(y2, t.linear(x, bias, gelu=True)) and torch.equal(sq2, sumsq_parts(y2))
    # a copy in the SwiGLU order returns its output in the weight's order, and the sums of that
    w = tile(quantize(torch.randn(48, 200, generator=rng) * 0.1, fmt), swiglu=True)
    y3, sq3 = w.linear(x, residual=torch.randn(2, 3, 48, generator=rng).to(dt), return_sumsq=True)
    torch.testing.assert_close(sq3.double(), _sumsq_by_groups(y3), rtol=1e-6, atol=0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_rms_sumsq_stands_for_the_sums_of_x(fmt, rng):
    """rms_sumsq: the norm takes each row's sum of its parts (any number of parts) instead of
    summing x's squares: the same result as rms_eps alone, and a different one for other sums."""
    q = quantize(torch.randn(48, 200, generator=rng) * 0.1, fmt)
    x = torch.randn(2, 3, 200, generator=rng) * 3.0
    bias = torch.randn(48, generator=rng)
    t, s = tile(q), tile(q, swiglu=True)
    want, want_swiglu = t.linear(x, bias, rms_eps=1e-5), s.swiglu_linear(x, bias, rms_eps=1e-5)
    for parts in (sumsq_parts(x), x.square().sum(-1, keepdim=True)):
        assert _rel(t.linear(x, bias, rms_eps=1e-5, rms_sumsq=parts), want) < 1e-5
        assert _rel(s.swiglu_linear(x, bias, rms_eps=1e-5, rms_sumsq=parts), want_swiglu) < 1e-5
        assert _rel(s.linear(x, bias, rms_eps=1e-5, rms_sumsq=parts), want) < 1e-5
    # the sums of 2x's squares: x normalised by twice its RMS, half the product
    half = t.linear(x, rms_eps=1e-5, rms_sumsq=sumsq_parts(2 * x))
    assert _rel(half, 0.5 * t.linear(x, rms_eps=1e-5)) < 1e-5


def test_tiled_ops_refuse_bad_rms_sumsq(rng):
    t = tile(quantize(torch.randn(20, 100, generator=rng), "nvfp4"))
    x = torch.randn(2, 100, generator=rng)
    args = (t.tiles, t.tile_scales, t.out_scale, None, "nvfp4", 20, 100, False)
    with pytest.raises(ValueError, match="rms_sumsq: taken only with rms_eps"):
        torch.ops.apt.fp4_linear_tiled(x, *args, None, None, torch.ones(2, 7))
    with pytest.raises(TypeError, match="rms_sumsq: expected float32"):
        torch.ops.apt.fp4_linear_tiled_sumsq(x, *args, 1e-5, None, torch.ones(2, 7, dtype=torch.float64))
    for bad in (torch.ones(3, 7), torch.ones(2, 0), torch.ones(7), torch.ones(2, 1, 7)):
        with pytest.raises(ValueError, match="rms_sumsq: expected"):
            torch.ops.apt.fp4_linear_tiled(x, *args, 1e-5, None, bad)
    s = tile(quantize(torch.randn(32, 100, generator=rng), "nvfp4"), swiglu=True)
    with pytest.raises(ValueError, match="rms_sumsq: expected"):
        torch.ops.apt.fp4_linear_tiled_swiglu(x, s.tiles, s.tile_scales, s.out_scale, None, "nvfp4", 32, 100, 1e-5,
                                              torch.ones(3, 4))
    with pytest.raises(TypeError, match="return_sumsq"):
        t.linear(x, return_sumsq=1)


@pytest.mark.parametrize("fmt", FORMATS)
def test_opcheck_tiled_ops_with_norm_and_residual(fmt, rng):
    t = tile(quantize(torch.randn(20, 100, generator=rng), fmt))
    x = torch.randn(3, 100, generator=rng)
    torch.library.opcheck(torch.ops.apt.fp4_linear_tiled.default,
                          (x, t.tiles, t.tile_scales, t.out_scale, torch.randn(20), fmt, 20, 100, True, 1e-5,
                           torch.randn(3, 20, generator=rng)))
    s = tile(quantize(torch.randn(32, 100, generator=rng), fmt), swiglu=True)
    torch.library.opcheck(torch.ops.apt.fp4_linear_tiled_swiglu.default,
                          (x, s.tiles, s.tile_scales, s.out_scale, None, fmt, 32, 100, 1e-5))
    parts = sumsq_parts(x)
    torch.library.opcheck(torch.ops.apt.fp4_linear_tiled_swiglu.default,
                          (x, s.tiles, s.tile_scales, s.out_scale, None, fmt, 32, 100, 1e-5, parts))
    torch.library.opcheck(torch.ops.apt.fp4_linear_tiled.default,
                          (x, t.tiles, t.tile_scales, t.out_scale, None, fmt, 20, 100, False, 1e-5, None, parts))
    torch.library.opcheck(torch.ops.apt.fp4_linear_tiled_sumsq.default,
                          (x, t.tiles, t.tile_scales, t.out_scale, torch.randn(20), fmt, 20, 100, True, 1e-5,
                           torch.randn(3, 20, generator=rng), parts))


def _norm(d: int, rng: torch.Generator, eps: float | None = 1e-5) -> nn.RMSNorm:
    norm = nn.RMSNorm(d, eps=eps)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(d, generator=rng) * 2 + 0.1)
    return norm


def test_fold_rms_norm_keeps_the_function(rng):
    torch.manual_seed(0)
    norm, a, b = _norm(64, rng), nn.Linear(64, 32), nn.Linear(64, 16, bias=False)
    x = torch.randn(4, 64, generator=rng)
    want_a, want_b = a(norm(x)), b(norm(x))
    assert fold_rms_norm_(norm, a, b) is norm
    assert norm.weight is None and "weight" not in norm.state_dict()
    assert torch.allclose(a(norm(x)), want_a, atol=1e-5) and torch.allclose(b(norm(x)), want_b, atol=1e-5)
    fold_rms_norm_(norm, a)  # nothing left to fold: unchanged
    assert torch.allclose(a(norm(x)), want_a, atol=1e-5)


def test_fold_rms_norm_refuses_bad_input(rng):
    norm, lin = _norm(64, rng), nn.Linear(64, 32)
    with pytest.raises(TypeError, match="norm: expected an nn.RMSNorm"):
        fold_rms_norm_(nn.LayerNorm(64), lin)
    with pytest.raises(ValueError, match="linears: expected at least one"):
        fold_rms_norm_(norm)
    with pytest.raises(ValueError, match=r"linears\[0\]: in_features 32"):
        fold_rms_norm_(norm, nn.Linear(32, 8))
    with pytest.raises(ValueError, match=r"linears\[1\]: the same layer"):
        fold_rms_norm_(norm, lin, lin)
    with pytest.raises(TypeError, match=r"linears\[0\]: is an FP4Linear"):
        fold_rms_norm_(norm, FP4Linear.from_linear(lin))
    with pytest.raises(TypeError, match=r"linears\[0\]: expected an nn.Linear"):
        fold_rms_norm_(norm, nn.Identity())
    with pytest.raises(ValueError, match="one dimension"):
        fold_rms_norm_(nn.RMSNorm((4, 16)), nn.Linear(16, 4))
    with torch.inference_mode():
        frozen = nn.Linear(64, 32)
    before = lin.weight.detach().clone()
    with pytest.raises(ValueError, match=r"linears\[1\]: its weight is an inference tensor"):
        fold_rms_norm_(norm, lin, frozen)  # (was: lin scaled, then the write into frozen failed)
    assert torch.equal(lin.weight, before)
    assert norm.weight is not None  # nothing was changed by the refusals


def _block(rng: torch.Generator, fold: bool, eps: float | None = 1e-5) -> nn.ModuleDict:
    """A pre-norm residual block's pieces: norm -> qkv, o (residual), norm -> gate_up -> down (residual)."""
    torch.manual_seed(1)
    m = nn.ModuleDict({"n1": _norm(64, rng, eps), "qkv": nn.Linear(64, 64), "o": nn.Linear(64, 64),
                       "n2": _norm(64, rng, eps), "gate_up": nn.Linear(64, 96), "down": nn.Linear(48, 64)})
    if fold:
        fold_rms_norm_(m["n1"], m["qkv"])
        fold_rms_norm_(m["n2"], m["gate_up"])
    return m


def _run_helpers(m: nn.ModuleDict, x: torch.Tensor) -> torch.Tensor:
    x = linear_residual(m["o"], rms_norm_linear(m["n1"], m["qkv"], x), x)
    return linear_residual(m["down"], rms_norm_swiglu(m["n2"], m["gate_up"], x), x)


def _run_helpers_handoff(m: nn.ModuleDict, x: torch.Tensor) -> torch.Tensor:
    """_run_helpers with the norm after the first residual add taking that add's sums of squares."""
    x, x_sumsq = linear_residual(m["o"], rms_norm_linear(m["n1"], m["qkv"], x), x, return_sumsq=True)
    y, y_sumsq = linear_residual(m["down"], rms_norm_swiglu(m["n2"], m["gate_up"], x, x_sumsq), x,
                                 return_sumsq=True)
    assert torch.equal(y_sumsq, sumsq_parts(y))
    return y


def _run_composite(m: nn.ModuleDict, x: torch.Tensor) -> torch.Tensor:
    x = x + m["o"](m["qkv"](m["n1"](x)))
    return x + m["down"](swiglu(m["gate_up"], m["n2"](x)))


@pytest.mark.parametrize("eps", [1e-5, None])
def test_helpers_are_the_composites(rng, eps):
    """Float modules, and FP4Linear off the tiled path (the CPU): each helper is the plain composite."""
    x = torch.randn(3, 64, generator=rng)
    for fold in (False, True):
        m = _block(rng, fold, eps)
        assert torch.equal(_run_helpers(m, x), _run_composite(m, x))
        assert torch.equal(_run_helpers_handoff(m, x), _run_composite(m, x))
        quantize_(m, fmt="nvfp4")
        assert torch.equal(_run_helpers(m, x), _run_composite(m, x))
        assert _rel(_run_helpers_handoff(m, x), _run_composite(m, x)) < 1e-5


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("eps", [1e-5, None])
def test_fused_path_plumbing_on_the_cpu_kernel(fmt, eps, rng, monkeypatch):
    """With the tiled path forced (the CPU kernel of the tiled ops stands in for the GEMV), the
    helpers route a folded FP4 block through FP4Linear.fused / swiglu with the norm's eps and the
    residual, and give the composite's result (the fused norm is not rounded in between)."""
    m = _block(rng, True, eps)
    x = torch.randn(2, 3, 64, generator=rng)
    want = _run_composite(m, x)
    quantize_(m, fmt=fmt)
    composite = _run_composite(m, x)
    calls = []
    real = torch.ops.apt.fp4_linear_tiled
    monkeypatch.setattr(FP4Linear, "_takes_tiled_path", lambda self, x: True)
    monkeypatch.setattr(torch.ops.apt, "fp4_linear_tiled",
                        lambda *a: calls.append(a[9:]) or real(*a), raising=False)
    with torch.no_grad():  # (inference: the tiled path takes no gradients)
        got = _run_helpers(m, x)
    assert _rel(got, composite) < 1e-5 and _rel(got, want) < 0.2
    want_eps = eps if eps is not None else torch.finfo(torch.float32).eps
    assert [(c[0], c[1] is not None) for c in calls] == [(want_eps, False), (None, True), (None, True)]
    # the norm handoff: o and down through fp4_linear_tiled_sumsq, gate_up's norm takes o's sums
    sumsq_calls, swiglu_calls = [], []
    real_sumsq, real_swiglu = torch.ops.apt.fp4_linear_tiled_sumsq, torch.ops.apt.fp4_linear_tiled_swiglu
    monkeypatch.setattr(torch.ops.apt, "fp4_linear_tiled_sumsq",
                        lambda *a: sumsq_calls.append(a[10:]) or real_sumsq(*a), raising=False)
    monkeypatch.setattr(torch.ops.apt, "fp4_linear_tiled_swiglu",
                        lambda *a: swiglu_calls.append(a[8:]) or real_swiglu(*a), raising=False)
    with torch.no_grad():
        got = _run_helpers_handoff(m, x)
    assert _rel(got, composite) < 1e-5
    assert [(c[0] is not None, c[1]) for c in sumsq_calls] == [(True, None), (True, None)]
    assert len(swiglu_calls) == 1 and swiglu_calls[0][0] == want_eps and swiglu_calls[0][1].shape == (2, 3, 4)


def test_fused_refuses_bad_input(rng):
    layer = FP4Linear.from_linear(nn.Linear(64, 32))
    x = torch.randn(3, 64, generator=rng)
    with pytest.raises(ValueError, match="rms_eps"):
        layer.fused(x, rms_eps=-1.0)
    with pytest.raises(ValueError, match="rms_eps"):
        layer.swiglu(x, rms_eps=float("nan"))
    with pytest.raises(ValueError, match="residual: expected"):
        layer.fused(x, residual=torch.randn(3, 31))
    with pytest.raises(ValueError, match="residual: expected"):
        layer.fused(x, residual=torch.randn(3, 32, dtype=torch.float64))
    with pytest.raises(ValueError, match="x: expected"):
        layer.fused(torch.randn(3, 63))
    with pytest.raises(TypeError, match="norm"):
        rms_norm_linear(lambda t: t, layer, x)
    with pytest.raises(TypeError, match="linear"):
        rms_norm_linear(nn.Identity(), lambda t: t, x)
    with pytest.raises(TypeError, match="residual"):
        linear_residual(nn.Linear(64, 32), x, 1.0)
    with pytest.raises(ValueError, match="rms_sumsq: taken only with rms_eps"):
        layer.fused(x, rms_sumsq=torch.ones(3, 4))
    for bad in (torch.ones(3, 4, dtype=torch.float64), torch.ones(2, 4), torch.ones(3, 0), [1.0],
                torch.ones(3, 4, device="meta")):
        with pytest.raises(ValueError, match="rms_sumsq: expected float32"):
            layer.fused(x, rms_eps=1e-5, rms_sumsq=bad)
        with pytest.raises(ValueError, match="rms_sumsq: expected float32"):
            layer.swiglu(x, rms_eps=1e-5, rms_sumsq=bad)
        with pytest.raises(ValueError, match="x_sumsq: expected float32"):
            rms_norm_linear(nn.RMSNorm(64), nn.Linear(64, 32), x, bad)
        with pytest.raises(ValueError, match="x_sumsq: expected float32"):
            rms_norm_swiglu(nn.RMSNorm(64), nn.Linear(64, 32), x, bad)
    with pytest.raises(TypeError, match="return_sumsq"):
        layer.fused(x, return_sumsq="yes")
    with pytest.raises(TypeError, match="return_sumsq"):
        linear_residual(nn.Linear(64, 32), x, torch.randn(3, 32), return_sumsq=None)


def test_helpers_refuse_what_one_path_took(rng):
    """The composite paths refuse what the fused ones do (a residual broadcast or promoted, a NaN
    or negative eps), and x that is not a float tensor is named, not read as ``x.dtype``."""
    layer = FP4Linear.from_linear(nn.Linear(64, 32))
    x = torch.randn(3, 64, generator=rng)
    for bad in (torch.randn(32), torch.randn(3, 32, dtype=torch.float64), torch.randn(3, 5)):
        with pytest.raises(ValueError, match="residual: expected \\(3, 32\\)"):
            linear_residual(nn.Linear(64, 32), x, bad)
        with pytest.raises(ValueError, match="residual: expected \\(3, 32\\)"):
            linear_residual(layer, x, bad)
    for eps in (float("nan"), float("inf"), -1.0):
        for affine in (True, False):  # (the composite path, and the fused one)
            norm = nn.RMSNorm(64, eps=eps, elementwise_affine=affine)
            with pytest.raises(ValueError, match="norm: expected an eps that is None or a finite float >= 0"):
                rms_norm_linear(norm, layer, x)
            with pytest.raises(ValueError, match="norm: expected an eps that is None or a finite float >= 0"):
                rms_norm_swiglu(norm, layer, x)
    weightless = nn.RMSNorm(64, elementwise_affine=False)  # eps None: finfo(x.dtype)
    for bad in (None, x.long()):
        with pytest.raises(TypeError, match="x: expected a floating-point torch.Tensor"):
            rms_norm_linear(weightless, layer, bad)
        with pytest.raises(TypeError, match="x: expected a floating-point torch.Tensor"):
            rms_norm_swiglu(weightless, layer, bad)


def test_fused_composite_keeps_gradients(rng):
    """Off the fused path (grad needed), FP4Linear.fused is differentiable in x and the residual."""
    layer = FP4Linear.from_linear(nn.Linear(16, 8))
    x = torch.randn(2, 16, generator=rng, requires_grad=True)
    r = torch.randn(2, 8, generator=rng, requires_grad=True)
    layer.fused(x, rms_eps=1e-5, residual=r).sum().backward()
    assert x.grad is not None and torch.equal(r.grad, torch.ones(2, 8))


@pytest.fixture
def fp4_norm_fusion():
    """The benchmark script benchmarks/fp4_norm_fusion.py as a module."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import fp4_norm_fusion as module

    return module


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4", "nf4"])
def test_norm_fusion_benchmark_cpu(tmp_path, one_thread, fp4_norm_fusion, fmt):
    """benchmarks/fp4_norm_fusion.py --cpu --fmt: every projection and row count timed four ways,
    the fused output equal to the composite's and both close to the float64 reference."""
    import json

    out = tmp_path / "nf.json"
    assert fp4_norm_fusion.main(["--cpu", "--fmt", fmt, "--ms", "1,3", "--iters", "1", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["fmt"] == fmt
    assert [(r["projection"], r["m"]) for r in d["runs"]] == [(p, m) for p in ("qkv", "o", "gate_up", "down")
                                                               for m in (1, 3)]
    for r in d["runs"]:
        assert r["fusion"] == fp4_norm_fusion.CPU_PROJECTIONS[r["projection"]][2]
        assert all(r[w]["us"] > 0 for w in fp4_norm_fusion.WAYS)
        assert r["fused_rel_diff_vs_composite"] < 1e-5 and r["handoff_rel_diff_vs_fused"] < 1e-5
        assert r["fused"]["rel_err_vs_float64"] < 1e-5 and r["composite"]["rel_err_vs_float64"] < 1e-5
    with pytest.raises(SystemExit):
        fp4_norm_fusion.main(["--cpu", "--ms", "0"])
    with pytest.raises(SystemExit):
        fp4_norm_fusion.main(["--cpu", "--fmt", "int4"])


def test_norm_fusion_benchmark_profile_once(tmp_path, capsys, one_thread, fp4_norm_fusion):
    """fp4_norm_fusion.py --profile-once: each way called once per row count, in WAYS order (the
    order Nsight Compute's report lists the GEMVs in), no JSON written."""
    out = tmp_path / "nf.json"
    assert fp4_norm_fusion.main(["--cpu", "--profile-once", "gate_up", "--ms", "1,2", "--out", str(out)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("profiled ")]
    assert lines == [f"profiled gate_up m={m} {w}" for m in (1, 2) for w in fp4_norm_fusion.WAYS]
    assert not out.exists()
    with pytest.raises(SystemExit):
        fp4_norm_fusion.main(["--cpu", "--profile-once", "lm_head"])
