"""Left-spin smoothed residuals (docs/contract.md §4) as modules a model chains through its stack.

A model creates one ``LeftSpinChain`` at the start of each forward pass and hands it to every
``LeftSpinResidual`` site in order; each site reads the previous site's (du, phi) from the
chain and writes its own. Because the chain is a fresh local object per forward, no state
survives from one batch (or micro-batch) to the next, and the gate works the same in train and
eval::

    class Block(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.attn, self.ffn = Attention(d), FFN(d)
            self.res_attn, self.res_ffn = LeftSpinResidual(), LeftSpinResidual()

        def forward(self, x, chain):
            x = self.res_attn(x, self.attn(x), chain)
            return self.res_ffn(x, self.ffn(x), chain)

    class Model(nn.Module):
        def forward(self, x):
            chain = LeftSpinChain()          # reset per forward pass
            for block in self.blocks:
                x = block(x, chain)
            return x

A model whose layer signatures cannot take an extra argument shares one chain instead:
build the sites with ``LeftSpinResidual(chain=shared)`` and call ``shared.attach(model)``,
which resets the chain at the start of every ``model(...)`` call.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from apt_ext.left_spin._ops import left_spin_residual
from apt_ext.left_spin.decomposed import left_spin_residual_decomposed
from apt_ext.left_spin.params import COMPILED_FORMS, DEFAULTS, LeftSpinParams


class LeftSpinChain:
    """The state passed along the residual sites of ONE forward pass.

    ``du_prev`` [..., D] is the previous site's residual branch output (still attached to the
    autograd graph, so gradients reach it), ``phi_prev`` [...] float32 the previous site's phi.
    Both are None before the first site. All sites of one chain must see the same shape; start
    a new chain (or ``reset``) where the shape changes, e.g. between encoder and decoder.
    """

    def __init__(self) -> None:
        self.du_prev: torch.Tensor | None = None
        self.phi_prev: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget the previous site (the next site behaves like the first)."""
        self.du_prev = None
        self.phi_prev = None

    def attach(self, model: nn.Module) -> RemovableHandle:
        """Reset this chain at the start of every forward of ``model``; returns the hook handle."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")

        def _reset(module: nn.Module, args: tuple) -> None:
            self.reset()

        return model.register_forward_pre_hook(_reset)


def _check_chain(chain: LeftSpinChain | None) -> None:
    if chain is not None and not isinstance(chain, LeftSpinChain):
        raise TypeError(f"chain: expected a LeftSpinChain or None, got {type(chain).__name__}")


def _branch_dtype(u: torch.Tensor, du: torch.Tensor) -> torch.dtype:
    """The dtype the op takes du in: du's own when it is u's, or 16-bit beside a float32 u
    (the op reads it as is, no cast kernel); otherwise u's."""
    if du.dtype == u.dtype or (u.dtype == torch.float32 and du.dtype in (torch.bfloat16, torch.float16)):
        return du.dtype
    return u.dtype


class LeftSpinResidual(nn.Module):
    """One residual site: ``out = u + g*du`` with the left-spin gate g (docs/contract.md §4).

    u, du: [..., D] float32/bfloat16/float16 (same shape and device); out has u's dtype. A
    bfloat16/float16 du beside a float32 u (autocast's branch output beside a float32 residual
    stream) goes to the op as it is; any other du dtype is cast to u's first. Where du and the
    chain's du_prev differ in dtype, both are cast to u's. With a chain, the previous site's du
    and phi enter as du_prev and phi_prev, and this site's du and phi are stored for the next one. Without a chain (argument or constructor),
    the site uses no previous state. ``enabled=False`` gives the plain ``u + du`` and leaves
    the chain untouched. The gate is the same in train and eval mode. Hyperparameters: a
    ``LeftSpinParams`` (``params``) or the six scalars, defaults of docs/contract.md §4 (alpha 0.5, tau 0.3,
    beta 0.7, w1 1.0, w2 0.5, eps 1e-6).

    ``compiled_form`` picks what ``torch.compile`` traces: ``"decomposed"`` (default) the same
    math in torch operations (``apt_ext.left_spin.decomposed``), which inductor can fuse with the
    kernels around the site (measured faster in the compiled APT model: docs/left_spin.md);
    ``"op"`` the fused op, one opaque kernel.
    Eager calls always run the op.
    """

    def __init__(self, alpha: float = DEFAULTS.alpha, tau: float = DEFAULTS.tau, beta: float = DEFAULTS.beta,
                 w1: float = DEFAULTS.w1, w2: float = DEFAULTS.w2, eps: float = DEFAULTS.eps,
                 enabled: bool = True, chain: LeftSpinChain | None = None,
                 params: LeftSpinParams | None = None, compiled_form: str = "decomposed") -> None:
        super().__init__()
        if compiled_form not in COMPILED_FORMS:
            raise ValueError(f"compiled_form: expected one of {COMPILED_FORMS}, got {compiled_form!r}")
        self.compiled_form = compiled_form
        if params is not None and not isinstance(params, LeftSpinParams):
            raise TypeError(f"params: expected a LeftSpinParams or None, got {type(params).__name__}")
        _check_chain(chain)
        self.params = params if params is not None else LeftSpinParams(alpha, tau, beta, w1, w2, eps)
        self.enabled = bool(enabled)
        self.chain = chain

    def forward(self, u: torch.Tensor, du: torch.Tensor, chain: LeftSpinChain | None = None
                ) -> torch.Tensor:
        for name, t in (("u", u), ("du", du)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        _check_chain(chain)
        du = du.to(_branch_dtype(u, du))
        if not self.enabled:
            if du.shape != u.shape:  # (the op checks its own; the plain sum would broadcast)
                raise ValueError(f"du: expected the shape of u {list(u.shape)}, got {list(du.shape)}")
            return u + du
        chain = chain if chain is not None else self.chain
        du_prev = chain.du_prev if chain is not None else None
        if du_prev is not None and du_prev.dtype != du.dtype:  # e.g. a float32 site after a bf16 one
            du, du_prev = du.to(u.dtype), du_prev.to(u.dtype)
        phi_prev = chain.phi_prev if chain is not None else None
        if self.compiled_form == "decomposed" and torch.compiler.is_compiling():
            out, phi = left_spin_residual_decomposed(u, du, du_prev, phi_prev, self.params)
        else:
            out, phi = left_spin_residual(u, du, du_prev, phi_prev, params=self.params)
        if chain is not None:
            chain.du_prev, chain.phi_prev = du, phi
        return out

    def extra_repr(self) -> str:
        p = self.params
        return (f"alpha={p.alpha}, tau={p.tau}, beta={p.beta}, w1={p.w1}, w2={p.w2}, eps={p.eps}, "
                f"enabled={self.enabled}, compiled_form={self.compiled_form!r}")
