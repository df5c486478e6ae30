"""The Triton kernels compiled for an H100/H200 (sm_90) without a GPU: Triton's own code
generation and its bundled ptxas, for every FP4 format (the GEMV at one and sixteen rows of x
with split and ragged K, the small-M GEMM, the dequantise kernel) and the left-spin residual
with a bfloat16 du beside a float32 u. The interpreter tests check what the kernels compute;
this checks that they compile for the GPU (typing, pointer casts, constexpr globals, loop-carried
types, tl.dot operand types), which the interpreter does not."""
from __future__ import annotations

import pytest

triton = pytest.importorskip("triton")

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from apt_ext.fp4.format import get_format  # noqa: E402
from apt_ext.triton import fp4_dequantize, fp4_gemm, fp4_gemv  # noqa: E402
from apt_ext.triton.fp4_decode import FORMAT_IDS, INTERPRET  # noqa: E402

pytestmark = pytest.mark.skipif(INTERPRET, reason="TRITON_INTERPRET=1 replaces compilation")

FORMATS = ["nvfp4", "mxfp4", "nf4"]
LINEAR_ARGS = {"x_ptr": "*bf16", "packed_ptr": "*u8", "ts_ptr": "*fp32", "lut_ptr": "*fp32", "bias_ptr": "*bf16",
               "out_ptr": "*bf16", "part_ptr": "*fp32", "count_ptr": "*i32", "M": "i32", "N": "i32", "K": "i32",
               "n_blocks": "i32", "steps": "i32"}


def _compile_sm90(kernel, args: dict, consts: dict, fmt: str | None, num_warps: int = 4,
                  num_stages: int = 3) -> None:
    """Compiles ``kernel`` with argument types ``args`` (an FP4 kernel's scales' type from
    ``fmt``) and compile-time ``consts`` for sm_90; asserts a non-empty cubin."""
    scales = {} if fmt is None else {"scales_ptr": "*fp32" if fmt == "nf4" else "*u8"}
    signature = {**args, **scales, **{c: "constexpr" for c in consts}}
    missing = set(kernel.arg_names) - set(signature)
    assert not missing, f"signature lacks {sorted(missing)}"
    src = ASTSource(fn=kernel, signature={a: signature[a] for a in kernel.arg_names},
                    constexprs={(kernel.arg_names.index(c),): v for c, v in consts.items()})
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": num_warps, "num_stages": num_stages})
    assert len(compiled.asm["cubin"]) > 0


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("block_m", "block_n", "block_k", "even_k", "partial", "warps"),
                         [(1, 16, 1024, True, False, 4), (16, 8, 512, False, True, 4), (1, 8, 1024, True, True, 1)])
def test_gemv_compiles_for_sm90(fmt, block_m, block_n, block_k, even_k, partial, warps):
    _compile_sm90(fp4_gemv._gemv_kernel, {**LINEAR_ARGS, "row_words": "i32"},
                  {"FMT": FORMAT_IDS[fmt], "BS": get_format(fmt).block_size, "BLOCK_M": block_m, "BLOCK_N": block_n,
                   "BLOCK_K": block_k, "EVEN_K": even_k, "PARTIAL": partial, "HAS_BIAS": True, "GELU": False}, fmt,
                  num_warps=warps)


@pytest.mark.parametrize("fmt", FORMATS)
def test_gemm_compiles_for_sm90(fmt):
    _compile_sm90(fp4_gemm._gemm_kernel, {**LINEAR_ARGS, "row_bytes": "i32"},
                  {"FMT": FORMAT_IDS[fmt], "BS": get_format(fmt).block_size, "HAS_BIAS": True, "GELU": True,
                   "DOT_F32": False, "F32_DOT": "tf32", "BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 128, "GROUP_M": 8,
                   "PARTIAL": True}, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_dequantize_compiles_for_sm90(fmt):
    _compile_sm90(fp4_dequantize._dequantize_kernel,
                  {"packed_ptr": "*u8", "ts_ptr": "*fp32", "lut_ptr": "*fp32", "out_ptr": "*bf16", "n_rows": "i32",
                   "row_bytes": "i32", "ncols": "i32", "ld_out": "i32"},
                  {"FMT": FORMAT_IDS[fmt], "BS": get_format(fmt).block_size, "BLOCK_N": 16, "BLOCK_B": 128}, fmt)


LEFT_SPIN_PARAMS = {"rows": "i32", "D": "i32", **{k: "fp32" for k in ("alpha", "tau", "beta", "w1", "w2", "eps")}}


@pytest.mark.parametrize("resident", [True, False])
def test_left_spin_16bit_du_beside_float32_u_compiles_for_sm90(resident):
    from apt_ext.triton import left_spin as tls

    consts = {"HAS_PREV": True, "HAS_PHI": True, "RESIDENT": resident, "ROWS": 2,
              "BLOCK_D": 1024, "N_CHUNKS": 1 if resident else 3}
    _compile_sm90(tls._forward_kernel, {"u_ptr": "*fp32", "du_ptr": "*bf16", "dp_ptr": "*bf16", "pp_ptr": "*fp32",
                                        "out_ptr": "*fp32", "phi_ptr": "*fp32", **LEFT_SPIN_PARAMS}, consts, None)
    _compile_sm90(tls._backward_kernel, {"go_ptr": "*fp32", "gphi_ptr": "*fp32", "u_ptr": "*fp32", "du_ptr": "*bf16",
                                         "dp_ptr": "*bf16", "pp_ptr": "*fp32", "gu_ptr": "*fp32", "gdu_ptr": "*bf16",
                                         "gdp_ptr": "*bf16", "gpp_ptr": "*fp32", **LEFT_SPIN_PARAMS}, consts, None)


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp64"])
@pytest.mark.parametrize(("reverse", "mean"), [(False, False), (True, False), (False, True), (True, True)])
def test_prefix_sum_compiles_for_sm90(dtype, reverse, mean):
    from apt_ext.triton import prefix_sum as tps

    acc = "fp64" if dtype == "fp64" else "fp32"
    _compile_sm90(tps._scan_kernel, {"x_ptr": f"*{dtype}", "out_ptr": f"*{dtype}", "init_ptr": f"*{acc}",
                                     "total_ptr": f"*{acc}", "T": "i32", "D": "i32", "stride_b": "i64", "stride_t": "i32"},
                  {"REVERSE": reverse, "MEAN": mean, "HAS_INIT": reverse, "HAS_TOTAL": not reverse,
                   "BLOCK_T": tps.BLOCK_T, "BLOCK_D": tps.MAX_BLOCK_D, "MATMUL": False, "DOT_F32": False}, None)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize(("block_t", "block_d"), [(128, 16), (64, 32), (128, 32), (32, 32), (64, 16)])
def test_prefix_mean_chunk_shapes_compile_for_sm90(dtype, block_t, block_d):
    """The chunk shapes benchmarks/prefix_sum.py times besides the default (forward mean with its
    total, the training step's pass) compile for sm_90 too."""
    from apt_ext.triton import prefix_sum as tps

    _compile_sm90(tps._scan_kernel, {"x_ptr": f"*{dtype}", "out_ptr": f"*{dtype}", "init_ptr": "*fp32",
                                     "total_ptr": "*fp32", "T": "i32", "D": "i32", "stride_b": "i64", "stride_t": "i32"},
                  {"REVERSE": False, "MEAN": True, "HAS_INIT": False, "HAS_TOTAL": True,
                   "BLOCK_T": block_t, "BLOCK_D": block_d, "MATMUL": False, "DOT_F32": False}, None)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize(("reverse", "mean"), [(False, True), (True, True), (True, False)])
@pytest.mark.parametrize(("block_t", "block_d"), [(64, 16), (64, 32), (128, 16), (32, 32), (64, 64), (32, 16)])
def test_prefix_sum_matmul_compiles_for_sm90(dtype, reverse, mean, block_t, block_d):
    """The chunk sums as a tensor-core product with a triangle of ones (scan(matmul=True)): the
    training step's forward (mean and total) and backward (reverse mean from a total, two
    products) and a plain reverse sum, at the chunk shapes benchmarks/prefix_sum.py times."""
    from apt_ext.triton import prefix_sum as tps

    _compile_sm90(tps._scan_kernel, {"x_ptr": f"*{dtype}", "out_ptr": f"*{dtype}", "init_ptr": "*fp32",
                                     "total_ptr": "*fp32", "T": "i32", "D": "i32", "stride_b": "i64", "stride_t": "i32"},
                  {"REVERSE": reverse, "MEAN": mean, "HAS_INIT": reverse, "HAS_TOTAL": not reverse,
                   "BLOCK_T": block_t, "BLOCK_D": block_d, "MATMUL": True, "DOT_F32": False}, None)


@pytest.mark.parametrize(("dtype", "g", "splits", "merge", "precision", "append", "rotary"),
                         [("bf16", 4, 16, 16, "tf32", False, 0), ("fp16", 1, 1, 2, "tf32", False, 0),
                          ("fp32", 8, 64, 8, "ieee", False, 0), ("bf16", 4, 16, 16, "tf32", True, 1),
                          ("bf16", 4, 8, 8, "tf32", True, 2), ("fp16", 1, 1, 2, "tf32", True, 0)])
def test_decode_attention_compiles_for_sm90(dtype, g, splits, merge, precision, append, rotary):
    """decode_attention and (append) decode_attention_kvcache, without and with either rotary order."""
    from apt_ext.triton import decode_attention as tda

    ints = ("sm_scale", "KV", "HD", "T", "q_sb", "q_sh", "k_sb", "k_sh", "k_st", "v_sb", "v_sh", "v_st",
            "o_sb", "o_sh", "len_sb", "kn_sb", "kn_sh", "vn_sb", "vn_sh", "rot_st")
    args = {"q_ptr": f"*{dtype}", "k_ptr": f"*{dtype}", "v_ptr": f"*{dtype}", "len_ptr": "*i64",
            "out_ptr": f"*{dtype}", "acc_ptr": "*fp32", "max_ptr": "*fp32", "sum_ptr": "*fp32", "count_ptr": "*i32",
            "kn_ptr": f"*{dtype}", "vn_ptr": f"*{dtype}", "cos_ptr": "*fp32", "sin_ptr": "*fp32",
            **{a: "i32" for a in ints}, "sm_scale": "fp32"}
    _compile_sm90(tda._decode_attention_kernel, args,
                  {"G": g, "BLOCK_G": max(16, g), "BLOCK_D": 128, "BLOCK_N": 64, "SPLITS": splits,
                   "SPLITS_POW2": max(2, splits), "G_POW2": max(2, g), "MERGE_SPLITS": merge,
                   "DOT_PRECISION": precision, "APPEND": append, "ROTARY": rotary, "ROT_HALF": 64 if rotary else 1},
                  None)
