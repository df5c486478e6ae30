// AVX2 row kernels of the FP4 CPU ops (compiled with -mavx2 -mfma; called only after the
// run-time check in fp4_cpu_kernels.cpp). Codes are decoded 8 at a time by two vpermps over
// the two halves of the 16-entry float LUT and a blend on code bit 3, scaled once per block
// and reused for every x row of the call (fp32 FMA accumulation).
#include <immintrin.h>

#include "fp4/fp4_cpu_kernels.h"

namespace apt::fp4 {
namespace {

struct Lut {
  __m256 lo, hi;  // values of codes 0..7 and 8..15
};

// 8 packed bytes -> 16 codes in element order (low nibble first).
inline __m128i codes16(const uint8_t* p) {
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  const __m128i mask = _mm_set1_epi8(0x0F);
  return _mm_unpacklo_epi8(_mm_and_si128(b, mask), _mm_and_si128(_mm_srli_epi16(b, 4), mask));
}

inline __m256 decode8(__m128i codes8, const Lut& lut) {
  const __m256i i = _mm256_cvtepu8_epi32(codes8);
  const __m256 sign_bit3 = _mm256_castsi256_ps(_mm256_slli_epi32(i, 28));
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lut.lo, i), _mm256_permutevar8x32_ps(lut.hi, i),
                          sign_bit3);
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

void decode_row_avx2(const PackedRow& row, float* out) {
  const Lut lut{_mm256_loadu_ps(row.lut), _mm256_loadu_ps(row.lut + 8)};
  const int64_t nb = row.kp / row.block;
  for (int64_t b = 0; b < nb; ++b) {
    const __m256 s = _mm256_set1_ps(row.scales[b]);
    for (int64_t g = 0; g < row.block; g += 16) {
      const int64_t k = b * row.block + g;
      const __m128i c = codes16(row.packed + k / 2);
      _mm256_storeu_ps(out + k, _mm256_mul_ps(decode8(c, lut), s));
      _mm256_storeu_ps(out + k + 8, _mm256_mul_ps(decode8(_mm_srli_si128(c, 8), lut), s));
    }
  }
}

// MT x rows at once, two accumulators per row (the two 8-wide halves of a 16-code group).
template <int MT>
void dot_rows_t(const PackedRow& row, const float* x, int64_t ldx, float* out) {
  __m256 acc[MT][2];
  for (int m = 0; m < MT; ++m) acc[m][0] = acc[m][1] = _mm256_setzero_ps();
  const Lut lut{_mm256_loadu_ps(row.lut), _mm256_loadu_ps(row.lut + 8)};
  const int64_t nb = row.kp / row.block;
  for (int64_t b = 0; b < nb; ++b) {
    const __m256 s = _mm256_set1_ps(row.scales[b]);
    for (int64_t g = 0; g < row.block; g += 16) {
      const int64_t k = b * row.block + g;
      const __m128i c = codes16(row.packed + k / 2);
      const __m256 w0 = _mm256_mul_ps(decode8(c, lut), s);
      const __m256 w1 = _mm256_mul_ps(decode8(_mm_srli_si128(c, 8), lut), s);
      for (int m = 0; m < MT; ++m) {
        acc[m][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + m * ldx + k), acc[m][0]);
        acc[m][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + m * ldx + k + 8), acc[m][1]);
      }
    }
  }
  for (int m = 0; m < MT; ++m) out[m] = hsum(_mm256_add_ps(acc[m][0], acc[m][1]));
}

void dot_rows_avx2(const PackedRow& row, const float* x, int64_t ldx, int64_t mrows, float* out) {
  int64_t m = 0;
  for (; m + 2 <= mrows; m += 2) dot_rows_t<2>(row, x + m * ldx, ldx, out + m);
  if (m < mrows) dot_rows_t<1>(row, x + m * ldx, ldx, out + m);
}

// MT x rows against the 4 decoded weight rows (8 accumulators for MT = 2 fit the 16 ymm).
template <int MT>
void gemm4_t(const float* w, int64_t len, const float* x, int64_t ldx, float* out, int64_t ldo) {
  __m256 acc[MT][4];
  for (int m = 0; m < MT; ++m)
    for (int r = 0; r < 4; ++r) acc[m][r] = _mm256_setzero_ps();
  for (int64_t k = 0; k < len; k += 8) {
    __m256 wr[4];
    for (int r = 0; r < 4; ++r) wr[r] = _mm256_loadu_ps(w + r * len + k);
    for (int m = 0; m < MT; ++m) {
      const __m256 xv = _mm256_loadu_ps(x + m * ldx + k);
      for (int r = 0; r < 4; ++r) acc[m][r] = _mm256_fmadd_ps(wr[r], xv, acc[m][r]);
    }
  }
  for (int m = 0; m < MT; ++m)
    for (int r = 0; r < 4; ++r) out[m * ldo + r] += hsum(acc[m][r]);
}

void gemm4_avx2(const float* w, int64_t len, const float* x, int64_t ldx, int64_t mrows, float* out,
                int64_t ldo) {
  int64_t m = 0;
  for (; m + 2 <= mrows; m += 2) gemm4_t<2>(w, len, x + m * ldx, ldx, out + m * ldo, ldo);
  if (m < mrows) gemm4_t<1>(w, len, x + m * ldx, ldx, out + m * ldo, ldo);
}

}  // namespace

CpuKernels avx2_kernels() { return {"avx2", KOrder::kNatural, &decode_row_avx2, &decode_row_avx2, &dot_rows_avx2, &gemm4_avx2}; }

}  // namespace apt::fp4
