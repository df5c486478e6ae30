"""The FP4 Triton GEMV compiled for an H100/H200 (sm_90) without a GPU: Triton's own code
generation and its bundled ptxas, for every format, one and sixteen rows of x, split K and a
ragged K. The interpreter tests check what the kernel computes; this checks that it compiles
for the GPU (typing, pointer casts, constexpr globals), which the interpreter does not."""
from __future__ import annotations

import pytest

triton = pytest.importorskip("triton")

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from apt_ext.triton import fp4_gemv  # noqa: E402
from apt_ext.triton.fp4_decode import FORMAT_IDS, INTERPRET  # noqa: E402

SIGNATURE = {"x_ptr": "*bf16", "packed_ptr": "*u8", "ts_ptr": "*fp32", "lut_ptr": "*fp32", "bias_ptr": "*bf16",
             "out_ptr": "*bf16", "part_ptr": "*fp32", "count_ptr": "*i32", "M": "i32", "N": "i32", "K": "i32",
             "row_words": "i32", "n_blocks": "i32", "steps": "i32"}


@pytest.mark.skipif(INTERPRET, reason="TRITON_INTERPRET=1 replaces compilation")
@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4", "nf4"])
@pytest.mark.parametrize(("block_m", "block_n", "block_k", "even_k", "partial"),
                         [(1, 16, 1024, True, False), (16, 8, 512, False, True)])
def test_gemv_compiles_for_sm90(fmt, block_m, block_n, block_k, even_k, partial):
    kernel = fp4_gemv._gemv_kernel
    consts = {"FMT": FORMAT_IDS[fmt], "BS": 16 if fmt == "nvfp4" else 32, "BLOCK_M": block_m, "BLOCK_N": block_n,
              "BLOCK_K": block_k, "EVEN_K": even_k, "PARTIAL": partial, "HAS_BIAS": True, "GELU": False}
    signature = {**SIGNATURE, "scales_ptr": "*fp32" if fmt == "nf4" else "*u8", **{c: "constexpr" for c in consts}}
    src = ASTSource(fn=kernel, signature=signature,
                    constexprs={(kernel.arg_names.index(c),): v for c, v in consts.items()})
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "num_stages": 4})
    assert len(compiled.asm["cubin"]) > 0
