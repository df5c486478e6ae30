"""apt_ext.left_spin.decomposed: the left-spin math in torch operations (what torch.compile traces
at a site with compiled_form="decomposed"), against the reference and the op, its argument
checks, and the sites' and the model's switch to it while compiling."""
from __future__ import annotations

import pytest
import torch

from apt_ext.left_spin import LeftSpinParams, left_spin_residual
from apt_ext.left_spin.decomposed import left_spin_residual_decomposed
from apt_ext.model import APTModel, APTModelConfiguration
from apt_ext.nn import LeftSpinChain, LeftSpinResidual
from reference import left_spin as ref


def _forward(u, du, du_prev, phi_prev, *params):
    return left_spin_residual_decomposed(u, du, du_prev, phi_prev, LeftSpinParams(*params))


def _backward(grad_out, grad_phi, u, du, du_prev, phi_prev, *params):
    """Autograd's gradients of the decomposed form, laid out as the op's backward returns them."""
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None
              for t in (u, du, du_prev, phi_prev)]
    out, phi = _forward(*leaves, *params)
    live = [t for t in leaves if t is not None]
    grads = iter(torch.autograd.grad((out * grad_out).sum() + (phi * grad_phi).sum(), live))
    return [next(grads) if t is not None else u.new_empty(0) for t in leaves]


@pytest.mark.parametrize("dtype,du_dtype", [(torch.float32, None), (torch.float64, None), (torch.bfloat16, None),
                                            (torch.float32, torch.bfloat16), (torch.float32, torch.float16)])
@pytest.mark.parametrize("with_prev,with_phi", [(False, False), (True, False), (True, True)])
def test_matches_reference(rng, dtype, du_dtype, with_prev, with_phi):
    u, du, du_prev, phi_prev = ref.make_inputs((3, 5, 24), dtype, "cpu", with_prev, with_phi, rng,
                                               du_dtype=du_dtype)
    grad_out = torch.randn(u.shape, generator=rng).to(dtype)
    grad_phi = torch.randn(u.shape[:-1], generator=rng).to(ref.left_spin_phi_dtype(dtype))
    ref.check_kernel(_forward, _backward, u, du, du_prev, phi_prev, grad_out, grad_phi)


def test_matches_the_op_with_other_hyperparameters(rng):
    u, du, du_prev, phi_prev = ref.make_inputs((4, 32), torch.float32, "cpu", True, True, rng)
    p = LeftSpinParams(alpha=1.3, tau=0.05, beta=0.2, w1=0.6, w2=1.7, eps=1e-3)
    out, phi = left_spin_residual_decomposed(u, du, du_prev, phi_prev, p)
    op_out, op_phi = left_spin_residual(u, du, du_prev, phi_prev, params=p)
    torch.testing.assert_close(out, op_out)
    torch.testing.assert_close(phi, op_phi)


def test_bad_arguments_raise_the_ops_errors(rng):
    u = torch.randn(4, 8, generator=rng)
    with pytest.raises((TypeError, ValueError, RuntimeError), match="du"):
        left_spin_residual_decomposed(u, torch.randn(4, 9, generator=rng), None, None, LeftSpinParams())
    with pytest.raises((TypeError, ValueError, RuntimeError), match="du"):
        left_spin_residual_decomposed(u.bfloat16(), torch.randn(4, 8, generator=rng), None, None, LeftSpinParams())
    with pytest.raises((TypeError, ValueError, RuntimeError), match="phi_prev"):
        left_spin_residual_decomposed(u, torch.randn(4, 8, generator=rng), torch.randn(4, 8, generator=rng),
                                      torch.rand(5, generator=rng), LeftSpinParams())
    with pytest.raises(ValueError, match="compiled_form"):
        LeftSpinResidual(compiled_form="fused")
    with pytest.raises(ValueError, match="left_spin_compiled_form"):
        APTModelConfiguration(left_spin_compiled_form="triton")


class _Sites(torch.nn.Module):
    """Three chained sites over tanh branches: u float32, du in ``du_dtype``."""

    def __init__(self, d: int, du_dtype: torch.dtype, compiled_form: str) -> None:
        super().__init__()
        self.lins = torch.nn.ModuleList(torch.nn.Linear(d, d) for _ in range(3))
        self.sites = torch.nn.ModuleList(LeftSpinResidual(compiled_form=compiled_form) for _ in range(3))
        self.du_dtype = du_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chain = LeftSpinChain()
        for lin, site in zip(self.lins, self.sites):
            x = site(x, torch.tanh(lin(x)).to(self.du_dtype), chain)
        return x


@pytest.mark.parametrize("du_dtype", [torch.float32, torch.bfloat16])
def test_compiled_sites_trace_the_decomposed_form_and_match_eager(rng, left_spin_op_dtypes, du_dtype):
    """Compiled (inductor on the CPU, fullgraph), the sites call no op and match the eager sites,
    which call the op, in values and gradients."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = _Sites(16, du_dtype, "decomposed")
    x = torch.randn(2, 5, 16, generator=rng, requires_grad=True)
    # inductor keeps a fused value in float32 where eager rounds it to bf16 unless told to
    # emulate the rounding: with it, the two differ by float32 rounding alone
    with torch._inductor.config.patch(emulate_precision_casts=True):
        out = torch.compile(model, fullgraph=True)(x)
    assert left_spin_op_dtypes == []  # traced: no op call
    eager = model(x)
    assert len(left_spin_op_dtypes) == 3  # eager: the op at every site
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=1e-5)
    # grad_du is rounded to bf16 once in both, from float32 values that differ by rounding: one
    # bf16 step apart at most
    grad_tol = {"atol": 1e-5, "rtol": 1e-5} if du_dtype == torch.float32 else {"atol": 2e-2, "rtol": 1.6e-2}
    torch.testing.assert_close(torch.autograd.grad(out.square().sum(), x)[0],
                               torch.autograd.grad(eager.square().sum(), x)[0], **grad_tol)


def test_model_option_reaches_every_site():
    cfg = APTModelConfiguration(vocab_size=64, d_model=32, num_heads=2, d_ff=64, num_encoder_layers=0,
                                num_decoder_layers=2, decoder_only=True, max_seq_len=16,
                                left_spin_compiled_form="decomposed")
    sites = [m for m in APTModel(cfg).modules() if isinstance(m, LeftSpinResidual)]
    assert sites and all(s.compiled_form == "decomposed" for s in sites)
    assert "compiled_form='decomposed'" in repr(sites[0])
