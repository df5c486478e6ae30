"""The left-spin residual used by every residual site of the APT model (SPEC section 4).

``left_spin(u, du, du_prev, phi_prev, ...)`` calls the native op
``torch.ops.apt.left_spin_residual`` when a kernel for the input's device is registered.
TEMPORARY PATH: until the native op lands (branch left-spin), inputs without a kernel are
computed by ``_left_spin_torch``, a plain-PyTorch transcription of SPEC 4 (autograd through
torch). It is removed once the op is merged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from apt_ext import _native


@torch.compiler.assume_constant_result
def _has_op_kernel(device_type: str) -> bool:
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    return key is not None and _native.has_kernel("left_spin_residual", key)


def _left_spin_torch(u: torch.Tensor, du: torch.Tensor, du_prev: torch.Tensor | None,
                     phi_prev: torch.Tensor | None, alpha: float, tau: float, beta: float,
                     w1: float, w2: float, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SPEC 4 in plain PyTorch (temporary path; float32 math, out cast to u.dtype)."""
    u32, du32 = u.float(), du.float()
    nu = torch.linalg.vector_norm(u32, dim=-1)
    ndu = torch.linalg.vector_norm(du32, dim=-1)
    s = w1 * (ndu / (eps + nu))
    if du_prev is not None:
        dp32 = du_prev.float()
        ndp = torch.linalg.vector_norm(dp32, dim=-1)
        s = s + w2 * (torch.linalg.vector_norm(du32 - dp32, dim=-1) / (eps + ndu + ndp))
    phi = alpha * F.softplus(s - tau)
    if phi_prev is not None:
        phi = beta * phi_prev.float() + (1.0 - beta) * phi
    g = torch.rsqrt(1.0 + phi * phi)
    out = (u32 + g.unsqueeze(-1) * du32).to(u.dtype)
    return out, phi


def left_spin(u: torch.Tensor, du: torch.Tensor, du_prev: torch.Tensor | None = None,
              phi_prev: torch.Tensor | None = None, alpha: float = 0.5, tau: float = 0.3,
              beta: float = 0.7, w1: float = 1.0, w2: float = 0.5, eps: float = 1e-6
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """out = u + g·du with the smoothed left-spin gate g; returns (out [..., D] u.dtype,
    phi [...] float32). Differentiable w.r.t. u, du, du_prev, phi_prev."""
    if _has_op_kernel(u.device.type):
        return torch.ops.apt.left_spin_residual(u, du, du_prev, phi_prev, alpha, tau, beta, w1, w2, eps)
    return _left_spin_torch(u, du, du_prev, phi_prev, alpha, tau, beta, w1, w2, eps)
