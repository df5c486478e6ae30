"""The left-spin residual written in torch operations, for ``torch.compile`` to fuse.

Inductor cannot fuse through the custom op ``apt::left_spin_residual``: in a compiled training
step the op reads u, du and du_prev and writes out, then the next kernel (a layer norm) reads
out again. Written in torch operations, the same math (docs/contract.md §4) is one more
reduction over each row that inductor can merge with its neighbours' kernels (the backward
likewise). Eagerly it runs
several kernels per call where the op runs one; ``LeftSpinResidual(compiled_form="decomposed")``
uses it only while compiling.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from apt_ext.left_spin._ops import check_arguments, phi_dtype
from apt_ext.left_spin.params import LeftSpinParams


def left_spin_residual_decomposed(u: torch.Tensor, du: torch.Tensor, du_prev: torch.Tensor | None,
                                  phi_prev: torch.Tensor | None, params: LeftSpinParams
                                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [..., D] in u's dtype, phi [...] float32, float64 for float64 u), as
    ``torch.ops.apt.left_spin_residual`` returns them and with its argument checks (same
    shapes and dtypes accepted, same errors). Norms and gate in float32 (float64 for float64
    u); the gradient of a norm at a zero row is 0, as in the kernels. Differentiable through a
    written-out backward (also made of torch operations, so twice differentiable); only the
    inputs are kept for it."""
    if torch.compiler.is_compiling():
        # the op's fake kernel runs the native checks on the traced shapes and dtypes; its
        # result is unused, so the compiled graph drops the call (no kernel at run time)
        torch.ops.apt.left_spin_residual(u, du, du_prev, phi_prev, *params.as_tuple())
    else:
        check_arguments(u, du, du_prev, phi_prev, params.as_tuple())
    return _DecomposedLeftSpin.apply(u, du, du_prev, phi_prev, params)


# Whether the forward saves the per-row norms for the backward (True) or the backward takes
# them again from the inputs (False: the form before the thirty-second session, kept for
# benchmarks/model_throughput.py's A/B variant "left-spin-recompute-norms").
_SAVE_NORMS = True


def _row_norm(v: torch.Tensor, recompute: bool = False) -> torch.Tensor:
    """||v|| over the last dimension. recompute: the backward's form (sqrt of a sum of squares),
    different from the forward's so that tracing does not merge the two (see
    _DecomposedLeftSpin)."""
    return torch.sqrt(torch.sum(v * v, dim=-1)) if recompute else torch.linalg.vector_norm(v, dim=-1)


def _norms(u: torch.Tensor, du: torch.Tensor, du_prev: torch.Tensor | None, recompute: bool = False):
    """Per row: (||u||, ||du||, ||du - du_prev||, ||du_prev||), the last two None without
    du_prev; inputs already in the accumulation dtype."""
    nu, ndu = _row_norm(u, recompute), _row_norm(du, recompute)
    if du_prev is None:
        return nu, ndu, None, None
    # the backward's difference as an add with alpha -1, not merged with the forward's (which
    # would be saved, a full-size tensor)
    diff = torch.add(du, du_prev, alpha=-1.0) if recompute else du - du_prev
    return nu, ndu, _row_norm(diff, recompute), _row_norm(du_prev, recompute)


def _phi_score(nu: torch.Tensor, ndu: torch.Tensor, nd: torch.Tensor | None, ndp: torch.Tensor | None,
               phi_prev: torch.Tensor | None, params: LeftSpinParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: (phi, score) from the norms of :func:`_norms`."""
    alpha, tau, beta, w1, w2, eps = params.as_tuple()
    score = w1 * ndu / (eps + nu)
    if nd is not None:
        score = score + w2 * nd / (eps + ndu + ndp)
    phi = alpha * F.softplus(score - tau)
    if phi_prev is not None:
        phi = beta * phi_prev + (1.0 - beta) * phi
    return phi, score


def _per_norm(d: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """d / norm per row, 0 where the norm is 0: the coefficient of v in d * d||v||/dv (the
    norm's gradient v / ||v||, taken as 0 at a zero row), [..., 1] to scale rows of v."""
    safe = torch.where(norm == 0, torch.ones_like(norm), norm)
    return torch.where(norm == 0, torch.zeros_like(d), d / safe).unsqueeze(-1)


class _DecomposedLeftSpin(torch.autograd.Function):
    """The math of docs/contract.md §4 in torch operations, with its backward written out.

    The inputs and the four per-row norms are saved, no full-size intermediate (autograd's own
    graph of the forward saved one per site). Until the thirty-second session the backward
    recomputed the norms from the inputs: in the compiled step that took reduction kernels of
    their own (on the H200, 24 launches and 0.178 ms a step for ||u|| and ||du|| alone,
    docs/left_spin.md). Earlier, inductor's fused kernel that stored norms failed to compile with
    Triton 3.6 ("operand does not dominate this use"); the kernels of this form compile with it
    (tools/inductor_cuda_kernels.py with the device's Triton).

    The casts of the output, of the gradients and of u and du copy (``copy=True``; compiled, the
    copies fuse away). With float32 inputs (a float32 residual stream, as under bf16 autocast)
    plain casts are no-ops, and on an H100 with torch 2.11 dynamo's trace of this Function then
    gave every input a wrong gradient (relative error about 1.0; under dynamo's eager backend too,
    so the trace, not inductor), while the outputs stayed right; with these casts copying, all
    matched the op within 3e-7 (twenty-seventh session; copying only the casts to the
    accumulation dtype did not fix it). The CPU with torch 2.13 was right either way, so the GPU
    test (tests/gpu/test_model_gpu.py::test_compiled_step_gradients_match_eager) is the one that
    catches it."""

    @staticmethod
    def forward(ctx, u, du, du_prev, phi_prev, params):
        acc = phi_dtype(u)
        u_acc, du_acc = u.to(acc, copy=True), du.to(acc, copy=True)
        prev = du_prev.to(acc) if du_prev is not None else None
        pp = phi_prev.to(acc) if phi_prev is not None else None
        norms = _norms(u_acc, du_acc, prev)
        phi = _phi_score(*norms, pp, params)[0]
        gate = torch.rsqrt(1.0 + phi * phi)
        # the per-row norms too (one value per row each): the backward then needs no reduction
        # over u and du of its own (except under create_graph, below)
        ctx.save_for_backward(u, du, du_prev, phi_prev, *(norms if _SAVE_NORMS else ()))
        ctx.params = params
        return torch.addcmul(u_acc, gate.unsqueeze(-1), du_acc).to(u.dtype, copy=True), phi

    @staticmethod
    def backward(ctx, grad_out, grad_phi):
        u, du, du_prev, phi_prev, *norms = ctx.saved_tensors
        alpha, tau, beta, w1, w2, eps = ctx.params.as_tuple()
        acc = phi_dtype(u)
        u_acc, du_acc = u.to(acc, copy=True), du.to(acc, copy=True)
        prev = du_prev.to(acc) if du_prev is not None else None
        pp = phi_prev.to(acc) if phi_prev is not None else None
        if torch.is_grad_enabled() or not norms:
            # create_graph (a gradient of this gradient): the saved norms carry no graph back to
            # the inputs, so take them again from the inputs (and where none were saved)
            norms = _norms(u_acc, du_acc, prev, recompute=True)
        nu, ndu, nd, ndp = norms
        phi, score = _phi_score(nu, ndu, nd, ndp, pp, ctx.params)
        go = grad_out.to(acc)
        gate = torch.rsqrt(1.0 + phi * phi)
        # out = u + gate * du; phi's total gradient, then through softplus to the score
        d_phi = grad_phi.to(acc) - torch.sum(go * du_acc, dim=-1) * phi * gate * gate * gate
        d_score = d_phi * (1.0 - beta if phi_prev is not None else 1.0) * alpha * torch.sigmoid(score - tau)
        spread_u = eps + nu
        d_nu = -d_score * w1 * ndu / (spread_u * spread_u)
        d_ndu = d_score * w1 / spread_u
        # Each gradient is written as its own combination of the inputs with per-row
        # coefficients (the norms' gradients d * v / ||v||), so no full-size term is shared
        # between two gradients: inductor stored such a term (d_nd * (du - du_prev) / ||du -
        # du_prev||, float32) for the second one to read back, 2 x 4 bytes a value per site
        # (tools/inductor_cuda_kernels.py, twenty-ninth session).
        grad_du_prev = None
        if prev is None:
            grad_du = gate.unsqueeze(-1) * go + _per_norm(d_ndu, ndu) * du_acc
        else:
            spread = eps + ndu + ndp
            d_nd = d_score * w2 / spread
            d_spread = -d_score * w2 * nd / (spread * spread)
            c_diff = _per_norm(d_nd, nd)  # d_nd * diff / ||diff||, diff = du - du_prev
            c_du = _per_norm(d_ndu + d_spread, ndu) + c_diff
            grad_du = gate.unsqueeze(-1) * go + c_du * du_acc - c_diff * prev
            grad_du_prev = (_per_norm(d_spread, ndp) + c_diff) * prev - c_diff * du_acc
            grad_du_prev = grad_du_prev.to(du_prev.dtype, copy=True)
        grad_u = (go + _per_norm(d_nu, nu) * u_acc).to(u.dtype, copy=True)
        grad_du = grad_du.to(du.dtype, copy=True)
        grad_phi_prev = (beta * d_phi).to(phi_prev.dtype, copy=True) if phi_prev is not None else None
        return grad_u, grad_du, grad_du_prev, grad_phi_prev, None
