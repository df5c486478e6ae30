// Scalar row kernels (the fallback on any CPU), the kernels of the ISA cpu_isa.h picks, and the per-row
// decode scales shared by every CPU kernel.
#include "fp4/fp4_cpu_kernels.h"
#include "fp4/fp4_cpu_tiled_layout.h"

#include "cpu_isa.h"

#include <c10/util/Float8_e4m3fn.h>

#include <array>
#include <cmath>
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

void decode_row_bf16_scalar(const PackedRow& row, c10::BFloat16* out) {
  std::array<float, 64> v{};
  for (int64_t k0 = 0; k0 < row.kp; k0 += row.block) {
    decode_row_scalar({row.packed + k0 / 2, row.scales + k0 / row.block, row.block, row.block, row.lut}, v.data());
    for (int64_t j = 0; j < row.block; ++j) out[k0 + j] = c10::BFloat16(v[j]);
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

void tiled_dot_scalar(const TiledSlice& t, const float* x, int64_t ldx, int64_t mrows, float* out, int64_t ldo) {
  const int64_t nb = t.kp / t.block;
  for (int64_t m = 0; m < mrows; ++m)
    for (int64_t r = 0; r < cpu_tiled::kTileRows; ++r) {
      float acc = 0.f;
      for (int64_t b = 0; b < nb; ++b) {
        float part = 0.f;  // block partial sum, scaled once per block
        for (int64_t k = b * t.block; k < (b + 1) * t.block; ++k) {
          const uint32_t word = t.words[(k / cpu_tiled::kWordCodes) * cpu_tiled::kTileRows + r];
          part += t.lut[(word >> (4 * (k % cpu_tiled::kWordCodes))) & 0xF] * x[m * ldx + k];
        }
        const int64_t i = b * cpu_tiled::kTileRows + r;
        float s;
        if (t.block == 64) {  // nf4: float32
          s = static_cast<const float*>(t.scales)[i];
        } else {
          const uint32_t byte = static_cast<const uint8_t*>(t.scales)[i];
          const uint32_t bits = (byte << cpu_tiled::scale_shift(t.block)) + cpu_tiled::scale_bias(t.block);
          std::memcpy(&s, &bits, sizeof(s));
        }
        acc += part * s;
      }
      out[m * ldo + r] = acc;
    }
}

void decode_scales_scalar(const uint8_t* bytes, Format f, float tensor_scale, int64_t nb, float* dst) {
  const float* table = scale_table(f);
  if (f == Format::NVFP4)
    for (int64_t b = 0; b < nb; ++b) dst[b] = table[bytes[b]] * tensor_scale;
  else
    for (int64_t b = 0; b < nb; ++b) dst[b] = table[bytes[b]];
}

}  // namespace

CpuKernels scalar_kernels() {
  return {"scalar",           KOrder::kNatural,        &decode_scales_scalar, &decode_row_scalar,
          &decode_row_bf16_scalar, &decode_row_scalar, &dot_rows_scalar, &gemm4_scalar,
          &tiled_dot_scalar};
}

CpuKernels cpu_kernels() {
  switch (cpu_isa::selected(cpu_isa::kFp4Env)) {  // APT_FP4_CPU_ISA forces one
#if defined(APT_X86)
    case cpu_isa::Isa::kAvx512: return avx512_kernels();
    case cpu_isa::Isa::kAvx2: return avx2_kernels();
#endif
    default: return scalar_kernels();
  }
}

const float* scale_table(Format f) {
  // 2^(e - 127) for every stored mxfp4 exponent byte (exact; 2^-127 is a float32 subnormal).
  static const std::array<float, 256> mx = [] {
    std::array<float, 256> v{};
    for (int i = 0; i < 256; ++i) v[i] = std::ldexp(1.0f, i - 127);
    return v;
  }();
  static const std::array<float, 256> e4m3 = [] {
    std::array<float, 256> v{};
    for (int i = 0; i < 256; ++i)
      v[i] = static_cast<float>(c10::Float8_e4m3fn(static_cast<uint8_t>(i), c10::Float8_e4m3fn::from_bits()));
    return v;
  }();
  TORCH_CHECK(f != Format::NF4, "scale_table: nf4 scales are float32 already");
  return f == Format::NVFP4 ? e4m3.data() : mx.data();
}

void row_decode_scales(const CpuKernels& kern, const at::Tensor& scales, float tensor_scale, Format f, int64_t n,
                       float* dst) {
  const int64_t nb = scales.size(1);
  if (f == Format::NF4) {
    std::memcpy(dst, scales.const_data_ptr<float>() + n * nb, nb * sizeof(float));
    return;
  }
  const uint8_t* s = static_cast<const uint8_t*>(scales.const_data_ptr()) + n * nb;
  kern.decode_scales(s, f, tensor_scale, nb, dst);
}

}  // namespace apt::fp4
