"""DBC-DAC gradient conditioning (docs/contract.md §7): row balancing + low-rank compression with error feedback.

For every 2-D parameter with at least ``min_numel`` elements and its gradient G [m, n]:
    r_i   = ||G_i|| + eps                       (DBC: balance rows)
    G_hat = diag(1/r) G
    M     = G_hat + e                           (DAC: error feedback, e starts at 0)
    C     = best rank-k approximation of M      (randomised range finder: oversampling 4,
                                                 one power iteration; k = ceil(rank_ratio*min(m,n)))
    e     = M - C
    G    <- diag(r) C
A gradient of rank <= k passes unchanged (up to float rounding), and over steps
sum(C) + e_final = sum(G_hat) exactly: nothing is lost, only delayed.

Applied to ``.grad`` right before the optimizer step (an optimizer step pre-hook installed by
``attach``; or call ``condition_()`` yourself), i.e. after gradient accumulation and, under
DDP, after the all-reduce, so every rank conditions the same gradient.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch

OVERSAMPLING = 4


def low_rank(m: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Rank-k approximation of m [r, c] (float32/64) by a randomised range finder with
    oversampling 4 and one power iteration (Halko, Martinsson, Tropp 2011, alg. 4.4)."""
    rows, cols = m.shape
    ell = min(k + OVERSAMPLING, rows, cols)
    omega = torch.randn(cols, ell, generator=generator, dtype=m.dtype).to(m.device)
    q, _ = torch.linalg.qr(m @ omega)
    q, _ = torch.linalg.qr(m @ (m.T @ q))          # one power iteration
    b = q.T @ m                                    # [ell, cols]
    ub, s, vh = torch.linalg.svd(b, full_matrices=False)
    kk = min(k, s.numel())
    return (q @ ub[:, :kk]) @ (s[:kk, None] * vh[:kk])


class DBCDAC:
    """Conditions the gradients of the selected 2-D parameters in place.

    ``params``: an iterable of (name, Parameter) (e.g. ``model.named_parameters()``).
    State (error buffers, the generator of the range finder) is saved by ``state_dict``.
    """

    def __init__(self, params: Iterable[tuple[str, torch.nn.Parameter]], min_numel: int = 4096,
                 rank_ratio: float = 0.25, eps: float = 1e-8, seed: int = 0) -> None:
        if not 0.0 < rank_ratio <= 1.0:
            raise ValueError(f"rank_ratio: expected in (0, 1], got {rank_ratio}")
        if min_numel < 1:
            raise ValueError(f"min_numel: expected >= 1, got {min_numel}")
        seen: set[int] = set()
        self.params: dict[str, torch.nn.Parameter] = {}
        for name, p in params:
            if p.dim() == 2 and p.numel() >= min_numel and p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                self.params[name] = p
        self.rank_ratio, self.eps, self.seed = rank_ratio, eps, seed
        self.errors: dict[str, torch.Tensor] = {}
        self.generator = torch.Generator().manual_seed(seed)
        self.attached = False

    def rank(self, shape: torch.Size) -> int:
        return math.ceil(self.rank_ratio * min(shape))

    @torch.no_grad()
    def condition(self, name: str, grad: torch.Tensor) -> torch.Tensor:
        """One DBC-DAC step on grad [m, n] for parameter ``name``; returns diag(r)·C in grad's dtype."""
        g = grad.to(torch.float64 if grad.dtype == torch.float64 else torch.float32)
        r = torch.linalg.vector_norm(g, dim=1, keepdim=True) + self.eps
        m = g / r
        e = self.errors.get(name)
        if e is not None:
            m = m + e
        c = low_rank(m, self.rank(g.shape), self.generator)
        self.errors[name] = m - c
        return (r * c).to(grad.dtype)

    @torch.no_grad()
    def condition_(self) -> None:
        """Replace ``p.grad`` of every selected parameter by its conditioned gradient."""
        for name, p in self.params.items():
            if p.grad is not None:
                p.grad.copy_(self.condition(name, p.grad))

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Run ``condition_()`` before every ``optimizer.step()``."""
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: self.condition_())
        self.attached = True

    def state_dict(self) -> dict:
        return {"errors": {k: v.clone() for k, v in self.errors.items()},
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        unknown = sorted(set(state["errors"]) - set(self.params))
        if unknown:
            raise ValueError(f"state: error buffers for unknown parameters {unknown}")
        self.errors = {k: v.to(self.params[k].device) for k, v in state["errors"].items()}
        self.generator.set_state(state["generator"])
