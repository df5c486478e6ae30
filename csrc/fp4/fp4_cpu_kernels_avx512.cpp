// AVX-512 row kernels of the FP4 CPU ops (compiled with -mavx512f/bw; called only after the
// run-time check in fp4_cpu_kernels.cpp). A 16-element group of codes is decoded with one
// vpermps over the 16-entry float LUT (E2M1 or NF4), scaled once per block, and reused for
// every x row of the call (fp32 FMA accumulation).
#include <immintrin.h>

#include "fp4/fp4_cpu_kernels.h"

namespace apt::fp4 {
namespace {

// 8 packed bytes -> 16 codes in element order (low nibble first).
inline __m128i codes16(const uint8_t* p) {
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  const __m128i mask = _mm_set1_epi8(0x0F);
  return _mm_unpacklo_epi8(_mm_and_si128(b, mask), _mm_and_si128(_mm_srli_epi16(b, 4), mask));
}

inline __m512 decode16(const uint8_t* p, __m512 lut) {
  return _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(codes16(p)), lut);
}

void decode_row_avx512(const PackedRow& row, float* out) {
  const __m512 lut = _mm512_loadu_ps(row.lut);
  const int64_t nb = row.kp / row.block;
  for (int64_t b = 0; b < nb; ++b) {
    const __m512 s = _mm512_set1_ps(row.scales[b]);
    for (int64_t g = 0; g < row.block; g += 16) {
      const int64_t k = b * row.block + g;
      _mm512_storeu_ps(out + k, _mm512_mul_ps(decode16(row.packed + k / 2, lut), s));
    }
  }
}

// MT x rows at once; U independent accumulators per row (over alternating blocks) hide the
// FMA latency when MT is small.
template <int MT, int U>
void dot_rows_t(const PackedRow& row, const float* x, int64_t ldx, float* out) {
  __m512 acc[MT][U];
  for (int m = 0; m < MT; ++m)
    for (int u = 0; u < U; ++u) acc[m][u] = _mm512_setzero_ps();
  const __m512 lut = _mm512_loadu_ps(row.lut);
  const int64_t nb = row.kp / row.block;
  auto block = [&](int64_t b, int u) {
    const __m512 s = _mm512_set1_ps(row.scales[b]);
    for (int64_t g = 0; g < row.block; g += 16) {
      const int64_t k = b * row.block + g;
      const __m512 w = _mm512_mul_ps(decode16(row.packed + k / 2, lut), s);
      for (int m = 0; m < MT; ++m)
        acc[m][u] = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + m * ldx + k), acc[m][u]);
    }
  };
  int64_t b = 0;
  for (; b + U <= nb; b += U)
    for (int u = 0; u < U; ++u) block(b + u, u);
  for (; b < nb; ++b) block(b, 0);
  for (int m = 0; m < MT; ++m) {
    __m512 a = acc[m][0];
    for (int u = 1; u < U; ++u) a = _mm512_add_ps(a, acc[m][u]);
    out[m] = _mm512_reduce_add_ps(a);
  }
}

void dot_rows_avx512(const PackedRow& row, const float* x, int64_t ldx, int64_t mrows, float* out) {
  int64_t m = 0;
  if (m + 2 <= mrows) { dot_rows_t<2, 2>(row, x + m * ldx, ldx, out + m); m += 2; }
  if (m < mrows) dot_rows_t<1, 4>(row, x + m * ldx, ldx, out + m);
}

// MT x rows against the 4 decoded weight rows: 4*MT accumulators, one x load per 4 FMAs.
template <int MT>
void gemm4_t(const float* w, int64_t kp, const float* x, int64_t ldx, float* out, int64_t ldo) {
  __m512 acc[MT][4];
  for (int m = 0; m < MT; ++m)
    for (int r = 0; r < 4; ++r) acc[m][r] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kp; k += 16) {
    __m512 wr[4];
    for (int r = 0; r < 4; ++r) wr[r] = _mm512_loadu_ps(w + r * kp + k);
    for (int m = 0; m < MT; ++m) {
      const __m512 xv = _mm512_loadu_ps(x + m * ldx + k);
      for (int r = 0; r < 4; ++r) acc[m][r] = _mm512_fmadd_ps(wr[r], xv, acc[m][r]);
    }
  }
  for (int m = 0; m < MT; ++m)
    for (int r = 0; r < 4; ++r) out[m * ldo + r] = _mm512_reduce_add_ps(acc[m][r]);
}

void gemm4_avx512(const float* w, int64_t kp, const float* x, int64_t ldx, int64_t mrows, float* out,
                  int64_t ldo) {
  int64_t m = 0;
  for (; m + 4 <= mrows; m += 4) gemm4_t<4>(w, kp, x + m * ldx, ldx, out + m * ldo, ldo);
  if (m + 2 <= mrows) { gemm4_t<2>(w, kp, x + m * ldx, ldx, out + m * ldo, ldo); m += 2; }
  if (m < mrows) gemm4_t<1>(w, kp, x + m * ldx, ldx, out + m * ldo, ldo);
}

}  // namespace

CpuKernels avx512_kernels() { return {"avx512", &decode_row_avx512, &dot_rows_avx512, &gemm4_avx512}; }

}  // namespace apt::fp4
