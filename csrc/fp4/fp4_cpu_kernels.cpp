// Scalar row kernels (the fallback on any CPU), the run-time ISA choice, and the per-row
// decode scales shared by every CPU kernel.
#include "fp4/fp4_cpu_kernels.h"

#include <c10/util/Float8_e4m3fn.h>

#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>

namespace apt::fp4 {
namespace {

void decode_row_scalar(const PackedRow& row, float* out) {
  for (int64_t b = 0; b < row.kp / row.block; ++b) {
    const float s = row.scales[b];
    const uint8_t* p = row.packed + b * row.block / 2;
    float* o = out + b * row.block;
    for (int64_t j = 0; j < row.block / 2; ++j) {
      o[2 * j] = row.lut[p[j] & 0xF] * s;
      o[2 * j + 1] = row.lut[p[j] >> 4] * s;
    }
  }
}

void dot_rows_scalar(const PackedRow& row, const float* x, int64_t ldx, int64_t mrows, float* out) {
  std::array<float, kMaxFusedRows> acc{};
  std::array<float, 64> w{};
  for (int64_t b = 0; b < row.kp / row.block; ++b) {
    const float s = row.scales[b];
    const uint8_t* p = row.packed + b * row.block / 2;
    for (int64_t j = 0; j < row.block / 2; ++j) {
      w[2 * j] = row.lut[p[j] & 0xF];
      w[2 * j + 1] = row.lut[p[j] >> 4];
    }
    for (int64_t m = 0; m < mrows; ++m) {
      const float* xm = x + m * ldx + b * row.block;
      float part = 0.f;  // block partial sum, scaled once per block
      for (int64_t j = 0; j < row.block; ++j) part += w[j] * xm[j];
      acc[m] += part * s;
    }
  }
  for (int64_t m = 0; m < mrows; ++m) out[m] = acc[m];
}

void gemm4_scalar(const float* w, int64_t len, const float* x, int64_t ldx, int64_t mrows, float* out,
                  int64_t ldo) {
  for (int64_t m = 0; m < mrows; ++m)
    for (int64_t r = 0; r < 4; ++r) {
      float acc = 0.f;
      for (int64_t k = 0; k < len; ++k) acc += w[r * len + k] * x[m * ldx + k];
      out[m * ldo + r] += acc;
    }
}

// 2^(e - 127) for every stored mxfp4 exponent byte (exact; 2^-127 is a float32 subnormal).
const std::array<float, 256>& mx_scale_table() {
  static const std::array<float, 256> t = [] {
    std::array<float, 256> v{};
    for (int i = 0; i < 256; ++i) v[i] = std::ldexp(1.0f, i - 127);
    return v;
  }();
  return t;
}

// float(e4m3) for every byte.
const std::array<float, 256>& e4m3_table() {
  static const std::array<float, 256> t = [] {
    std::array<float, 256> v{};
    for (int i = 0; i < 256; ++i)
      v[i] = static_cast<float>(c10::Float8_e4m3fn(static_cast<uint8_t>(i), c10::Float8_e4m3fn::from_bits()));
    return v;
  }();
  return t;
}

bool cpu_supports(const char* isa) {
#if defined(APT_X86) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (std::strcmp(isa, "avx2") == 0) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (std::strcmp(isa, "avx512") == 0)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#endif
  return false;
}

CpuKernels best_kernels() {
#if defined(APT_X86)
  if (cpu_supports("avx512")) return avx512_kernels();
  if (cpu_supports("avx2")) return avx2_kernels();
#endif
  return scalar_kernels();
}

}  // namespace

CpuKernels scalar_kernels() { return {"scalar", KOrder::kNatural, &decode_row_scalar, &decode_row_scalar, &dot_rows_scalar, &gemm4_scalar}; }

CpuKernels cpu_kernels() {
  static const CpuKernels best = best_kernels();
  const char* forced = std::getenv("APT_FP4_CPU_ISA");
  if (forced == nullptr || *forced == '\0') return best;
  if (std::strcmp(forced, "scalar") == 0) return scalar_kernels();
#if defined(APT_X86)
  if (std::strcmp(forced, "avx2") == 0 && cpu_supports("avx2")) return avx2_kernels();
  if (std::strcmp(forced, "avx512") == 0 && cpu_supports("avx512")) return avx512_kernels();
#endif
  TORCH_CHECK_VALUE(false, "APT_FP4_CPU_ISA: '", forced,
                    "' is not one of scalar, avx2, avx512 or this CPU does not support it");
}

void row_decode_scales(const at::Tensor& scales, float tensor_scale, Format f, int64_t n, float* dst) {
  const int64_t nb = scales.size(1);
  if (f == Format::NF4) {
    std::memcpy(dst, scales.const_data_ptr<float>() + n * nb, nb * sizeof(float));
    return;
  }
  const uint8_t* s = static_cast<const uint8_t*>(scales.const_data_ptr()) + n * nb;
  if (f == Format::NVFP4) {
    const auto& t = e4m3_table();
    for (int64_t b = 0; b < nb; ++b) dst[b] = t[s[b]] * tensor_scale;
  } else {
    const auto& t = mx_scale_table();
    for (int64_t b = 0; b < nb; ++b) dst[b] = t[s[b]];
  }
}

}  // namespace apt::fp4
