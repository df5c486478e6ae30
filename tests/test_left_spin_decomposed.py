"""apt_ext.left_spin.decomposed: the left-spin math in torch operations (what torch.compile traces
at a site with compiled_form="decomposed"), against the reference and the op, its argument
checks, and the model's option (compiled sites: tests/test_left_spin_nn.py)."""
from __future__ import annotations

import pytest
import torch

from apt_ext.left_spin import LeftSpinParams, left_spin_residual
from apt_ext.left_spin import decomposed
from apt_ext.left_spin.decomposed import left_spin_residual_decomposed
from apt_ext.model import APTModel, APTModelConfiguration
from apt_ext.nn import LeftSpinResidual
from reference import left_spin as ref


def _forward(u, du, du_prev, phi_prev, *params):
    return left_spin_residual_decomposed(u, du, du_prev, phi_prev, LeftSpinParams(*params))


def _backward(grad_out, grad_phi, u, du, du_prev, phi_prev, *params):
    """Autograd's gradients of the decomposed form, laid out as the op's backward returns them."""
    _, _, grads = ref.forward_backward(u, du, du_prev, phi_prev, grad_out, grad_phi,
                                       fn=lambda *t: _forward(*t, *params))
    return [g if g is not None else u.new_empty(0) for g in grads]


@pytest.mark.parametrize("save_norms", [True, False])  # False: the backward takes the norms again (A/B form)
@pytest.mark.parametrize("dtype,du_dtype", [(torch.float32, None), (torch.float64, None), (torch.bfloat16, None),
                                            (torch.float32, torch.bfloat16), (torch.float32, torch.float16)])
@pytest.mark.parametrize("with_prev,with_phi", [(False, False), (True, False), (True, True)])
def test_matches_reference(rng, monkeypatch, save_norms, dtype, du_dtype, with_prev, with_phi):
    monkeypatch.setattr(decomposed, "_SAVE_NORMS", save_norms)
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


def test_model_option_reaches_every_site():
    cfg = APTModelConfiguration(vocab_size=64, d_model=32, num_heads=2, d_ff=64, num_encoder_layers=0,
                                num_decoder_layers=2, decoder_only=True, max_seq_len=16,
                                left_spin_compiled_form="decomposed")
    sites = [m for m in APTModel(cfg).modules() if isinstance(m, LeftSpinResidual)]
    assert sites and all(s.compiled_form == "decomposed" for s in sites)
    assert "compiled_form='decomposed'" in repr(sites[0])


def test_compiled_forward_saves_its_inputs_and_row_norms_only(rng):
    """Partitioned as inductor partitions it (min-cut, inductor's decompositions), the compiled
    forward hands the backward its inputs and the four per-row norms: no full-size intermediate."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.partitioners import min_cut_rematerialization_partition
    from torch._inductor.decomposition import select_decomp_table

    saved = []

    def forward_compiler(gm, example_inputs):
        inputs = {n for n in gm.graph.nodes if n.op == "placeholder"}
        outputs = next(n for n in gm.graph.nodes if n.op == "output").args[0]
        saved.append([tuple(o.meta["val"].shape) for o in outputs[2:] if o not in inputs])  # after (out, phi)
        return gm

    def backward_compiler(gm, example_inputs):
        backward_ops.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm

    backward_ops = []
    backend = aot_autograd(fw_compiler=forward_compiler, bw_compiler=backward_compiler,
                           partition_fn=min_cut_rematerialization_partition, decompositions=select_decomp_table())
    torch._dynamo.reset()
    u, du, du_prev, phi_prev = ref.make_inputs((6, 32), torch.float32, "cpu", True, True, rng, requires_grad=True)
    compiled = torch.compile(lambda *t: left_spin_residual_decomposed(*t, LeftSpinParams()), backend=backend,
                             fullgraph=True)
    out, phi = compiled(u, du, du_prev, phi_prev)
    (out.sum() + phi.sum()).backward()
    assert saved == [[(6,)] * 4]  # ||u||, ||du||, ||du - du_prev||, ||du_prev||: one value a row
    # and the compiled backward uses them: it takes no norm of its own (a recompute is 4 sqrt)
    assert backward_ops and not [op for op in backward_ops if "sqrt" in op and "rsqrt" not in op]
    assert all(t.grad is not None for t in (u, du, du_prev, phi_prev))


@pytest.mark.parametrize("with_prev,with_phi", [(False, False), (True, True)])
def test_gradcheck_and_double_backward(rng, with_prev, with_phi):
    """The written-out backward against finite differences, and its own gradient (the backward
    is made of torch operations, so second-order use such as a gradient penalty works)."""
    u, du, du_prev, phi_prev = ref.make_inputs((3, 7), torch.float64, "cpu", with_prev, with_phi, rng,
                                               requires_grad=True)
    inputs = tuple(t for t in (u, du, du_prev, phi_prev) if t is not None)

    def f(*t):
        it = iter(t)
        args = [next(it) if x is not None else None for x in (u, du, du_prev, phi_prev)]
        return left_spin_residual_decomposed(*args, LeftSpinParams())

    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_compiled_sites_trace_the_decomposed_math(monkeypatch, device):
    """While compiling, a decomposed site traces the decomposed math for CPU and CUDA tensors alike
    (fake CUDA tensors: no GPU needed); the op form traces the op."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from apt_ext.nn import left_spin as nn_left_spin

    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    calls = []
    monkeypatch.setattr(nn_left_spin, "left_spin_residual_decomposed",
                        lambda *a: calls.append("decomposed") or (a[0], None))
    monkeypatch.setattr(nn_left_spin, "left_spin_residual", lambda *a, **k: calls.append("op") or (a[0], None))
    with FakeTensorMode():
        for form in ("decomposed", "op"):
            u = torch.empty(2, 8, device=device)
            LeftSpinResidual(compiled_form=form)(u, torch.empty(2, 8, device=device))
    assert calls == ["decomposed", "op"]
