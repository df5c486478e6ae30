"""The left-spin residual written in torch operations, for ``torch.compile`` to fuse.

Inductor cannot fuse through the custom op ``apt::left_spin_residual``: in a compiled training
step the op reads u, du and du_prev and writes out, then the next kernel (a layer norm) reads
out again. Written in torch operations, the same math (docs/contract.md §4) is one more
reduction over each row that inductor can merge with its neighbours' kernels. Eagerly it runs
several kernels per call where the op runs one; ``LeftSpinResidual(compiled_form="decomposed")``
uses it only while compiling.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from apt_ext.left_spin._ops import check_arguments
from apt_ext.left_spin.params import LeftSpinParams


def left_spin_residual_decomposed(u: torch.Tensor, du: torch.Tensor, du_prev: torch.Tensor | None,
                                  phi_prev: torch.Tensor | None, params: LeftSpinParams
                                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [..., D] in u's dtype, phi [...] float32, float64 for float64 u), as
    ``torch.ops.apt.left_spin_residual`` returns them and with its argument checks (same
    shapes and dtypes accepted, same errors). Norms and gate in float32 (float64 for float64
    u); the gradient of a norm at a zero row is 0, as in the kernels. Differentiable by autograd."""
    if torch.compiler.is_compiling():
        # the op's fake kernel runs the native checks on the traced shapes and dtypes; its
        # result is unused, so the compiled graph drops the call (no kernel at run time)
        torch.ops.apt.left_spin_residual(u, du, du_prev, phi_prev, *params.as_tuple())
    else:
        check_arguments(u, du, du_prev, phi_prev, params.as_tuple())
    alpha, tau, beta, w1, w2, eps = params.as_tuple()
    acc = torch.float64 if u.dtype == torch.float64 else torch.float32
    u_acc, du_acc = u.to(acc), du.to(acc)
    du_norm = torch.linalg.vector_norm(du_acc, dim=-1)
    score = w1 * du_norm / (eps + torch.linalg.vector_norm(u_acc, dim=-1))
    if du_prev is not None:
        prev = du_prev.to(acc)
        spread = eps + du_norm + torch.linalg.vector_norm(prev, dim=-1)
        score = score + w2 * torch.linalg.vector_norm(du_acc - prev, dim=-1) / spread
    phi = alpha * F.softplus(score - tau)
    if phi_prev is not None:
        phi = torch.lerp(phi_prev.to(acc), phi, 1.0 - beta)
    gate = torch.rsqrt(1.0 + phi.square())
    return torch.addcmul(u_acc, gate.unsqueeze(-1), du_acc).to(u.dtype), phi
