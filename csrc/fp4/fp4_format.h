// FP4 formats of SPEC section 3: names, block sizes, code tables and argument checks shared by
// the CPU and CUDA kernels. Host and device code may include it.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <string>

namespace apt::fp4 {

enum class Format : int { NVFP4 = 0, MXFP4 = 1, NF4 = 2 };

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

inline Format parse_format(const std::string& fmt) {
  if (fmt == "nvfp4") return Format::NVFP4;
  if (fmt == "mxfp4") return Format::MXFP4;
  if (fmt == "nf4") return Format::NF4;
  TORCH_CHECK_VALUE(false, "fmt: unknown FP4 format '", fmt, "'; expected one of 'nvfp4', 'mxfp4', 'nf4'");
}

inline void check_block_size(Format f, const std::string& fmt, int64_t block_size) {
  TORCH_CHECK_VALUE(block_size == block_size_of(f), "block_size: format '", fmt, "' uses blocks of ",
                    block_size_of(f), " elements, got ", block_size);
}

// The dtype the per-block scales of a format are stored in.
inline c10::ScalarType scale_dtype(Format f) {
  return f == Format::NVFP4 ? c10::ScalarType::Float8_e4m3fn
                            : (f == Format::MXFP4 ? c10::ScalarType::Byte : c10::ScalarType::Float);
}

// Checks packed [N, Kp/2] uint8, scales [N, Kp/block] of the format's dtype and a float32
// scalar tensor_scale, all on one device. Returns Kp.
inline int64_t check_packed_weight(const at::Tensor& packed, const at::Tensor& scales,
                                   const at::Tensor& tensor_scale, Format f, int64_t block_size) {
  TORCH_CHECK_TYPE(packed.scalar_type() == c10::ScalarType::Byte, "packed: expected uint8, got ",
                   packed.scalar_type());
  TORCH_CHECK_VALUE(packed.dim() == 2, "packed: expected a 2-D tensor [N, K_padded/2], got ",
                    packed.dim(), "-D");
  const int64_t kp = packed.size(1) * 2;
  TORCH_CHECK_VALUE(kp > 0 && kp % block_size == 0, "packed: K_padded = 2*packed.size(1) = ", kp,
                    " must be a positive multiple of block_size ", block_size);
  TORCH_CHECK_TYPE(scales.scalar_type() == scale_dtype(f), "scales: expected ", scale_dtype(f),
                   " for this format, got ", scales.scalar_type());
  TORCH_CHECK_VALUE(scales.dim() == 2 && scales.size(0) == packed.size(0) && scales.size(1) == kp / block_size,
                    "scales: expected shape [", packed.size(0), ", ", kp / block_size, "], got ",
                    scales.sizes());
  TORCH_CHECK_TYPE(tensor_scale.scalar_type() == c10::ScalarType::Float,
                   "tensor_scale: expected float32, got ", tensor_scale.scalar_type());
  TORCH_CHECK_VALUE(tensor_scale.numel() == 1, "tensor_scale: expected one element, got ",
                    tensor_scale.numel());
  TORCH_CHECK_VALUE(scales.device() == packed.device() && tensor_scale.device() == packed.device(),
                    "scales and tensor_scale must be on packed's device ", packed.device(), ", got ",
                    scales.device(), " and ", tensor_scale.device());
  return kp;
}

inline void check_float_input(const at::Tensor& t, const char* name) {
  const auto dt = t.scalar_type();
  TORCH_CHECK_TYPE(dt == c10::ScalarType::Float || dt == c10::ScalarType::BFloat16 ||
                       dt == c10::ScalarType::Half,
                   name, ": expected float32, bfloat16 or float16, got ", dt);
}

// Checks x [..., K] against a packed weight of Kp columns and an optional bias [N].
inline void check_linear_args(const at::Tensor& x, const at::Tensor& packed,
                              const c10::optional<at::Tensor>& bias, int64_t kp, int64_t block_size) {
  check_float_input(x, "x");
  TORCH_CHECK_VALUE(x.dim() >= 1, "x: expected at least 1 dimension [..., K]");
  const int64_t k = x.size(-1);
  TORCH_CHECK_VALUE(k > 0 && k <= kp && kp - k < block_size, "x: last dimension K = ", k,
                    " does not match the weight (K_padded = ", kp, ", block_size ", block_size, ")");
  TORCH_CHECK_VALUE(x.device() == packed.device(), "x: expected device ", packed.device(), ", got ",
                    x.device());
  if (bias.has_value()) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == packed.size(0), "bias: expected shape [",
                      packed.size(0), "], got ", bias->sizes());
    check_float_input(*bias, "bias");
    TORCH_CHECK_VALUE(bias->device() == packed.device(), "bias: expected device ", packed.device(),
                      ", got ", bias->device());
  }
}

}  // namespace apt::fp4
