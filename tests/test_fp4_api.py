"""FP4 Python API (quantize, FP4Weight, FP4Linear, quantize_), opcheck, save/load, bad input."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import apt_ext  # noqa: F401
from apt_ext import quantize_
from apt_ext.fp4 import FP4Weight, quantize
from apt_ext.nn import FP4Linear, FusedFP4Linear
from reference import fp4 as ref
from fp4_helpers import FORMATS, assert_same_quantization


@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_returns_fp4weight(fmt, rng):
    w = torch.randn(20, 70, generator=rng)
    q = quantize(w, fmt)
    assert isinstance(q, FP4Weight) and q.fmt == fmt and q.shape == (20, 70)
    assert_same_quantization((q.packed, q.scales, q.tensor_scale), ref.quantize(w, fmt))
    d = q.dequantize(torch.bfloat16)
    assert d.shape == (20, 70) and d.dtype == torch.bfloat16
    assert torch.equal(d, ref.dequantize(q.packed, q.scales, q.tensor_scale, fmt, dtype=torch.bfloat16)[:, :70])
    assert q.bits_per_weight == pytest.approx(8 * q.nbytes / (20 * 70))


def test_bits_per_weight_of_each_format(rng):
    w = torch.randn(128, 1024, generator=rng)
    bpw = {fmt: quantize(w, fmt).bits_per_weight for fmt in FORMATS}
    assert bpw["nvfp4"] == pytest.approx(4.5, abs=0.01)
    assert bpw["mxfp4"] == pytest.approx(4.25, abs=0.01)
    assert bpw["nf4"] == pytest.approx(4.5, abs=0.01)


@pytest.mark.parametrize("fmt", FORMATS)
def test_fp4linear_from_linear(fmt, rng):
    lin = nn.Linear(40, 24)
    m = FP4Linear.from_linear(lin, fmt)
    assert FusedFP4Linear is FP4Linear and m.fmt == fmt
    x = torch.randn(3, 40, generator=rng)
    q = ref.quantize(lin.weight.detach(), fmt)
    torch.testing.assert_close(m(x), ref.linear(x, *q, lin.bias.detach(), fmt), rtol=1e-5, atol=1e-5)
    err = (m(x) - lin(x)).norm() / lin(x).norm()
    assert err < 0.2                                           # 4-bit weights, but the same layer


def test_fp4linear_constructor_and_bias_training(rng):
    m = FP4Linear(32, 8, bias=True, fmt="mxfp4")
    assert m.packed.shape == (8, 16) and m.scales.dtype == torch.uint8
    x = torch.randn(2, 32, generator=rng, requires_grad=True)
    m(x).sum().backward()
    assert x.grad is not None and m.bias.grad is not None
    assert [n for n, p in m.named_parameters()] == ["bias"]    # the 4-bit weight is frozen
    with pytest.raises(ValueError, match="in_features"):
        FP4Linear(0, 8)
    with pytest.raises(ValueError, match="fmt"):
        FP4Linear(8, 8, fmt="int4")
    for bad in (torch.float64, torch.int64, "float32"):  # the bias's dtype: fp4_linear takes no other
        with pytest.raises(TypeError, match="dtype: expected None, torch.float32"):
            FP4Linear(32, 8, dtype=bad)
    assert FP4Linear(32, 8, dtype=torch.bfloat16).bias.dtype == torch.bfloat16


def test_quantize_twice():
    """Same format again: nothing changes; another format: a clear error (the float weights are
    gone); one format per call with filters that select its layers: a mixed model."""
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))
    quantize_(model, "nvfp4")
    packed = model[0].packed.clone()
    assert quantize_(model, "nvfp4") is model and torch.equal(model[0].packed, packed)
    with pytest.raises(ValueError, match=r"model: 2 layer\(s\) are already FP4Linear in another format "
                                         r"\(e\.g\. '0': nvfp4\); quantize_ to 'mxfp4'"):
        quantize_(model, "mxfp4")
    assert model[0].fmt == "nvfp4" and torch.equal(model[0].packed, packed)  # left as it was
    mixed = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))
    quantize_(mixed, "nvfp4", filter_fn=lambda m, fqn: fqn == "0")
    quantize_(mixed, "mxfp4", filter_fn=lambda m, fqn: fqn == "2")
    assert (mixed[0].fmt, mixed[2].fmt) == ("nvfp4", "mxfp4")


def test_quantize_filter_fn():
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    quantize_(model, fmt="nf4", filter_fn=lambda mod, fqn: fqn == "0")
    assert isinstance(model[0], FP4Linear) and type(model[2]) is nn.Linear
    with pytest.raises(TypeError, match="filter_fn"):
        quantize_(nn.Sequential(nn.Linear(2, 2)), filter_fn=3)
    with pytest.raises(ValueError, match="model"):
        quantize_(nn.Linear(2, 2))


def test_quantize_refusing_a_layer_leaves_the_model_unchanged():
    """A layer quantize refuses (here the second) names the layer, and no layer was swapped before it."""
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"model: layer '2' cannot be quantised .*NaN or Inf"):
        quantize_(model)
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU, nn.Linear]
    with pytest.raises(TypeError, match=r"model: layer '0' cannot be quantised .*w: expected float32"):
        quantize_(nn.Sequential(nn.Linear(16, 16).double()))


# ---- opcheck: fake kernels, schema, autograd registration, aot dispatch ------------------
def _opcheck_cases(rng):
    w = torch.randn(6, 40, generator=rng)
    cases = [
        ("fp4_pack", (torch.randint(0, 16, (3, 8), dtype=torch.uint8, generator=rng),)),
        ("fp4_unpack", (torch.randint(0, 256, (3, 4), dtype=torch.uint8, generator=rng),)),
    ]
    for fmt in FORMATS:
        bs = ref.BLOCK_SIZES[fmt]
        q = ref.quantize(w, fmt)
        cases.append(("fp4_quantize", (w.to(torch.bfloat16), fmt, bs)))
        cases.append(("fp4_dequantize", (*q, fmt, bs, torch.float16)))
        x = torch.randn(2, 3, 40, generator=rng, requires_grad=True)
        b = torch.randn(6, generator=rng, requires_grad=True)
        cases.append(("fp4_linear", (x, *q, b, fmt, bs)))
        cases.append(("fp4_linear", (x.detach().bfloat16(), *q, None, fmt, bs)))
    return cases


def test_opcheck_every_fp4_op(rng):
    all_utils = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    for op, args in _opcheck_cases(rng):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        has_fp8 = any(t.dtype == torch.float8_e4m3fn for t in tensors)
        # opcheck's test_schema does arithmetic on the inputs, which float8 lacks on the CPU:
        # for nvfp4's float8 scales the no-mutation part of it is checked by hand instead.
        utils = all_utils[1:] if has_fp8 else all_utils
        before = [ref_bits(t).clone() for t in tensors]
        torch.library.opcheck(getattr(torch.ops.apt, op).default, args, test_utils=utils)
        getattr(torch.ops.apt, op)(*args)
        assert all(torch.equal(ref_bits(t), b) for t, b in zip(tensors, before)), f"{op} mutated an input"


def ref_bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t.detach()


# ---- save / load ----------------------------------------------------------------------------
_MODEL_SRC = textwrap.dedent("""
    import torch
    from torch import nn
    import apt_ext
    def build(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(48, 64), nn.GELU(), nn.Linear(64, 10))
""")


@pytest.mark.parametrize("fmt", FORMATS)
def test_safetensors_roundtrip_in_a_fresh_process(fmt, tmp_path):
    ns: dict = {}
    exec(_MODEL_SRC, ns)
    model = quantize_(ns["build"](0), fmt=fmt)
    x = torch.randn(5, 48)
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    torch.save({"x": x, "y": model(x).detach()}, tmp_path / "io.pt")
    script = _MODEL_SRC + textwrap.dedent(f"""
        from safetensors.torch import load_file
        model = apt_ext.quantize_(build(123), fmt={fmt!r})     # other init: the file must win
        model.load_state_dict(load_file({str(tmp_path / 'model.safetensors')!r}))
        io = torch.load({str(tmp_path / 'io.pt')!r})
        y = model(io["x"])
        assert torch.equal(y, io["y"]), (y - io["y"]).abs().max()
        print("BIT-IDENTICAL")
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "BIT-IDENTICAL" in res.stdout, res.stderr[-2000:]


def test_loading_another_formats_checkpoint_fails_clearly(tmp_path):
    src = quantize_(nn.Sequential(nn.Linear(64, 8)), fmt="nvfp4")
    save_file(src.state_dict(), str(tmp_path / "m.safetensors"))
    for other in ("mxfp4", "nf4"):
        dst = quantize_(nn.Sequential(nn.Linear(64, 8)), fmt=other)
        before = {k: v.clone() for k, v in dst.state_dict().items()}
        with pytest.raises(RuntimeError, match="same fmt"):
            dst.load_state_dict(load_file(str(tmp_path / "m.safetensors")))
        for k, v in dst.state_dict().items():                  # nothing half-loaded
            assert torch.equal(v.view(torch.uint8) if v.dtype == torch.float8_e4m3fn else v,
                               before[k].view(torch.uint8) if v.dtype == torch.float8_e4m3fn else before[k])


# ---- bad input --------------------------------------------------------------------------------
def test_bad_quantize_input():
    w = torch.randn(4, 32)
    with pytest.raises(TypeError, match="w: expected float32"):
        quantize(w.to(torch.int32))
    with pytest.raises(ValueError, match="w: expected a 2-D"):
        quantize(torch.randn(32))
    with pytest.raises(ValueError, match="w: expected a non-empty"):
        quantize(torch.randn(0, 32))
    with pytest.raises(ValueError, match="fmt: unknown"):
        quantize(w, "fp3")
    with pytest.raises(ValueError, match="block_size"):
        quantize(w, "nvfp4", 32)
    for bad in (float("nan"), float("inf"), float("-inf")):
        w2 = w.clone()
        w2[2, 7] = bad
        with pytest.raises(ValueError, match="NaN or Inf"):
            quantize(w2, "nf4")
    with pytest.raises(TypeError, match="w: expected a torch.Tensor"):
        quantize([[1.0]])
    for bad in ("16", 16.5, True):  # int('16') and int(16.5) were taken as 16
        with pytest.raises(TypeError, match="block_size: expected an int or None"):
            quantize(w, "nvfp4", bad)


def test_bad_fp4weight():
    """A shape that does not fit the packed codes is refused, not silently cut to them."""
    q = quantize(torch.randn(8, 40), "nvfp4")  # packed [8, 24]: K padded to 48
    assert FP4Weight(q.packed, q.scales, q.tensor_scale, "nvfp4", 16, (8, 33)).dequantize().shape == (8, 33)
    for shape in ((8, 32), (8, 49), (9, 40), (4, 40)):
        with pytest.raises(ValueError, match=r"shape: expected \(8, K\) with K in \(32, 48\]"):
            FP4Weight(q.packed, q.scales, q.tensor_scale, "nvfp4", 16, shape).dequantize()
    for shape in ((0, 40), (8,), None, (8.0, 40)):
        with pytest.raises(ValueError, match="shape: expected \\(N, K\\), two positive ints"):
            FP4Weight(q.packed, q.scales, q.tensor_scale, "nvfp4", 16, shape)
    with pytest.raises(TypeError, match="dtype: expected a torch.dtype"):
        q.dequantize("float32")


def test_bad_linear_and_dequantize_input(rng):
    q = ref.quantize(torch.randn(8, 64, generator=rng), "nvfp4")
    x = torch.randn(2, 64)
    lin = torch.ops.apt.fp4_linear
    with pytest.raises(ValueError, match="x: last dimension K = 47"):
        lin(torch.randn(2, 63 - 16), *q, None, "nvfp4", 16)
    with pytest.raises(ValueError, match="x: last dimension K = 65"):
        lin(torch.randn(2, 65), *q, None, "nvfp4", 16)
    with pytest.raises(ValueError, match="x: expected at least 1 dimension"):
        lin(torch.tensor(1.0), *q, None, "nvfp4", 16)
    with pytest.raises(TypeError, match="x: expected float32"):
        lin(x.double(), *q, None, "nvfp4", 16)
    with pytest.raises(ValueError, match="bias: expected shape"):
        lin(x, *q, torch.randn(7), "nvfp4", 16)
    with pytest.raises(TypeError, match="scales: expected"):
        lin(x, q[0], q[1].float(), q[2], None, "nvfp4", 16)
    with pytest.raises(ValueError, match="packed: expected a 2-D"):
        lin(x, q[0].flatten(), q[1], q[2], None, "nvfp4", 16)
    with pytest.raises(ValueError, match="fmt: unknown"):
        lin(x, *q, None, "nvfp8", 16)
    with pytest.raises(ValueError, match="block_size"):
        lin(x, *q, None, "nvfp4", 32)
    with pytest.raises(TypeError, match="dtype: expected"):
        torch.ops.apt.fp4_dequantize(*q, "nvfp4", 16, torch.int8)


def test_bad_pack_input():
    with pytest.raises(ValueError, match="codes: every code must be in"):
        torch.ops.apt.fp4_pack(torch.tensor([[1, 16]], dtype=torch.uint8))
    with pytest.raises(ValueError, match="even K"):
        torch.ops.apt.fp4_pack(torch.zeros(2, 3, dtype=torch.uint8))
    with pytest.raises(TypeError, match="codes: expected uint8"):
        torch.ops.apt.fp4_pack(torch.zeros(2, 4, dtype=torch.int32))
    codes = torch.randint(0, 16, (3, 10), dtype=torch.uint8)
    assert torch.equal(torch.ops.apt.fp4_unpack(torch.ops.apt.fp4_pack(codes)), codes)
    assert torch.equal(torch.ops.apt.fp4_pack(codes), ref.pack(codes))


def test_module_dtype_cast_keeps_the_fp4_format():
    """model.to(bfloat16) casts the bias and activations' layer, never the 4-bit weight's scales."""
    torch.manual_seed(0)
    for fmt in ("nvfp4", "mxfp4", "nf4"):
        model = torch.nn.Sequential(torch.nn.Linear(40, 24), torch.nn.GELU(), torch.nn.Linear(24, 8))
        quantize_(model, fmt=fmt)
        before = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith("bias")}
        model.to(torch.bfloat16)
        after = model.state_dict()
        for k, v in before.items():
            assert after[k].dtype == v.dtype and torch.equal(after[k].reshape(-1).view(torch.uint8), v.reshape(-1).view(torch.uint8)), k
        assert model[0].bias.dtype == torch.bfloat16
        y = model(torch.randn(3, 40, dtype=torch.bfloat16))
        assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
