"""apt::fp4_linear_gelu on the CPU (fp4_linear then the exact GELU): values, gradients, opcheck."""
from __future__ import annotations

import pytest
import torch

import apt_ext  # noqa: F401  (registers torch.ops.apt.*)
from apt_ext.fp4 import _ops as fp4_ops
from reference import fp4 as ref


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4", "nf4"])
def test_fp4_linear_gelu_matches_reference(fmt, rng):
    w = torch.randn(13, 70, generator=rng)
    packed, scales, ts = ref.quantize(w, fmt)
    x = torch.randn(2, 3, 70, generator=rng)
    bias = torch.randn(13, generator=rng)
    got = fp4_ops.fp4_linear_gelu(x, packed, scales, ts, bias, fmt)
    want = torch.nn.functional.gelu(ref.linear(x.double(), packed, scales, ts, bias, fmt))
    assert got.shape == (2, 3, 13) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_fp4_linear_gelu_gradients(rng):
    packed, scales, ts = ref.quantize(torch.randn(9, 48, generator=rng), "nf4")
    w = ref.dequantize(packed, scales, ts, "nf4", dtype=torch.float64)[:, :48]
    x = torch.randn(4, 48, generator=rng, dtype=torch.float64)
    bias = torch.randn(9, generator=rng, dtype=torch.float64)
    xa, ba = x.float().requires_grad_(), bias.float().requires_grad_()
    fp4_ops.fp4_linear_gelu(xa, packed, scales, ts, ba, "nf4").sum().backward()
    xr, br = x.clone().requires_grad_(), bias.clone().requires_grad_()
    torch.nn.functional.gelu(xr @ w.T + br).sum().backward()
    torch.testing.assert_close(xa.grad.double(), xr.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ba.grad.double(), br.grad, rtol=1e-4, atol=1e-5)


def test_fp4_linear_gelu_opcheck(rng):
    # mxfp4: opcheck's test_schema does arithmetic on the inputs, which nvfp4's float8 scales
    # lack on the CPU.
    packed, scales, ts = ref.quantize(torch.randn(8, 64, generator=rng), "mxfp4")
    x = torch.randn(3, 64, generator=rng, requires_grad=True)
    bias = torch.randn(8, generator=rng)
    torch.library.opcheck(torch.ops.apt.fp4_linear_gelu.default, (x, packed, scales, ts, bias, "mxfp4", 32))


def test_fp4_linear_gelu_rejects_bad_input(rng):
    packed, scales, ts = ref.quantize(torch.randn(8, 32, generator=rng), "nvfp4")
    with pytest.raises(ValueError, match="x"):
        fp4_ops.fp4_linear_gelu(torch.randn(3, 50), packed, scales, ts, None, "nvfp4")
    with pytest.raises(ValueError, match="fmt"):
        fp4_ops.fp4_linear_gelu(torch.randn(3, 32), packed, scales, ts, None, "fp5")
