// Argument checks of the FP4 ops (declared in fp4_format.h and fp4_pack.h), compiled once and
// shared by the CPU and CUDA kernels.
#include "fp4/fp4_format.h"
#include "fp4/fp4_pack.h"

#include <cstdlib>

namespace apt::fp4 {

Format parse_format(const std::string& fmt) {
  std::string names;
  for (Format f : kFormats) {
    if (fmt == name_of(f)) return f;
    names += std::string(names.empty() ? "" : ", ") + "'" + name_of(f) + "'";
  }
  TORCH_CHECK_VALUE(false, "fmt: unknown FP4 format '", fmt, "'; expected one of ", names);
}

void check_block_size(Format f, const std::string& fmt, int64_t block_size) {
  TORCH_CHECK_VALUE(block_size == block_size_of(f), "block_size: format '", fmt, "' uses blocks of ",
                    block_size_of(f), " elements, got ", block_size);
}

c10::ScalarType scale_dtype(Format f) {
  return f == Format::NVFP4 ? c10::ScalarType::Float8_e4m3fn
                            : (f == Format::MXFP4 ? c10::ScalarType::Byte : c10::ScalarType::Float);
}

int64_t check_packed_weight(const at::Tensor& packed, const at::Tensor& scales,
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

void check_float_input(const at::Tensor& t, const char* name) {
  const auto dt = t.scalar_type();
  TORCH_CHECK_TYPE(dt == c10::ScalarType::Float || dt == c10::ScalarType::BFloat16 ||
                       dt == c10::ScalarType::Half,
                   name, ": expected float32, bfloat16 or float16, got ", dt);
}

void check_quantize_weight(const at::Tensor& w) {
  check_float_input(w, "w");
  TORCH_CHECK_VALUE(w.dim() == 2, "w: expected a 2-D weight [N, K], got ", w.dim(), "-D");
  TORCH_CHECK_VALUE(w.numel() > 0, "w: expected a non-empty weight, got shape ", w.sizes());
}

void check_linear_args(const at::Tensor& x, const at::Tensor& packed,
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

Format check_quantize_args(const at::Tensor& w, const std::string& fmt, int64_t block_size) {
  const Format f = parse_format(fmt);
  check_block_size(f, fmt, block_size);
  check_quantize_weight(w);
  return f;
}

PackedWeightArgs check_dequantize_args(const at::Tensor& packed, const at::Tensor& scales,
                                       const at::Tensor& tensor_scale, const std::string& fmt,
                                       int64_t block_size, c10::ScalarType dtype) {
  const Format f = parse_format(fmt);
  check_block_size(f, fmt, block_size);
  const int64_t kp = check_packed_weight(packed, scales, tensor_scale, f, block_size);
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf,
                   "dtype: expected float32, bfloat16 or float16, got ", dtype);
  return {f, kp};
}

PackedWeightArgs check_linear_op_args(const at::Tensor& x, const at::Tensor& packed,
                                      const at::Tensor& scales, const at::Tensor& tensor_scale,
                                      const c10::optional<at::Tensor>& bias, const std::string& fmt,
                                      int64_t block_size) {
  const Format f = parse_format(fmt);
  check_block_size(f, fmt, block_size);
  const int64_t kp = check_packed_weight(packed, scales, tensor_scale, f, block_size);
  check_linear_args(x, packed, bias, kp, block_size);
  return {f, kp};
}

void check_pack_input(const at::Tensor& codes) {
  TORCH_CHECK_TYPE(codes.scalar_type() == c10::ScalarType::Byte, "codes: expected uint8, got ",
                   codes.scalar_type());
  TORCH_CHECK_VALUE(codes.dim() >= 1 && codes.size(-1) % 2 == 0,
                    "codes: expected [..., K] with an even K, got shape ", codes.sizes());
}

void check_unpack_input(const at::Tensor& packed) {
  TORCH_CHECK_TYPE(packed.scalar_type() == c10::ScalarType::Byte, "packed: expected uint8, got ",
                   packed.scalar_type());
  TORCH_CHECK_VALUE(packed.dim() >= 1, "packed: expected at least 1 dimension [..., K/2]");
}

void throw_bad_code(int64_t index, int value) {
  TORCH_CHECK_VALUE(false, "codes: every code must be in [0, 15]; element ", index, " (flat index) is ", value);
  std::abort();  // unreachable: TORCH_CHECK_VALUE(false, ...) always throws
}

}  // namespace apt::fp4
