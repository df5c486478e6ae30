"""apt_ext.nn.LeftSpinResidual / LeftSpinChain: chaining, per-forward reset, eval mode,
enabled=False, and torch.compile(fullgraph=True) with either compiled form."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from apt_ext.nn import LeftSpinChain, LeftSpinResidual
from reference import left_spin as ref


class TinyStack(nn.Module):
    """``n_sites`` residual sites (two blocks of two by default) over tanh branches, chained
    through the whole stack; the branches in ``du_dtype`` when given."""

    def __init__(self, d: int, n_sites: int = 4, du_dtype: torch.dtype | None = None, **kw) -> None:
        super().__init__()
        self.lins = nn.ModuleList(nn.Linear(d, d) for _ in range(n_sites))
        self.sites = nn.ModuleList(LeftSpinResidual(**kw) for _ in range(n_sites))
        self.du_dtype = du_dtype

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chain = LeftSpinChain()
        for lin, site in zip(self.lins, self.sites):
            du = torch.tanh(lin(x))
            x = site(x, du if self.du_dtype is None else du.to(self.du_dtype), chain)
        return x, chain.phi_prev


def _reference_stack(model: TinyStack, x: torch.Tensor, **kw):
    dp = pp = None
    for lin in model.lins:
        du = torch.tanh(lin(x))
        x, pp = ref.left_spin_residual(x, du, dp, pp, **{**ref.DEFAULTS, **kw})
        dp = du
    return x, pp


def test_chain_matches_reference_and_resets_per_forward(rng):
    torch.manual_seed(0)
    model = TinyStack(16)
    x = torch.randn(2, 5, 16, generator=rng)
    out1, phi1 = model(x)
    out2, phi2 = model(x)  # no state carried over from the first call
    r_out, r_phi = _reference_stack(model, x)
    torch.testing.assert_close(out1, r_out)
    torch.testing.assert_close(phi1, r_phi)
    torch.testing.assert_close(out2, out1, rtol=0, atol=0)


def test_gate_active_in_eval_and_gradients_reach_all_sites(rng):
    model = TinyStack(8)
    x = torch.randn(3, 8, generator=rng)
    train_out, _ = model.train()(x)
    eval_out, _ = model.eval()(x)
    torch.testing.assert_close(train_out, eval_out, rtol=0, atol=0)
    plain = x
    for lin in model.lins:
        plain = plain + torch.tanh(lin(plain))
    assert not torch.allclose(eval_out, plain)  # the gate really acts in eval
    out, phi = model(x)
    (out.sum() + phi.sum()).backward()
    assert all(lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0 for lin in model.lins)


def test_disabled_is_plain_residual(rng):
    site = LeftSpinResidual(enabled=False)
    chain = LeftSpinChain()
    u, du = torch.randn(4, 8, generator=rng), torch.randn(4, 8, generator=rng)
    torch.testing.assert_close(site(u, du, chain), u + du)
    assert chain.du_prev is None and chain.phi_prev is None


def test_hyperparameters_take_effect(rng):
    u, du = torch.randn(4, 8, generator=rng), torch.randn(4, 8, generator=rng)
    a = LeftSpinResidual()(u, du)
    b = LeftSpinResidual(alpha=2.0, tau=-0.5)(u, du)
    r, _ = ref.left_spin_residual(u, du, alpha=2.0, tau=-0.5)
    torch.testing.assert_close(b, r)
    assert not torch.allclose(a, b)


def test_shared_chain_attached_to_model_resets_each_call(rng):
    chain = LeftSpinChain()

    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(8, 8)
            self.sites = nn.ModuleList(LeftSpinResidual(chain=chain) for _ in range(3))

        def forward(self, x):
            for site in self.sites:
                x = site(x, self.lin(x))
            return x

    model = Plain()
    handle = chain.attach(model)
    x = torch.randn(2, 8, generator=rng)
    first = model(x)
    torch.testing.assert_close(model(x), first, rtol=0, atol=0)
    handle.remove()
    assert not torch.allclose(model(x), first)  # without the reset the state leaks


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="eps"):
        LeftSpinResidual(eps=-1.0)
    with pytest.raises(ValueError, match="beta"):
        LeftSpinResidual(beta=float("inf"))
    with pytest.raises(TypeError, match="chain"):
        LeftSpinResidual(chain=object())


def test_bad_forward_arguments(rng):
    """Non-tensors and a bad chain are named (not an AttributeError inside); with enabled=False a du
    of another shape is refused as the op refuses it, not broadcast by the plain sum."""
    u = torch.randn(3, 8, generator=rng)
    site = LeftSpinResidual()
    with pytest.raises(TypeError, match="u: expected a torch.Tensor"):
        site(None, u)
    with pytest.raises(TypeError, match="du: expected a torch.Tensor"):
        site(u, [1.0])
    with pytest.raises(TypeError, match="chain: expected a LeftSpinChain or None"):
        site(u, u, 3)
    for s in (site, LeftSpinResidual(enabled=False)):
        with pytest.raises(ValueError, match=r"du: expected the shape of u \[3, 8\]"):
            s(u, u[0])
    with pytest.raises(TypeError, match="model: expected an nn.Module"):
        LeftSpinChain().attach(None)


def test_torch_compile_fullgraph_forward_backward(rng):
    torch._dynamo.reset()
    model = TinyStack(16)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 3, 16, generator=rng, requires_grad=True)
    out, phi = compiled(x)
    e_out, e_phi = model(x)
    torch.testing.assert_close(out, e_out)
    torch.testing.assert_close(phi, e_phi)
    g = torch.autograd.grad((out.sum() + phi.sum()), x)[0]
    ge = torch.autograd.grad((e_out.sum() + e_phi.sum()), x)[0]
    torch.testing.assert_close(g, ge)


def test_16bit_branch_beside_float32_stream_reaches_the_op_uncast(left_spin_op_dtypes, rng):
    """A bf16 du beside a float32 u (autocast's residual site) goes to the op as bf16; its
    gradient comes back in bf16; out is float32 and matches the reference on the bf16 values."""
    u = torch.randn(2, 3, 16, generator=rng, requires_grad=True)
    dus = [torch.randn(2, 3, 16, generator=rng).bfloat16().requires_grad_(True) for _ in range(2)]
    chain = LeftSpinChain()
    site = LeftSpinResidual()
    out = site(site(u, dus[0], chain), dus[1], chain)
    assert left_spin_op_dtypes == [(torch.float32, torch.bfloat16, None), (torch.float32, torch.bfloat16, torch.bfloat16)]
    assert out.dtype == torch.float32
    r1, p1 = ref.left_spin_residual(u, dus[0].float())
    r2, _ = ref.left_spin_residual(r1, dus[1].float(), dus[0].float(), p1)
    torch.testing.assert_close(out, r2)
    out.sum().backward()
    assert all(d.grad is not None and d.grad.dtype == torch.bfloat16 for d in dus)


@pytest.mark.parametrize("u_dtype,du_dtype,prev_dtype,expect", [
    (torch.bfloat16, torch.float32, None, (torch.bfloat16, torch.bfloat16, None)),   # du cast to u's
    (torch.float32, torch.bfloat16, torch.float32, (torch.float32, torch.float32, torch.float32)),
    (torch.float32, torch.float32, torch.bfloat16, (torch.float32, torch.float32, torch.float32)),
])
def test_site_casts_what_the_op_cannot_take(left_spin_op_dtypes, rng, u_dtype, du_dtype, prev_dtype, expect):
    chain = LeftSpinChain()
    if prev_dtype is not None:
        chain.du_prev = torch.randn(4, 8, generator=rng).to(prev_dtype)
        chain.phi_prev = torch.rand(4, generator=rng)
    out = LeftSpinResidual()(torch.randn(4, 8, generator=rng).to(u_dtype),
                             torch.randn(4, 8, generator=rng).to(du_dtype), chain)
    assert left_spin_op_dtypes == [expect] and out.dtype == u_dtype
    disabled = LeftSpinResidual(enabled=False)(torch.randn(4, 8).to(u_dtype), torch.randn(4, 8).to(du_dtype))
    assert disabled.dtype == u_dtype


@pytest.mark.parametrize("du_dtype", [torch.float32, torch.bfloat16])
def test_compiled_sites_trace_the_decomposed_form_and_match_eager(rng, left_spin_op_dtypes, du_dtype):
    """Compiled (inductor on the CPU, fullgraph), the sites call no op and match the eager sites,
    which call the op, in values and gradients."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = TinyStack(16, n_sites=3, du_dtype=du_dtype, compiled_form="decomposed")
    x = torch.randn(2, 5, 16, generator=rng, requires_grad=True)
    # inductor keeps a fused value in float32 where eager rounds it to bf16 unless told to
    # emulate the rounding: with it, the two differ by float32 rounding alone
    with torch._inductor.config.patch(emulate_precision_casts=True):
        out, _ = torch.compile(model, fullgraph=True)(x)
    assert left_spin_op_dtypes == []  # traced: no op call
    eager, _ = model(x)
    assert len(left_spin_op_dtypes) == 3  # eager: the op at every site
    # with bf16 branches, a branch value whose float32 form differs by rounding between the
    # compiled and the eager linear can round to the neighbouring bf16 value: out = u + g*du then
    # moves by g times one bf16 step of |du| < 1 (tanh), at most 2^-8 per site, carried on through
    # the later sites' residual stream
    out_tol = {"atol": 1e-5, "rtol": 1e-5} if du_dtype == torch.float32 else {"atol": 3 * 2.0 ** -8, "rtol": 1e-5}
    torch.testing.assert_close(out, eager, **out_tol)
    # grad_du is rounded to bf16 once in both, from float32 values that differ by rounding: one
    # bf16 step apart at most
    grad_tol = {"atol": 1e-5, "rtol": 1e-5} if du_dtype == torch.float32 else {"atol": 2e-2, "rtol": 1.6e-2}
    torch.testing.assert_close(torch.autograd.grad(out.square().sum(), x)[0],
                               torch.autograd.grad(eager.square().sum(), x)[0], **grad_tol)
