"""Triton kernels of apt::left_spin_residual and its backward (the GPU fallback).

Each program owns ROWS rows. A row of up to MAX_RESIDENT_D (8192) elements is loaded once as one
[ROWS, BLOCK_D] tile (BLOCK_D = next power of two >= D) and kept for the second pass; longer
rows are read twice in BLOCK_D chunks. Math in float32; same formulas and zero-norm
conventions as csrc/left_spin/left_spin_math.h (gradient of ||v|| at v = 0 is 0,
softplus(x) = x for x > 20).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from apt_ext import _native
from apt_ext.triton import kernel
from apt_ext.triton.host_math import cdiv, next_power_of_2
from apt_ext.triton.launch import Launcher

MAX_RESIDENT_D = 8192  # rows up to this length stay in registers between the two passes
LOOP_BLOCK_D = 4096     # chunk of the two-pass kernels


@triton.jit
def _softplus_and_slope(x):
    """softplus(x) (= x for x > 20, as torch) and its derivative sigmoid(x) (1 for x > 20)."""
    sp = tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x)))
    slope = 1.0 / (1.0 + tl.exp(-x))
    big = x > 20.0
    return tl.where(big, x, sp), tl.where(big, 1.0, slope)


@triton.jit
def _tile(row_off, rmask, c0, D, BLOCK_D: tl.constexpr):
    """Offsets and mask of columns [c0, c0 + BLOCK_D) of the program's rows."""
    col = c0 + tl.arange(0, BLOCK_D)
    return row_off[:, None] + col[None, :], rmask[:, None] & (col[None, :] < D)


@triton.jit
def _load(ptr, offs, m):
    return tl.load(ptr + offs, mask=m, other=0.0).to(tl.float32)


@triton.jit
def _load_tiles(u_ptr, du_ptr, dp_ptr, go_ptr, offs, m, HAS_PREV: tl.constexpr, WITH_GO: tl.constexpr):
    """u, du, du_prev and grad_out at one tile's offsets, in float32 (du stands in for the
    tensors that are absent or not asked for)."""
    u = _load(u_ptr, offs, m)
    du = _load(du_ptr, offs, m)
    p = du
    go = du
    if HAS_PREV:
        p = _load(dp_ptr, offs, m)
    if WITH_GO:
        go = _load(go_ptr, offs, m)
    return u, du, p, go


@triton.jit
def _chunk_sums(u, du, p, go, HAS_PREV: tl.constexpr, WITH_GO: tl.constexpr):
    """Row sums of one tile: |u|^2, |du|^2, |p|^2, |du - p|^2, <go, du> (0 where disabled)."""
    su = tl.sum(u * u, axis=1)
    sd = tl.sum(du * du, axis=1)
    sp = su * 0.0
    sf = su * 0.0
    sg = su * 0.0
    if HAS_PREV:
        f = du - p
        sp = tl.sum(p * p, axis=1)
        sf = tl.sum(f * f, axis=1)
    if WITH_GO:
        sg = tl.sum(go * du, axis=1)
    return su, sd, sp, sf, sg


@triton.jit
def _looped_sums(u_ptr, du_ptr, dp_ptr, go_ptr, row_off, rmask, D,
                 HAS_PREV: tl.constexpr, WITH_GO: tl.constexpr, ROWS: tl.constexpr,
                 BLOCK_D: tl.constexpr, N_CHUNKS: tl.constexpr):
    """_chunk_sums over a whole row too long for one tile, BLOCK_D columns at a time."""
    su = tl.zeros((ROWS,), tl.float32)
    sd = tl.zeros((ROWS,), tl.float32)
    sp = tl.zeros((ROWS,), tl.float32)
    sf = tl.zeros((ROWS,), tl.float32)
    sg = tl.zeros((ROWS,), tl.float32)
    for c in range(0, N_CHUNKS):
        offs, m = _tile(row_off, rmask, c * BLOCK_D, D, BLOCK_D)
        u, du, p, go = _load_tiles(u_ptr, du_ptr, dp_ptr, go_ptr, offs, m, HAS_PREV, WITH_GO)
        a, b, c, d, e = _chunk_sums(u, du, p, go, HAS_PREV, WITH_GO)
        su += a
        sd += b
        sp += c
        sf += d
        sg += e
    return su, sd, sp, sf, sg


@triton.jit
def _gate(su, sd, sp, sf, phi_prev, alpha, tau, beta, w1, w2, eps,
          HAS_PREV: tl.constexpr, HAS_PHI: tl.constexpr):
    """Per-row norms and the forward chain up to phi: returns the pieces backward needs."""
    nu = tl.sqrt(su)
    ndu = tl.sqrt(sd)
    inv_u = 1.0 / (eps + nu)
    d = ndu * inv_u
    ndp = tl.sqrt(sp)
    ndf = tl.sqrt(sf)
    inv_den = 1.0 / (eps + ndu + ndp)
    a = ndf * inv_den
    if HAS_PREV:
        x = w1 * d + w2 * a - tau
    else:
        x = w1 * d - tau
    sp_x, slope = _softplus_and_slope(x)
    phi = alpha * sp_x
    if HAS_PHI:
        phi = beta * phi_prev + (1.0 - beta) * phi
    g = 1.0 / tl.sqrt(1.0 + phi * phi)
    return nu, ndu, ndp, ndf, inv_u, inv_den, d, a, slope, phi, g


@triton.jit
def _forward_kernel(u_ptr, du_ptr, dp_ptr, pp_ptr, out_ptr, phi_ptr, rows, D,
                    alpha, tau, beta, w1, w2, eps,
                    HAS_PREV: tl.constexpr, HAS_PHI: tl.constexpr, RESIDENT: tl.constexpr,
                    ROWS: tl.constexpr, BLOCK_D: tl.constexpr, N_CHUNKS: tl.constexpr):
    r = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    rmask = r < rows
    row_off = r.to(tl.int64) * D
    if RESIDENT:  # one tile holds the whole row: read once, reuse for the output
        offs, m = _tile(row_off, rmask, 0, D, BLOCK_D)
        u, du, p, _ = _load_tiles(u_ptr, du_ptr, dp_ptr, u_ptr, offs, m, HAS_PREV, False)
        su, sd, sp, sf, _ = _chunk_sums(u, du, p, du, HAS_PREV, False)
    else:
        su, sd, sp, sf, _ = _looped_sums(u_ptr, du_ptr, dp_ptr, u_ptr, row_off, rmask, D,
                                         HAS_PREV, False, ROWS, BLOCK_D, N_CHUNKS)
    phi_prev = su * 0.0
    if HAS_PHI:
        phi_prev = tl.load(pp_ptr + r, mask=rmask, other=0.0)
    _, _, _, _, _, _, _, _, _, phi, g = _gate(su, sd, sp, sf, phi_prev, alpha, tau, beta, w1,
                                              w2, eps, HAS_PREV, HAS_PHI)
    tl.store(phi_ptr + r, phi, mask=rmask)
    if RESIDENT:
        tl.store(out_ptr + offs, (u + g[:, None] * du).to(out_ptr.dtype.element_ty), mask=m)
    else:
        for c in range(0, N_CHUNKS):
            offs, m = _tile(row_off, rmask, c * BLOCK_D, D, BLOCK_D)
            u, du, unused_p, unused_go = _load_tiles(u_ptr, du_ptr, dp_ptr, u_ptr, offs, m, False, False)
            tl.store(out_ptr + offs, (u + g[:, None] * du).to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _write_grads(gu_ptr, gdu_ptr, gdp_ptr, offs, m, u, du, p, go, g, cu, cdu, cp, cdf,
                 HAS_PREV: tl.constexpr):
    """grad_u, grad_du, grad_du_prev of one tile from the per-row coefficients."""
    tl.store(gu_ptr + offs, (go + cu[:, None] * u).to(gu_ptr.dtype.element_ty), mask=m)
    gdu = g[:, None] * go + cdu[:, None] * du
    if HAS_PREV:
        f = du - p
        gdu += cdf[:, None] * f
        gdp = cp[:, None] * p - cdf[:, None] * f
        tl.store(gdp_ptr + offs, gdp.to(gdp_ptr.dtype.element_ty), mask=m)
    tl.store(gdu_ptr + offs, gdu.to(gdu_ptr.dtype.element_ty), mask=m)


@triton.jit
def _backward_kernel(go_ptr, gphi_ptr, u_ptr, du_ptr, dp_ptr, pp_ptr,
                     gu_ptr, gdu_ptr, gdp_ptr, gpp_ptr, rows, D,
                     alpha, tau, beta, w1, w2, eps,
                     HAS_PREV: tl.constexpr, HAS_PHI: tl.constexpr, RESIDENT: tl.constexpr,
                     ROWS: tl.constexpr, BLOCK_D: tl.constexpr, N_CHUNKS: tl.constexpr):
    r = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    rmask = r < rows
    row_off = r.to(tl.int64) * D
    if RESIDENT:
        offs, m = _tile(row_off, rmask, 0, D, BLOCK_D)
        u, du, p, go = _load_tiles(u_ptr, du_ptr, dp_ptr, go_ptr, offs, m, HAS_PREV, True)
        su, sd, sp, sf, sg = _chunk_sums(u, du, p, go, HAS_PREV, True)
    else:
        su, sd, sp, sf, sg = _looped_sums(u_ptr, du_ptr, dp_ptr, go_ptr, row_off, rmask, D,
                                          HAS_PREV, True, ROWS, BLOCK_D, N_CHUNKS)
    phi_prev = su * 0.0
    if HAS_PHI:
        phi_prev = tl.load(pp_ptr + r, mask=rmask, other=0.0)
    nu, ndu, ndp, ndf, inv_u, inv_den, d, a, slope, phi, g = _gate(
        su, sd, sp, sf, phi_prev, alpha, tau, beta, w1, w2, eps, HAS_PREV, HAS_PHI)
    # dL/dphi: direct (phi feeds the next site) plus through g (dg/dphi = -phi g^3).
    dphi = tl.load(gphi_ptr + r, mask=rmask, other=0.0) - sg * phi * g * g * g
    if HAS_PHI:
        tl.store(gpp_ptr + r, beta * dphi, mask=rmask)
        dphi = (1.0 - beta) * dphi
    ds = dphi * alpha * slope
    dndu = w1 * ds * inv_u
    if HAS_PREV:
        dndu -= w2 * ds * a * inv_den
    # d||v||/dv = v/||v||, and 0 at v = 0.
    cu = tl.where(nu > 0.0, -w1 * ds * d * inv_u / tl.where(nu > 0.0, nu, 1.0), 0.0)
    cdu = tl.where(ndu > 0.0, dndu / tl.where(ndu > 0.0, ndu, 1.0), 0.0)
    cp = tl.where(ndp > 0.0, -w2 * ds * a * inv_den / tl.where(ndp > 0.0, ndp, 1.0), 0.0)
    cdf = tl.where(ndf > 0.0, w2 * ds * inv_den / tl.where(ndf > 0.0, ndf, 1.0), 0.0)
    if RESIDENT:
        _write_grads(gu_ptr, gdu_ptr, gdp_ptr, offs, m, u, du, p, go, g, cu, cdu, cp, cdf, HAS_PREV)
    else:
        for c in range(0, N_CHUNKS):
            offs, m = _tile(row_off, rmask, c * BLOCK_D, D, BLOCK_D)
            u, du, p, go = _load_tiles(u_ptr, du_ptr, dp_ptr, go_ptr, offs, m, HAS_PREV, True)
            _write_grads(gu_ptr, gdu_ptr, gdp_ptr, offs, m, u, du, p, go, g, cu, cdu, cp, cdf,
                         HAS_PREV)


_FORWARD, _BACKWARD = Launcher(_forward_kernel), Launcher(_backward_kernel)


def _launch_config(D: int, rows: int, backward: bool) -> tuple[tuple[int], dict, int]:
    """(grid, tile constexprs, num_warps) for rows of length D: about 16 (forward) or 8 (backward)
    elements per thread and tensor, so that the resident tile stays in registers without spilling."""
    resident = D <= MAX_RESIDENT_D
    block_d = next_power_of_2(D) if resident else LOOP_BLOCK_D
    n_rows = max(1, min(16, 2048 // block_d))
    per_thread = 8 if backward else 16
    warps = max(4, min(16, n_rows * block_d // (32 * per_thread)))
    return (cdiv(rows, n_rows),), dict(RESIDENT=resident, ROWS=n_rows, BLOCK_D=block_d, N_CHUNKS=cdiv(D, block_d)), \
        warps


def _prepare(u, du, du_prev, phi_prev, params):
    _native._C.left_spin.check(u, du, du_prev, phi_prev, *params, allow_double=False)  # the native checks
    D = u.shape[-1]
    u_c, du_c = u.contiguous(), du.contiguous()
    dp_c = du_prev.contiguous() if du_prev is not None else None
    pp_c = phi_prev.to(torch.float32).contiguous() if phi_prev is not None else None
    return u_c, du_c, dp_c, pp_c, D, u.numel() // D


@kernel("left_spin_residual")
def left_spin_residual(u: torch.Tensor, du: torch.Tensor, du_prev: torch.Tensor | None,
                       phi_prev: torch.Tensor | None, alpha: float, tau: float, beta: float,
                       w1: float, w2: float, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton implementation of apt::left_spin_residual (same schema and results)."""
    params = (alpha, tau, beta, w1, w2, eps)
    u_c, du_c, dp_c, pp_c, D, rows = _prepare(u, du, du_prev, phi_prev, params)
    out = torch.empty_like(u_c)
    phi = torch.empty(u.shape[:-1], dtype=torch.float32, device=u.device)
    if rows == 0:
        return out, phi
    grid, constexprs, warps = _launch_config(D, rows, backward=False)
    _FORWARD(grid, (u_c, du_c, dp_c if dp_c is not None else u_c, pp_c if pp_c is not None else phi,
                    out, phi, rows, D, *params),
             dict(HAS_PREV=dp_c is not None, HAS_PHI=pp_c is not None, **constexprs), num_warps=warps)
    return out, phi


@kernel("left_spin_residual_backward")
def left_spin_residual_backward(grad_out: torch.Tensor, grad_phi: torch.Tensor, u: torch.Tensor,
                                du: torch.Tensor, du_prev: torch.Tensor | None,
                                phi_prev: torch.Tensor | None, alpha: float, tau: float,
                                beta: float, w1: float, w2: float, eps: float
                                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton implementation of apt::left_spin_residual_backward (same schema and results)."""
    params = (alpha, tau, beta, w1, w2, eps)
    u_c, du_c, dp_c, pp_c, D, rows = _prepare(u, du, du_prev, phi_prev, params)
    _native._C.left_spin.check_grads(u, grad_out, grad_phi)
    go = grad_out.to(u.dtype).contiguous()
    gphi = grad_phi.to(torch.float32).contiguous()
    grad_u, grad_du = torch.empty_like(u_c), torch.empty_like(du_c)
    grad_dp = torch.empty_like(dp_c) if dp_c is not None else u.new_empty((0,))
    grad_pp = torch.empty_like(pp_c) if pp_c is not None else u.new_empty((0,), dtype=torch.float32)
    if rows > 0:
        grid, constexprs, warps = _launch_config(D, rows, backward=True)
        _BACKWARD(grid, (go, gphi, u_c, du_c, dp_c if dp_c is not None else u_c,
                         pp_c if pp_c is not None else gphi, grad_u, grad_du,
                         grad_dp if dp_c is not None else grad_u, grad_pp if pp_c is not None else gphi,
                         rows, D, *params),
                  dict(HAS_PREV=dp_c is not None, HAS_PHI=pp_c is not None, **constexprs), num_warps=warps)
    if phi_prev is not None:
        grad_pp = grad_pp.to(phi_prev.dtype)
    return grad_u, grad_du, grad_dp, grad_pp
