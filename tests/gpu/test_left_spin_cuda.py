"""Left-spin residual on a CUDA GPU: the CUDA kernels (when compiled) and the Triton kernels
against the reference, autograd, opcheck, torch.compile, NaN rows and bad input.

Run: python -m pytest -q tests/gpu/test_left_spin_cuda.py
"""
from __future__ import annotations

import pytest
import torch

from apt_ext import _native
from apt_ext.left_spin import left_spin_residual
from reference import left_spin as ref

DEV = "cuda"
PARAMS = tuple(ref.DEFAULTS.values())
CUDA_BUILT = bool(_native.build_info().get("cuda")) and _native.has_kernel("left_spin_residual", "CUDA")


def _backend(name: str):
    """(forward, backward) callables with the op schemas for backend ``name``."""
    if name == "cuda":
        if not CUDA_BUILT:
            pytest.skip("apt_ext was built without CUDA kernels")
        return torch.ops.apt.left_spin_residual, torch.ops.apt.left_spin_residual_backward
    from apt_ext.triton import left_spin as tls

    return tls.left_spin_residual, tls.left_spin_residual_backward


# (rows shape, D): every group size of the CUDA kernel (8/32/128/256/512 threads per row and
# the two-pass kernel), D not a multiple of the 16-byte pack, a single row, many rows with a
# partial last block, and the Triton two-pass path (D > 8192).
CUDA_SHAPES = [(1, 1), (7, 5), (1000, 64), (3, 5, 256), (33, 1000), (17, 1024), (4, 4096),
               (2, 8192), (2, 16384), (3, 20000), (2, 1027), (1, 40000)]
# Fewer for Triton: every shape compiles new kernels (a second or two each).
TRITON_SHAPES = [(7, 5), (33, 1000), (4, 4096), (1, 20000)]
# (u's dtype, du's dtype): one dtype, or a 16-bit du beside a float32 u (autocast's residual sites).
DTYPES = [(torch.float32, None), (torch.bfloat16, None), (torch.float16, None),
          (torch.float32, torch.bfloat16), (torch.float32, torch.float16)]
# Triton loads every input the same way whatever its dtype: one mixed pair covers its path.
CASES = ([("cuda", s, *d) for s in CUDA_SHAPES for d in DTYPES]
         + [("triton", s, *d) for s in TRITON_SHAPES for d in DTYPES[:4]])


@pytest.mark.parametrize("backend,shape,dtype,du_dtype", CASES, ids=str)
@pytest.mark.parametrize("with_prev,with_phi", [(False, False), (True, True), (True, False)])
def test_matches_reference(backend, dtype, du_dtype, shape, with_prev, with_phi):
    fwd, bwd = _backend(backend)
    gen = torch.Generator().manual_seed(hash((shape, with_prev, with_phi)) % 2**31)
    u, du, dp, pp = ref.make_inputs(shape, dtype, DEV, with_prev, with_phi, gen, du_dtype=du_dtype)
    go = torch.randn(shape, generator=gen).to(DEV, dtype)
    gphi = torch.randn(shape[:-1], generator=gen).to(DEV)
    ref.check_kernel(fwd, bwd, u, du, dp, pp, go, gphi)


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_misaligned_and_strided_inputs(backend):
    fwd, _ = _backend(backend)
    rows, D = 64, 512
    base = torch.randn(rows * D + 1, device=DEV, dtype=torch.bfloat16)
    u = base[1:].view(rows, D)  # contiguous but not 16-byte aligned
    du = torch.randn(D, rows, device=DEV, dtype=torch.bfloat16).t()  # non-contiguous
    out, phi = fwd(u, du, None, None, *PARAMS)
    r_out, r_phi = ref.left_spin_residual(u, du)
    ref.assert_close_to_reference(out, r_out, torch.bfloat16, "out")
    ref.assert_close_to_reference(phi, r_phi, torch.bfloat16, "phi", phi=True)


def test_autograd_and_opcheck_on_cuda():
    shape = (4, 3, 96)
    u, du, dp, pp = ref.make_inputs(shape, torch.float32, DEV, True, True, requires_grad=True)
    out, phi = left_spin_residual(u, du, dp, pp)
    (out.square().sum() + phi.sum()).backward()
    leaves = [t.detach().clone().requires_grad_(True) for t in (u, du, dp, pp)]
    r_out, r_phi = ref.left_spin_residual(*leaves)
    (r_out.square().sum() + r_phi.sum()).backward()
    for t, r in zip((u, du, dp, pp), leaves):
        torch.testing.assert_close(t.grad, r.grad, atol=2e-5, rtol=2e-5)
    torch.library.opcheck(torch.ops.apt.left_spin_residual.default, (u, du, dp, pp, *PARAMS))
    go, gphi = torch.randn_like(out), torch.randn_like(phi)
    d = [t.detach() for t in (u, du, dp, pp)]
    torch.library.opcheck(torch.ops.apt.left_spin_residual_backward.default, (go, gphi, *d, *PARAMS))


@pytest.mark.parametrize("compiled_form", ["op", "decomposed"])
def test_torch_compile_inductor_fullgraph(compiled_form):
    """Inductor on CUDA traces either form (the decomposed one as torch operations it fuses);
    both match the eager op."""
    from apt_ext.nn import LeftSpinChain, LeftSpinResidual

    torch._dynamo.reset()

    class Stack(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lins = torch.nn.ModuleList(torch.nn.Linear(64, 64) for _ in range(3))
            self.sites = torch.nn.ModuleList(LeftSpinResidual(compiled_form=compiled_form) for _ in range(3))

        def forward(self, x):
            chain = LeftSpinChain()
            for lin, site in zip(self.lins, self.sites):
                x = site(x, torch.relu(lin(x)), chain)
            return x

    model = Stack().to(DEV, torch.bfloat16)
    x = torch.randn(8, 16, 64, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    compiled = torch.compile(model, fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, model(x), atol=2e-2, rtol=2e-2)
    out.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_nan_stays_in_its_row(backend):
    fwd, _ = _backend(backend)
    u, du, dp, pp = ref.make_inputs((4, 2048), torch.bfloat16, DEV, True, True)
    u[1, 7] = float("nan")
    dp[2, 100] = float("nan")
    pp[3] = float("nan")
    out, phi = fwd(u, du, dp, pp, *PARAMS)
    assert torch.isnan(out[1:]).all() and torch.isnan(phi[1:]).all()
    assert torch.isfinite(out[0]).all() and torch.isfinite(phi[0])


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_16bit_du_misaligned_matches_reference(backend):
    """A float32 u beside a bfloat16 du whose rows are not 16-byte aligned (the 1-element packs)."""
    fwd, bwd = _backend(backend)
    gen = torch.Generator().manual_seed(7)
    u, du, dp, pp = ref.make_inputs((64, 769), torch.float32, DEV, True, True, gen, du_dtype=torch.bfloat16)
    go, gphi = torch.randn_like(u), torch.randn_like(pp)
    ref.check_kernel(fwd, bwd, u, du, dp, pp, go, gphi)


def test_bad_input_on_cuda():
    u = torch.randn(3, 8, device=DEV)
    with pytest.raises((ValueError, RuntimeError), match="du"):
        left_spin_residual(u, torch.randn(3, 8))  # mixed devices
    with pytest.raises(TypeError, match="u: expected float32"):
        left_spin_residual(u.double(), u.double())
    with pytest.raises(TypeError, match="du: expected the dtype of u"):
        left_spin_residual(u.bfloat16(), u)
    with pytest.raises(ValueError, match="phi_prev: expected shape"):
        left_spin_residual(u, u, None, torch.rand(4, device=DEV))
