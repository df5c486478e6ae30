// CPU kernel of apt::fp4_quantize, bit-exact with apt_ext/reference/fp4.py: the same float32
// operations in the same order (nvfp4: s = (bamax / 6) / ts, clamp 448, float8_e4m3fn RNE,
// dec = float(s8) * ts, q = w / dec; mxfp4: exact ceil(log2(bamax / 6)) by frexp, q = w / 2^e;
// nf4: q = w / absmax, nearest NF4 value by float32 distance, ties to the lower index).
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/scalar_tensor.h>
#include <c10/util/Float8_e4m3fn.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "fp4/fp4_format.h"

namespace apt::fp4 {
namespace {

constexpr float kE4M3Max = 448.0f;

// Round to the nearest E2M1 code, ties to mantissa bit 0, saturating at 6; -0 -> code 0.
inline uint8_t e2m1_code(float v) {
  const float m = std::fabs(v);
  uint8_t c = static_cast<uint8_t>((m > 0.25f) + (m >= 0.75f) + (m > 1.25f) + (m >= 1.75f) + (m > 2.5f) +
                                   (m >= 3.5f) + (m > 5.0f));
  if (v < 0.0f && c > 0) c += 8;
  return c;
}

// Index of the nearest NF4 value to q by float32 |q - v|; ties keep the lower index.
inline uint8_t nf4_code(float q) {
  uint8_t best = 0;
  float best_d = std::fabs(q - kNF4[0]);
  for (uint8_t i = 1; i < 16; ++i) {
    const float d = std::fabs(q - kNF4[i]);
    if (d < best_d) {
      best_d = d;
      best = i;
    }
  }
  return best;
}

// Exact ceil(log2(x)) for x >= 0 (frexp: x = mant * 2^ex, mant in [0.5, 1)), clamped to
// [-127, 127]; x == 0 -> -127.
inline int mx_exponent(float bamax) {
  if (bamax == 0.0f) return -127;
  int ex = 0;
  const float mant = std::frexp(bamax / 6.0f, &ex);
  const int e = mant == 0.5f ? ex - 1 : ex;
  return std::clamp(e, -127, 127);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> fp4_quantize_cpu(const at::Tensor& w, const std::string& fmt,
                                                                int64_t block_size) {
  const Format f = check_quantize_args(w, fmt, block_size);
  const at::Tensor wf = w.to(at::kFloat).contiguous();
  const int64_t n = wf.size(0), k = wf.size(1), bs = block_size;
  const int64_t nb = (k + bs - 1) / bs, kp = nb * bs;
  const float* src = wf.const_data_ptr<float>();

  // Pass 1: per-block absmax (padding is zero, so it never raises a block's max) + finiteness.
  std::vector<float> bamax(static_cast<size_t>(n * nb));
  std::atomic<bool> nonfinite{false};
  at::parallel_for(0, n, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      bool bad = false;
      for (int64_t b = 0; b < nb; ++b) {
        float mx = 0.0f;
        for (int64_t j = b * bs; j < std::min(k, (b + 1) * bs); ++j) {
          const float v = src[r * k + j];
          bad |= !std::isfinite(v);
          mx = std::max(mx, std::fabs(v));
        }
        bamax[r * nb + b] = mx;
      }
      if (bad) nonfinite.store(true);
    }
  });
  TORCH_CHECK_VALUE(!nonfinite.load(), kNonFiniteWeightMessage);

  float ts = 1.0f;
  if (f == Format::NVFP4) {
    const float amax = *std::max_element(bamax.begin(), bamax.end());
    if (amax > 0.0f) ts = amax / (kE4M3Max * 6.0f);
  }

  at::Tensor packed = at::empty({n, kp / 2}, wf.options().dtype(at::kByte));
  at::Tensor scales = at::empty({n, nb}, wf.options().dtype(scale_dtype(f)));
  uint8_t* pk = packed.mutable_data_ptr<uint8_t>();
  void* sc = scales.mutable_data_ptr();

  at::parallel_for(0, n, 16, [&](int64_t r0, int64_t r1) {
    std::vector<uint8_t> codes(static_cast<size_t>(bs));
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t b = 0; b < nb; ++b) {
        const float amax_b = bamax[r * nb + b];
        const int64_t j0 = b * bs, j1 = std::min(k, j0 + bs);
        const float* wb = src + r * k + j0;
        if (f == Format::NVFP4) {
          const float s = std::min((amax_b / 6.0f) / ts, kE4M3Max);
          const c10::Float8_e4m3fn s8(s);
          static_cast<c10::Float8_e4m3fn*>(sc)[r * nb + b] = s8;
          const float dec = static_cast<float>(s8) * ts;
          for (int64_t j = 0; j < bs; ++j)
            codes[j] = (dec == 0.0f || j0 + j >= j1) ? 0 : e2m1_code(wb[j] / dec);
        } else if (f == Format::MXFP4) {
          const int e = mx_exponent(amax_b);
          static_cast<uint8_t*>(sc)[r * nb + b] = static_cast<uint8_t>(e + 127);
          const float dec = std::ldexp(1.0f, e);
          for (int64_t j = 0; j < bs; ++j) codes[j] = j0 + j >= j1 ? 0 : e2m1_code(wb[j] / dec);
        } else {
          static_cast<float*>(sc)[r * nb + b] = amax_b;
          for (int64_t j = 0; j < bs; ++j)
            codes[j] = amax_b == 0.0f ? zero_code(f) : nf4_code(j0 + j >= j1 ? 0.0f : wb[j] / amax_b);
        }
        uint8_t* dst = pk + r * (kp / 2) + j0 / 2;
        for (int64_t j = 0; j < bs / 2; ++j) dst[j] = static_cast<uint8_t>(codes[2 * j] | (codes[2 * j + 1] << 4));
      }
    }
  });
  return {packed, scales, at::scalar_tensor(ts, wf.options())};
}

TORCH_LIBRARY_IMPL(apt, CPU, m) { m.impl("fp4_quantize", &fp4_quantize_cpu); }

}  // namespace apt::fp4
