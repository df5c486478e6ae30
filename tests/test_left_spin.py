"""apt::left_spin_residual and its backward on the CPU: against the reference, gradcheck,
opcheck, bad input and NaN rows."""
from __future__ import annotations

import pytest
import torch

from apt_ext.left_spin import left_spin_residual
from cpu_paths import supported_cpu_paths
from reference import left_spin as ref

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
# D: 1, below a vector, not a multiple of any vector width, a multiple, and a long row.
SHAPES = [(1, 1), (3, 7), (2, 5, 100), (4, 64), (1, 1000), (2, 16384)]


def _grads(gen, shape, dtype):
    go = torch.randn(shape, generator=gen).to(dtype)
    gphi = torch.randn(shape[:-1], generator=gen).to(ref.left_spin_phi_dtype(dtype))
    return go, gphi


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("with_prev,with_phi", [(False, False), (True, False), (True, True), (False, True)])
def test_forward_backward_match_reference(rng, dtype, shape, with_prev, with_phi):
    _check_against_reference(rng, dtype, shape, with_prev, with_phi)


@pytest.mark.parametrize("isa", supported_cpu_paths())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 7), (2, 1000)], ids=str)
def test_every_cpu_build_matches_reference(rng, monkeypatch, isa, dtype, shape):
    monkeypatch.setenv("APT_LEFT_SPIN_CPU_ISA", isa)
    _check_against_reference(rng, dtype, shape, True, True)
    _check_against_reference(rng, dtype, shape, False, False)


def test_unknown_cpu_build_is_rejected(monkeypatch):
    monkeypatch.setenv("APT_LEFT_SPIN_CPU_ISA", "sse9")
    with pytest.raises(ValueError, match="APT_LEFT_SPIN_CPU_ISA"):
        left_spin_residual(torch.randn(2, 4), torch.randn(2, 4))


def _check_against_reference(rng, dtype, shape, with_prev, with_phi, du_dtype=None):
    u, du, dp, pp = ref.make_inputs(shape, dtype, "cpu", with_prev, with_phi, rng, du_dtype=du_dtype)
    go, gphi = _grads(rng, shape, dtype)
    ref.check_kernel(left_spin_residual, torch.ops.apt.left_spin_residual_backward, u, du, dp, pp, go, gphi)


@pytest.mark.parametrize("isa", supported_cpu_paths())
@pytest.mark.parametrize("du_dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape", [(3, 7), (2, 5, 100), (2, 1000)], ids=str)
@pytest.mark.parametrize("with_prev,with_phi", [(False, False), (True, True)])
def test_16bit_du_beside_float32_u(rng, monkeypatch, isa, du_dtype, shape, with_prev, with_phi):
    """du / du_prev in bfloat16 or float16 beside a float32 u (a branch output under autocast):
    against the reference, and bit for bit the float32 call on the widened du / du_prev, with
    the gradients of du / du_prev rounded to du's dtype."""
    monkeypatch.setenv("APT_LEFT_SPIN_CPU_ISA", isa)
    _check_against_reference(rng, torch.float32, shape, with_prev, with_phi, du_dtype)
    u, du, dp, pp = ref.make_inputs(shape, torch.float32, "cpu", with_prev, with_phi, rng, du_dtype=du_dtype)
    wide = [t.float() if t is not None else None for t in (du, dp)]
    go, gphi = _grads(rng, shape, torch.float32)
    for a, b in zip(left_spin_residual(u, du, dp, pp), left_spin_residual(u, *wide, pp)):
        assert torch.equal(a, b)
    params = tuple(ref.DEFAULTS.values())
    grads = torch.ops.apt.left_spin_residual_backward(go, gphi, u, du, dp, pp, *params)
    wide_grads = torch.ops.apt.left_spin_residual_backward(go, gphi, u, *wide, pp, *params)
    for g, w in zip(grads, wide_grads):
        assert torch.equal(g, w.to(g.dtype))


def test_autograd_through_chain_matches_reference(rng):
    """Three chained sites: gradients flow through du_prev and phi_prev into earlier sites."""
    shape = (2, 3, 40)
    xs = [torch.randn(shape, generator=rng, dtype=torch.float64, requires_grad=True) for _ in range(4)]

    def run(fn):
        u, dus = xs[0], xs[1:]
        dp = pp = None
        for du in dus:
            u, phi = fn(u, du, dp, pp, alpha=0.8, tau=0.1, beta=0.6, w1=1.3, w2=0.7, eps=1e-5)
            dp, pp = du, phi
        loss = (u * u).sum() + (pp * 3).sum()
        return torch.autograd.grad(loss, xs)

    for g, rg in zip(run(left_spin_residual), run(ref.left_spin_residual)):
        torch.testing.assert_close(g, rg, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("with_prev,with_phi", [(False, False), (True, True), (True, False)])
def test_gradcheck_float64(rng, with_prev, with_phi):
    u, du, dp, pp = ref.make_inputs((3, 2, 9), torch.float64, "cpu", with_prev, with_phi, rng,
                                    requires_grad=True)
    args = (u, du, dp, pp, 0.9, 0.2, 0.6, 1.2, 0.8, 1e-6)
    assert torch.autograd.gradcheck(lambda *a: left_spin_residual(*a), args)


def test_gradient_at_zero_norm_is_finite():
    """||v|| at v = 0 has gradient 0 by definition: zero rows of u / du give finite gradients."""
    u = torch.zeros(2, 8, dtype=torch.float64, requires_grad=True)
    du = torch.zeros(2, 8, dtype=torch.float64, requires_grad=True)
    dp = torch.zeros(2, 8, dtype=torch.float64, requires_grad=True)
    out, phi = left_spin_residual(u, du, dp)
    (out.sum() + phi.sum()).backward()
    r = [t.detach().clone().requires_grad_(True) for t in (u, du, dp)]
    r_out, r_phi = ref.left_spin_residual(*r)
    (r_out.sum() + r_phi.sum()).backward()
    for t, rt in zip((u, du, dp), r):
        assert torch.isfinite(t.grad).all()
        torch.testing.assert_close(t.grad, rt.grad)


@pytest.mark.parametrize("dtype,du_dtype", [(torch.float32, None), (torch.bfloat16, None),
                                            (torch.float32, torch.bfloat16)], ids=str)
def test_opcheck_both_ops(rng, dtype, du_dtype):
    u, du, dp, pp = ref.make_inputs((2, 3, 24), dtype, "cpu", True, True, rng, requires_grad=True,
                                    du_dtype=du_dtype)
    params = tuple(ref.DEFAULTS.values())
    torch.library.opcheck(torch.ops.apt.left_spin_residual.default, (u, du, dp, pp, *params))
    torch.library.opcheck(torch.ops.apt.left_spin_residual.default, (u, du, None, None, *params))
    go, gphi = _grads(rng, (2, 3, 24), dtype)
    d = [t.detach() for t in (u, du, dp, pp)]
    torch.library.opcheck(torch.ops.apt.left_spin_residual_backward.default, (go, gphi, *d, *params))
    torch.library.opcheck(torch.ops.apt.left_spin_residual_backward.default,
                          (go, gphi, d[0], d[1], None, None, *params))


def test_non_contiguous_inputs(rng):
    u = torch.randn(6, 40, generator=rng)[:, ::2]
    du = torch.randn(20, 6, generator=rng).t()
    out, phi = left_spin_residual(u, du)
    r_out, r_phi = ref.left_spin_residual(u, du)
    torch.testing.assert_close(out, r_out)
    torch.testing.assert_close(phi, r_phi)


def test_empty_rows():
    out, phi = left_spin_residual(torch.randn(0, 3, 16), torch.randn(0, 3, 16))
    assert out.shape == (0, 3, 16) and phi.shape == (0, 3)


def test_nan_stays_in_its_row(rng):
    u, du, dp, pp = ref.make_inputs((4, 32), torch.float32, "cpu", True, True, rng)
    u[1, 3] = float("nan")
    du[2, 0] = float("nan")
    pp[3] = float("nan")
    out, phi = left_spin_residual(u, du, dp, pp)
    assert torch.isnan(out[1:]).all() and torch.isnan(phi[1:]).all()
    assert torch.isfinite(out[0]).all() and torch.isfinite(phi[0])
    r_out, _ = ref.left_spin_residual(u[:1], du[:1], dp[:1], pp[:1])
    torch.testing.assert_close(out[:1], r_out)


def _bad(u, du, dp=None, pp=None, **kw):
    params = {**ref.DEFAULTS, **kw}
    return left_spin_residual(u, du, dp, pp, **params)


@pytest.mark.parametrize("case,exc,match", [
    ("du_shape", ValueError, "du: expected the shape of u"),
    ("du_prev_shape", ValueError, "du_prev: expected the shape of u"),
    ("phi_prev_shape", ValueError, "phi_prev: expected shape"),
    ("int_dtype", TypeError, "u: expected float32"),
    ("du_dtype", TypeError, "du: expected the dtype of u"),
    ("du_wider", TypeError, "du: expected the dtype of u"),
    ("du_prev_dtype", TypeError, "du_prev: expected the dtype of du"),
    ("phi_int", TypeError, "phi_prev: expected a floating-point"),
    ("d_zero", ValueError, "last dimension D must be > 0"),
    ("scalar", ValueError, "at least 1 dimension"),
    ("eps", ValueError, "eps"),
    ("alpha", ValueError, "alpha"),
    ("meta_device", ValueError, "du: expected the device of u"),
])
def test_bad_input_raises_clearly(case, exc, match):
    u, du = torch.randn(3, 8), torch.randn(3, 8)
    args = {
        "du_shape": lambda: _bad(u, torch.randn(3, 9)),
        "du_prev_shape": lambda: _bad(u, du, torch.randn(2, 8)),
        "phi_prev_shape": lambda: _bad(u, du, None, torch.rand(3, 1)),
        "int_dtype": lambda: _bad(torch.ones(3, 8, dtype=torch.int32), torch.ones(3, 8, dtype=torch.int32)),
        "du_dtype": lambda: _bad(u.half(), du.bfloat16()),
        "du_wider": lambda: _bad(u.bfloat16(), du),
        "du_prev_dtype": lambda: _bad(u, du.bfloat16(), du.half()),
        "phi_int": lambda: _bad(u, du, None, torch.ones(3, dtype=torch.int64)),
        "d_zero": lambda: _bad(torch.randn(3, 0), torch.randn(3, 0)),
        "scalar": lambda: _bad(torch.tensor(1.0), torch.tensor(2.0)),
        "eps": lambda: _bad(u, du, eps=-1.0),
        "alpha": lambda: _bad(u, du, alpha=float("nan")),
        "meta_device": lambda: _bad(u, du.to("meta")),
    }[case]
    with pytest.raises(exc, match=match):
        args()


def test_backward_bad_grad_shape_raises():
    u, du = torch.randn(3, 8), torch.randn(3, 8)
    with pytest.raises(ValueError, match="grad_phi: expected shape"):
        torch.ops.apt.left_spin_residual_backward(torch.randn(3, 8), torch.randn(4), u, du, None, None,
                                                  *ref.DEFAULTS.values())


def test_inf_follows_the_reference(rng):
    """Inf follows IEEE arithmetic through the formulas exactly like the reference."""
    u, du = torch.randn(3, 6, generator=rng), torch.randn(3, 6, generator=rng)
    du[0, 1] = float("inf")
    u[1, 2] = float("inf")
    du[2, 0], u[2, 3] = float("-inf"), float("inf")
    out, phi = left_spin_residual(u, du)
    r_out, r_phi = ref.left_spin_residual(u, du)
    torch.testing.assert_close(out, r_out, equal_nan=True)
    torch.testing.assert_close(phi, r_phi, equal_nan=True)
    assert torch.isinf(phi[0]) and torch.isnan(out[0, 1]) and torch.isfinite(out[0, 2:]).all()


def test_double_backward_raises_clearly(rng):
    u, du, dp, pp = ref.make_inputs((3, 16), torch.float64, "cpu", True, True, rng, requires_grad=True)
    out, phi = left_spin_residual(u, du, dp, pp)
    (g,) = torch.autograd.grad((out * out).sum() + phi.sum(), u, create_graph=True)
    r = [t.detach().clone().requires_grad_(True) for t in (u, du, dp, pp)]
    r_out, r_phi = ref.left_spin_residual(*r)
    (rg,) = torch.autograd.grad((r_out * r_out).sum() + r_phi.sum(), r[0])
    torch.testing.assert_close(g, rg)  # first order under create_graph=True is right
    with pytest.raises(RuntimeError, match="double backward"):
        g.sum().backward()
