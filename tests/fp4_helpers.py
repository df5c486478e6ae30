"""Shared helpers of the FP4 CPU tests: comparisons against tests/reference/fp4.py."""
from __future__ import annotations

import torch

FORMATS = ("nvfp4", "mxfp4", "nf4")
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Unit roundoff of each output dtype (the result is rounded once from float32; in float32 the
# bias add is that rounding: two kernels whose sums differ in the last bits may add a large
# bias and land one ulp apart).
UNIT_ROUNDOFF = {torch.float32: 2.0 ** -24, torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}


def as_bits(t: torch.Tensor) -> torch.Tensor:
    """float8 scales compared bit for bit (float8 has no torch.equal on CPU in all versions)."""
    return t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t


def assert_same_quantization(got, want) -> None:
    for name, a, b in zip(("packed", "scales", "tensor_scale"), got, want):
        assert a.dtype == b.dtype and a.shape == b.shape, (name, a.dtype, b.dtype, a.shape, b.shape)
        assert torch.equal(as_bits(a), as_bits(b)), f"{name} differs from the reference"


def assert_linear_close(y: torch.Tensor, want: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> None:
    """y (x's dtype) against the float64 reference: fp32 accumulation error plus one rounding."""
    assert y.dtype == x.dtype and y.shape == want.shape
    k = x.shape[-1]
    mag = x.double().abs() @ w[:, :k].double().abs().T                      # sum |x||w| per output
    # y and want are both rounded to x's dtype from values that differ by the accumulation
    # error, so they may land one ulp (2 unit roundoffs) apart.
    bound = 2 * UNIT_ROUNDOFF[x.dtype] * want.double().abs() + 2e-6 * mag + 1e-30
    if x.dtype != torch.float32:                                            # x's own rounding is in want
        bound = bound + UNIT_ROUNDOFF[x.dtype] * 1e-3 * mag
    err = (y.double() - want.double()).abs()
    assert bool((err <= bound).all()), f"max excess {(err - bound).max().item():.3g}"


def assert_cuda_graph_replay_matches_eager(model: torch.nn.Module, static_x: torch.Tensor) -> None:
    """Capture model(static_x) in a CUDA graph (after warm-up on a side stream, which also builds
    any lazily made state such as FP4Linear's tiled copy) and check that replays on fresh inputs
    equal eager calls bit for bit."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.no_grad():
        for _ in range(3):
            model(static_x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        static_y = model(static_x)
    for _ in range(2):
        x = torch.randn_like(static_x)
        static_x.copy_(x)
        graph.replay()
        with torch.no_grad():
            eager = model(x)
        torch.cuda.synchronize()
        assert torch.equal(static_y, eager)
