"""The Triton kernels of the left-spin residual under the CPU interpreter (TRITON_INTERPRET=1).

The interpreter must be on before triton compiles the kernels, so in a normal run a single
test re-runs this file in a subprocess with TRITON_INTERPRET=1; the lead runs the compiled
kernels on a GPU in tests/gpu/test_left_spin_cuda.py.
"""
from __future__ import annotations

import pytest
import torch
import triton  # noqa: F401  (a test dependency, `pip install -e .[test]`: fail, never skip, without it)

from triton_interpreter import interpreted, outside_interpreter, run_under_interpreter  # noqa: E402


@outside_interpreter
def test_triton_kernels_under_interpreter():
    run_under_interpreter(__file__)


@pytest.fixture
def two_pass(monkeypatch):
    """Make the two-pass (row not resident) kernels run on tiny rows."""
    from apt_ext.triton import left_spin as tls

    monkeypatch.setattr(tls, "MAX_RESIDENT_D", 8)
    monkeypatch.setattr(tls, "LOOP_BLOCK_D", 16)


def _check(rng, shape, dtype, with_prev, with_phi, du_dtype=None):
    from reference import left_spin as ref
    from apt_ext.triton import left_spin as tls

    u, du, dp, pp = ref.make_inputs(shape, dtype, "cpu", with_prev, with_phi, rng, du_dtype=du_dtype)
    go = torch.randn(shape, generator=rng).to(dtype)
    gphi = torch.randn(shape[:-1], generator=rng)
    ref.check_kernel(tls.left_spin_residual, tls.left_spin_residual_backward, u, du, dp, pp, go, gphi)


CASES = [((1, 1), False, False), ((3, 7), True, True), ((2, 3, 33), True, False), ((5, 16), False, True)]


@interpreted
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape,with_prev,with_phi", CASES, ids=str)
def test_resident_rows_match_reference(rng, dtype, shape, with_prev, with_phi):
    _check(rng, shape, dtype, with_prev, with_phi)


@interpreted
@pytest.mark.parametrize("du_dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape,with_prev,with_phi", CASES[1:3], ids=str)
def test_16bit_du_beside_float32_u(rng, du_dtype, shape, with_prev, with_phi):
    _check(rng, shape, torch.float32, with_prev, with_phi, du_dtype)


@interpreted
@pytest.mark.parametrize("shape,with_prev,with_phi", [((3, 40), True, True), ((2, 17), False, False)], ids=str)
def test_two_pass_rows_match_reference(rng, two_pass, shape, with_prev, with_phi):
    _check(rng, shape, torch.float32, with_prev, with_phi)


@interpreted
def test_bad_input_raises_clearly():
    from apt_ext.triton import left_spin as tls

    u = torch.randn(3, 8)
    with pytest.raises(ValueError, match="du: expected the shape of u"):
        tls.left_spin_residual(u, torch.randn(3, 9), None, None, 0.5, 0.3, 0.7, 1.0, 0.5, 1e-6)
    with pytest.raises(TypeError, match="u: expected float32, bfloat16 or float16, got Double"):  # no float64
        tls.left_spin_residual(u.double(), u.double(), None, None, 0.5, 0.3, 0.7, 1.0, 0.5, 1e-6)
