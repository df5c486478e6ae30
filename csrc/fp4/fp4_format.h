// FP4 formats of docs/contract.md §3: names, block sizes, code tables and argument checks shared by
// the CPU and CUDA kernels. Host and device code may include it. The Python side keeps the same
// facts in apt_ext/fp4/format.py; tests/test_fp4_format.py compares the two through
// apt_ext._C.fp4.format_table() (csrc/fp4/fp4_bindings.cpp).
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <string>
#include <type_traits>

namespace apt::fp4 {

enum class Format : int { NVFP4 = 0, MXFP4 = 1, NF4 = 2 };

constexpr Format kFormats[] = {Format::NVFP4, Format::MXFP4, Format::NF4};

inline constexpr const char* name_of(Format f) {
  return f == Format::NVFP4 ? "nvfp4" : (f == Format::MXFP4 ? "mxfp4" : "nf4");
}

// Raised by fp4_quantize for a weight with NaN or Inf (CPU and CUDA).
constexpr const char* kNonFiniteWeightMessage =
    "w: weight contains NaN or Inf; FP4 quantisation needs finite values";

// E2M1 magnitudes by code 0..7; codes 8..15 are the negatives.
constexpr float kE2M1[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                             -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

constexpr float kNF4[16] = {-1.0f,
                            -0.6961928009986877f,
                            -0.5250730514526367f,
                            -0.39491748809814453f,
                            -0.28444138169288635f,
                            -0.18477343022823334f,
                            -0.09105003625154495f,
                            0.0f,
                            0.07958029955625534f,
                            0.16093020141124725f,
                            0.24611230194568634f,
                            0.33791524171829224f,
                            0.44070982933044434f,
                            0.5626170039176941f,
                            0.7229568362236023f,
                            1.0f};

// The code that decodes to 0 (padding and all-zero blocks).
inline constexpr uint8_t zero_code(Format f) { return f == Format::NF4 ? 7 : 0; }

// The one block size each format allows.
inline constexpr int64_t block_size_of(Format f) {
  return f == Format::NVFP4 ? 16 : (f == Format::MXFP4 ? 32 : 64);
}

Format parse_format(const std::string& fmt);

void check_block_size(Format f, const std::string& fmt, int64_t block_size);

// Calls fn(std::integral_constant<Format, F>{}) for the runtime format f, so kernels can be
// templated on the format.
template <typename Fn>
void dispatch_format(Format f, Fn&& fn) {
  switch (f) {
    case Format::NVFP4: fn(std::integral_constant<Format, Format::NVFP4>{}); break;
    case Format::MXFP4: fn(std::integral_constant<Format, Format::MXFP4>{}); break;
    case Format::NF4: fn(std::integral_constant<Format, Format::NF4>{}); break;
  }
}

// The dtype the per-block scales of a format are stored in.
c10::ScalarType scale_dtype(Format f);

// Checks packed [N, Kp/2] uint8, scales [N, Kp/block] of the format's dtype and a float32
// scalar tensor_scale, all on one device. Returns Kp.
int64_t check_packed_weight(const at::Tensor& packed, const at::Tensor& scales,
                                   const at::Tensor& tensor_scale, Format f, int64_t block_size);

void check_float_input(const at::Tensor& t, const char* name);

// fp4_quantize's weight: float32/bfloat16/float16, 2-D [N, K], non-empty (finiteness is checked
// by the kernels, which read the values anyway).
void check_quantize_weight(const at::Tensor& w);

// Checks x [..., K] against a packed weight of Kp columns and an optional bias [N].
void check_linear_args(const at::Tensor& x, const at::Tensor& packed,
                              const c10::optional<at::Tensor>& bias, int64_t kp, int64_t block_size);

// Checks a tiled weight of n rows and k columns (fp4_tiled_layout.h: tiles, tile_scales,
// out_scale, all on one device). Returns the format.
Format check_tiled_weight(const at::Tensor& tiles, const at::Tensor& tile_scales, const at::Tensor& out_scale,
                          const std::string& fmt, int64_t n, int64_t k);

// Checks x [..., k] and an optional bias [n] against a tiled weight on tiles' device, and the
// fused prologue / epilogue: rms_eps finite and >= 0, residual [..., n_out] of x's dtype and
// device (n_out: the op's output features), rms_sumsq (rms_eps given) float32 [..., P >= 1] with
// x's leading dimensions, on x's device.
void check_tiled_linear_args(const at::Tensor& x, const at::Tensor& tiles, const c10::optional<at::Tensor>& bias,
                             int64_t n, int64_t k, c10::optional<double> rms_eps = c10::nullopt,
                             const c10::optional<at::Tensor>& residual = c10::nullopt, int64_t n_out = 0,
                             const c10::optional<at::Tensor>& rms_sumsq = c10::nullopt);

// x [..., k] RMS-normalised in float32 with no weight (fp4_linear_tiled's rms_eps where no kernel
// fuses it): by at::rms_norm, or with rms_sumsq x * rsqrt(rms_sumsq.sum(-1) / k + eps).
at::Tensor rms_normalized(const at::Tensor& x, double eps, const c10::optional<at::Tensor>& rms_sumsq = c10::nullopt);

// The features of fp4_linear_tiled_sumsq's out_sumsq: ceil(n / 16).
constexpr int64_t kSumsqGroup = 16;
// out_sumsq of y [..., n]: float32 [..., ceil(n / 16)], the sums of y's squares (y as stored, in
// float32) over each 16 consecutive features (the last group zero-padded).
at::Tensor sumsq_parts(const at::Tensor& y);

// fp4_linear_tiled_swiglu's n: gate and up rows fill whole tiles (a multiple of 16).
void check_swiglu_rows(int64_t n);

// silu(gate) * up [..., n / 2] of y [..., n], the output of a weight tiled in the SwiGLU order
// (columns 16 t .. 16 t + 7 gate features 8 t .., the next 8 the same up features), plus the bias
// [n] in [gate; up] order; float32.
at::Tensor swiglu_of_tiled_rows(const at::Tensor& y, const c10::optional<at::Tensor>& bias);

// ---- every argument check of one op, in one call ---------------------------------------
// The CPU and CUDA kernels call these; the Triton kernels and the fake kernels call them
// through apt_ext._C.fp4 (csrc/fp4/fp4_bindings.cpp), so each op has its checks in C++ only.
struct PackedWeightArgs {
  Format format;
  int64_t k_padded;
};

Format check_quantize_args(const at::Tensor& w, const std::string& fmt, int64_t block_size);

PackedWeightArgs check_dequantize_args(const at::Tensor& packed, const at::Tensor& scales,
                                       const at::Tensor& tensor_scale, const std::string& fmt,
                                       int64_t block_size, c10::ScalarType dtype);

PackedWeightArgs check_linear_op_args(const at::Tensor& x, const at::Tensor& packed,
                                      const at::Tensor& scales, const at::Tensor& tensor_scale,
                                      const c10::optional<at::Tensor>& bias, const std::string& fmt,
                                      int64_t block_size);

// fp4_cpu_tile's arguments: a packed weight on the CPU. Returns the format and Kp.
PackedWeightArgs check_cpu_tile_args(const at::Tensor& packed, const at::Tensor& scales,
                                     const at::Tensor& tensor_scale, const std::string& fmt, int64_t block_size);

// fp4_linear_cpu_tiled's arguments: x [..., k], a CPU tiled weight of n rows and k columns
// (fp4_cpu_tiled_layout.h), an optional bias [n]. Returns the format and Kp.
PackedWeightArgs check_cpu_tiled_linear_args(const at::Tensor& x, const at::Tensor& tiles,
                                             const at::Tensor& tile_scales, const at::Tensor& out_scale,
                                             const c10::optional<at::Tensor>& bias, const std::string& fmt,
                                             int64_t n, int64_t k);

}  // namespace apt::fp4
