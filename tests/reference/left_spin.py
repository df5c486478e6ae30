"""Plain-PyTorch reference of the left-spin residual (docs/contract.md §4): the tests' definition of
the math (shipped code never imports it; it lives under tests/).

Per row of D elements (norms over the last dimension, in float32; float64 for float64
inputs)::

    nu, ndu, ndp = ||u||, ||du||, ||du_prev||
    d   = ndu / (eps + nu)
    a   = ||du - du_prev|| / (eps + ndu + ndp)       (0 without du_prev)
    s   = w1*d + w2*a
    phi = beta*phi_prev + (1-beta)*alpha*softplus(s - tau)   (no inertia term without phi_prev)
    g   = 1 / sqrt(1 + phi^2)
    out = u + g*du                                     (cast to u's dtype)

Gradients come from autograd; ``torch.linalg.vector_norm`` takes the gradient of ||v|| at
v = 0 as 0, the convention the kernels follow.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from apt_ext.left_spin.params import DEFAULTS as PARAMS


def left_spin_phi_dtype(dtype: torch.dtype) -> torch.dtype:
    """phi's dtype: float32, float64 for float64 inputs."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def left_spin_residual(u: torch.Tensor, du: torch.Tensor, du_prev: torch.Tensor | None = None,
                       phi_prev: torch.Tensor | None = None, alpha: float = PARAMS.alpha,
                       tau: float = PARAMS.tau, beta: float = PARAMS.beta, w1: float = PARAMS.w1,
                       w2: float = PARAMS.w2, eps: float = PARAMS.eps) -> tuple[torch.Tensor, torch.Tensor]:
    """u, du, du_prev [..., D]; phi_prev [...] -> (out [..., D] in u's dtype, phi [...] float32)."""
    acc = torch.float64 if u.dtype == torch.float64 else torch.float32
    uf, duf = u.to(acc), du.to(acc)
    nu = torch.linalg.vector_norm(uf, dim=-1)
    ndu = torch.linalg.vector_norm(duf, dim=-1)
    s = w1 * (ndu / (eps + nu))
    if du_prev is not None:
        pf = du_prev.to(acc)
        ndp = torch.linalg.vector_norm(pf, dim=-1)
        s = s + w2 * (torch.linalg.vector_norm(duf - pf, dim=-1) / (eps + ndu + ndp))
    phi = alpha * F.softplus(s - tau)
    if phi_prev is not None:
        phi = beta * phi_prev.to(acc) + (1.0 - beta) * phi
    g = torch.rsqrt(1.0 + phi * phi)
    out = (uf + g.unsqueeze(-1) * duf).to(u.dtype)
    return out, phi


# ---- test helpers: kernels are compared against this module ----
# (atol, rtol) a kernel must meet against the reference for out and the input gradients per
# dtype; phi (float32) within PHI_TOLERANCE.get(dtype, (2e-5, 2e-5)).
TOLERANCE = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (2e-5, 2e-5),
    torch.bfloat16: (2e-2, 2e-2),
    torch.float16: (2e-3, 2e-3),
}
PHI_TOLERANCE = {torch.float64: (1e-10, 1e-10)}  # else (2e-5, 2e-5)
DEFAULTS = dataclasses.asdict(PARAMS)  # the keyword arguments of docs/contract.md §4's defaults


def make_inputs(shape: tuple[int, ...], dtype: torch.dtype, device: str | torch.device,
                with_prev: bool, with_phi: bool, gen: torch.Generator | None = None,
                requires_grad: bool = False, du_dtype: torch.dtype | None = None):
    """Random u, du (smaller than u, as in a residual stream), du_prev, phi_prev (never zeros).
    u has ``dtype``; du and du_prev ``du_dtype`` (default: ``dtype``)."""
    def rnd(scale: float, dt: torch.dtype) -> torch.Tensor:
        t = torch.randn(shape, generator=gen, dtype=torch.float32) * scale
        return t.to(device=device, dtype=dt).requires_grad_(requires_grad)

    du_dtype = du_dtype or dtype
    u = rnd(1.0, dtype)
    du = rnd(0.7, du_dtype)
    du_prev = rnd(0.6, du_dtype) if with_prev else None
    phi_prev = None
    if with_phi:
        phi_prev = (torch.rand(shape[:-1], generator=gen) + 0.1).to(device=device,
                                                                   dtype=left_spin_phi_dtype(dtype))
        phi_prev.requires_grad_(requires_grad)
    return u, du, du_prev, phi_prev


def forward_backward(u, du, du_prev, phi_prev, grad_out, grad_phi, fn=None, **params):
    """(out, phi) of ``fn`` (default: the reference) and autograd's gradients of
    sum(out*grad_out) + sum(phi*grad_phi) (None for absent inputs)."""
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None
              for t in (u, du, du_prev, phi_prev)]
    out, phi = (fn or left_spin_residual)(*leaves, **params)
    live = [t for t in leaves if t is not None]
    loss = (out * grad_out.to(out.dtype)).sum() + (phi * grad_phi.to(phi.dtype)).sum()
    grads = torch.autograd.grad(loss, live)
    it = iter(grads)
    return out.detach(), phi.detach(), [next(it) if t is not None else None for t in leaves]


def assert_close_to_reference(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype,
                              what: str, phi: bool = False) -> None:
    """assert_close with the tolerance of ``dtype`` (the inputs' dtype); ``what`` names the value."""
    atol, rtol = (PHI_TOLERANCE.get(dtype, (2e-5, 2e-5)) if phi else TOLERANCE[dtype])
    torch.testing.assert_close(actual.double(), expected.double(), atol=atol, rtol=rtol,
                               msg=lambda m: f"{what}: {m}")


def check_kernel(forward, backward, u, du, du_prev, phi_prev, grad_out, grad_phi) -> None:
    """A kernel pair with the op schemas (``forward(u, du, du_prev, phi_prev, *params)``,
    ``backward(grad_out, grad_phi, u, du, du_prev, phi_prev, *params)``) against the reference
    at the defaults: dtypes, shapes, and values within the tolerance of each output's dtype (u's
    for out and grad_u, du's for grad_du and grad_du_prev)."""
    params = tuple(DEFAULTS.values())
    out, phi = forward(u, du, du_prev, phi_prev, *params)
    r_out, r_phi, r_grads = forward_backward(u, du, du_prev, phi_prev, grad_out, grad_phi, **DEFAULTS)
    assert out.dtype == u.dtype and out.shape == u.shape
    assert phi.dtype == left_spin_phi_dtype(u.dtype) and phi.shape == u.shape[:-1]
    assert_close_to_reference(out, r_out, u.dtype, "out")
    assert_close_to_reference(phi, r_phi, u.dtype, "phi", phi=True)
    grads = backward(grad_out, grad_phi, u, du, du_prev, phi_prev, *params)
    names = ("grad_u", "grad_du", "grad_du_prev", "grad_phi_prev")
    for name, g, rg, dt in zip(names, grads, r_grads, (u.dtype, du.dtype, du.dtype, u.dtype)):
        if rg is None:
            assert g.numel() == 0, name
        else:
            assert g.dtype == rg.dtype and g.shape == rg.shape, name
            assert_close_to_reference(g, rg, dt, name, phi=name == "grad_phi_prev")
