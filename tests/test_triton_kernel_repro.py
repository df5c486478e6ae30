"""tools/triton_kernel_repro.py: compiles an inductor-style kernel file for sm_90 without a GPU,
and shrinks a failing one to the lines its failure needs."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
from apt_ext.triton.fp4_decode import INTERPRET  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import triton_kernel_repro as repro  # noqa: E402

pytestmark = pytest.mark.skipif(INTERPRET, reason="TRITON_INTERPRET=1 replaces compilation")

KERNEL = '''
import triton
import triton.language as tl
from torch._inductor.runtime import triton_helpers

@triton_heuristics.persistent_reduction(
    size_hints={'x': 128, 'r0_': 64},
    triton_meta={'signature': {'in_ptr0': '*fp32', 'out_ptr0': '*fp32', 'xnumel': 'i32', 'r0_numel': 'i32', 'XBLOCK': 'constexpr'}, 'device': None},
)
@triton.jit
def triton_per_fused_norm_0(in_ptr0, out_ptr0, xnumel, r0_numel, XBLOCK : tl.constexpr):
    xnumel = 128
    r0_numel = 64
    R0_BLOCK: tl.constexpr = 64
    xindex = tl.program_id(0) * XBLOCK + tl.arange(0, XBLOCK)[:, None]
    xmask = xindex < xnumel
    r0_index = tl.arange(0, R0_BLOCK)[None, :]
    tmp0 = tl.load(in_ptr0 + (r0_index + 64*xindex), xmask, other=0.0)
    tmp1 = triton_helpers.maximum(tmp0, tmp0 * 0.5)
    tmp2 = tl.sum(tl.where(xmask, tmp1 * tmp1, 0), 1)[:, None]
    tmp3 = tl.sqrt_rn(tmp2)
    tl.store(out_ptr0 + (xindex), tmp3, xmask)
'''


def test_compiles_an_inductor_kernel_file(tmp_path):
    path = tmp_path / "kernel.py"
    path.write_text(KERNEL)
    repro.compile_kernel(path, {"XBLOCK": 2}, warps=2)


def test_minimize_keeps_the_line_the_failure_needs(tmp_path):
    path = tmp_path / "kernel.py"
    path.write_text(KERNEL.replace("tmp3 = tl.sqrt_rn(tmp2)", "tmp3 = tl.sqrt_rn(tmp2)\n    tmp4 = undefined_name + tmp3"))
    left = repro.minimize(path, "undefined_name", {"XBLOCK": 1}, warps=1)
    assert "undefined_name" in left
    assert "tl.store" not in left and "tmp1 =" not in left  # removable lines are gone


def test_rejects_a_file_without_a_signature(tmp_path):
    path = tmp_path / "kernel.py"
    path.write_text("@triton.jit\ndef f():\n    pass\n")
    with pytest.raises(ValueError, match="signature"):
        repro.compile_kernel(path, {"XBLOCK": 1}, warps=1)
