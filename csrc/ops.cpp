// Every schema of the `apt` op namespace, in one place (docs/contract.md §2).
// Kernels register themselves per backend with TORCH_LIBRARY_IMPL(apt, CPU|CUDA, m) next to
// their sources; fake (meta) kernels and autograd are registered in Python (apt_ext/ops.py).
#include <torch/library.h>

TORCH_LIBRARY(apt, m) {
  // ---- FP4 (docs/contract.md §3) ----
  // uint8 codes in [0, 15], [..., K] (K even) -> uint8 [..., K/2]; byte j = c[2j] | c[2j+1] << 4.
  m.def("fp4_pack(Tensor codes) -> Tensor");
  // uint8 [..., K/2] -> uint8 codes [..., K].
  m.def("fp4_unpack(Tensor packed) -> Tensor");
  // w [N, K] float32/bfloat16/float16 -> packed uint8 [N, Kp/2], scales [N, Kp/block_size]
  // (nvfp4: float8_e4m3fn, mxfp4: uint8 biased exponent, nf4: float32), tensor_scale float32 [].
  // Kp = K rounded up to a multiple of block_size (zero padding).
  m.def("fp4_quantize(Tensor w, str fmt, int block_size) -> (Tensor packed, Tensor scales, Tensor tensor_scale)");
  // -> [N, Kp] of `dtype` (the padded K; FP4Weight.dequantize slices to the logical K).
  m.def("fp4_dequantize(Tensor packed, Tensor scales, Tensor tensor_scale, str fmt, int block_size, ScalarType dtype) -> Tensor");
  // x [..., K] (K <= Kp < K + block_size) -> x @ dequantize(W).T + bias, [..., N], x's dtype,
  // fp32 accumulation.
  m.def("fp4_linear(Tensor x, Tensor packed, Tensor scales, Tensor tensor_scale, Tensor? bias, str fmt, int block_size) -> Tensor");
  // gelu(fp4_linear(...)) with the exact (erf) GELU; the CUDA kernel fuses it into the epilogue.
  m.def("fp4_linear_gelu(Tensor x, Tensor packed, Tensor scales, Tensor tensor_scale, Tensor? bias, str fmt, int block_size) -> Tensor");
  // The tiled layout (csrc/fp4/fp4_tiled_layout.h): a private copy of a packed weight in the
  // order the CUDA GEMV reads it. tiles uint8 [ceil(N/16), ceil(Kp/128), 1024]; tile_scales
  // [tiles, steps, 32, 4 | 2 | 2] (nvfp4 uint8, mxfp4 uint8, nf4 float32); out_scale float32 [].
  m.def("fp4_tile(Tensor packed, Tensor scales, Tensor tensor_scale, str fmt, int block_size) -> (Tensor tiles, Tensor tile_scales, Tensor out_scale)");
  // The float32 weight [n, k] a tiled weight stands for (equal to fp4_dequantize's values).
  m.def("fp4_untile(Tensor tiles, Tensor tile_scales, Tensor out_scale, str fmt, int n, int k) -> Tensor");
  // The canonical tensors of a tiled weight of n rows and k columns (fp4_tile's inverse; bit for
  // bit for weights as fp4_quantize makes them).
  m.def("fp4_untile_packed(Tensor tiles, Tensor tile_scales, Tensor out_scale, str fmt, int n, int k) -> (Tensor packed, Tensor scales, Tensor tensor_scale)");
  // fp4_linear (gelu applied when `gelu`) on a tiled weight of n rows and k columns. rms_eps: x is
  // first RMS-normalised, x * rsqrt(mean(x^2 over k) + rms_eps) in float32 (an RMSNorm whose
  // weight was folded into the weight's columns: apt_ext.nn.fold_rms_norm_); residual [..., n] of
  // x's dtype is added to the (activated) output in float32. rms_sumsq (with rms_eps): float32
  // [..., P] whose sum over its last dimension is each row of x's sum of squares (as
  // fp4_linear_tiled_sumsq returns them), used instead of summing x's squares.
  m.def("fp4_linear_tiled(Tensor x, Tensor tiles, Tensor tile_scales, Tensor out_scale, Tensor? bias, str fmt, int n, int k, bool gelu, float? rms_eps=None, Tensor? residual=None, Tensor? rms_sumsq=None) -> Tensor");
  // fp4_linear_tiled, and out_sumsq float32 [..., ceil(n / 16)]: the sums of squares of out's
  // values (as rounded to x's dtype) over each 16 consecutive features, for the next layer's
  // rms_sumsq (the norm that follows a residual add, without a pass over its input).
  m.def("fp4_linear_tiled_sumsq(Tensor x, Tensor tiles, Tensor tile_scales, Tensor out_scale, Tensor? bias, str fmt, int n, int k, bool gelu, float? rms_eps=None, Tensor? residual=None, Tensor? rms_sumsq=None) -> (Tensor out, Tensor out_sumsq)");
  // silu(gate) * up [..., n / 2]: the SwiGLU of fp4_linear's output [gate; up] on a tiled weight of
  // n rows (a multiple of 16) made in the SwiGLU order, each tile holding 8 gate rows and the 8 up
  // rows n / 2 further on (apt_ext.fp4.tiled.tile(weight, swiglu=True)); bias [n] in [gate; up] order.
  // rms_eps, rms_sumsq: as fp4_linear_tiled's.
  m.def("fp4_linear_tiled_swiglu(Tensor x, Tensor tiles, Tensor tile_scales, Tensor out_scale, Tensor? bias, str fmt, int n, int k, float? rms_eps=None, Tensor? rms_sumsq=None) -> Tensor");
  // The CPU tiled layout (csrc/fp4/fp4_cpu_tiled_layout.h): a private copy in the order the
  // AVX-512 GEMV reads it. tiles uint8 [ceil(N/16), Kp/8, 64]; tile_scales [tiles, Kp/block, 16]
  // (nvfp4 and mxfp4 uint8, nf4 float32); out_scale float32 []. CPU tensors only.
  m.def("fp4_cpu_tile(Tensor packed, Tensor scales, Tensor tensor_scale, str fmt, int block_size) -> (Tensor tiles, Tensor tile_scales, Tensor out_scale)");
  // fp4_linear on a CPU tiled weight of n rows and k columns.
  m.def("fp4_linear_cpu_tiled(Tensor x, Tensor tiles, Tensor tile_scales, Tensor out_scale, Tensor? bias, str fmt, int n, int k) -> Tensor");

  // ---- Left-spin residual (docs/contract.md §4) ----
  // u, du, du_prev [..., D]; phi_prev [...] float32 -> out [..., D] (u's dtype), phi [...] float32.
  m.def("left_spin_residual(Tensor u, Tensor du, Tensor? du_prev, Tensor? phi_prev, float alpha, float tau, float beta, float w1, float w2, float eps) -> (Tensor out, Tensor phi)");
  // Gradients of (out, phi) w.r.t. (u, du, du_prev, phi_prev). grad_du_prev / grad_phi_prev are
  // empty tensors (numel 0) when du_prev / phi_prev is None.
  m.def("left_spin_residual_backward(Tensor grad_out, Tensor grad_phi, Tensor u, Tensor du, Tensor? du_prev, Tensor? phi_prev, float alpha, float tau, float beta, float w1, float w2, float eps) -> (Tensor grad_u, Tensor grad_du, Tensor grad_du_prev, Tensor grad_phi_prev)");
}
