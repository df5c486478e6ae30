// AVX-512 row kernels of the FP4 CPU ops (compiled with -mavx512f/bw/vl/dq; called only after
// the run-time check in fp4_cpu_kernels.cpp). Codes are looked up with vpermps in the
// 16-entry float LUT (E2M1 or NF4; vpermps only reads the low 4 index bits, so a byte widened
// to a dword indexes its low nibble directly and its high nibble after one shift).
// The linear kernels work in KOrder::kSplitPairs: 16 packed bytes -> one vpmovzxbd, two
// vpermps -> 32 weights (16 low nibbles, 16 high nibbles); each is scaled once per block and
// reused for every x row of the call (fp32 FMA accumulation).
#include <immintrin.h>

#include "fp4/fp4_cpu_kernels.h"

namespace apt::fp4 {
namespace {

// ---- natural order (fp4_dequantize) -------------------------------------------------------

// 8 packed bytes -> 16 codes in element order (low nibble first).
inline __m128i codes16(const uint8_t* p) {
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  const __m128i mask = _mm_set1_epi8(0x0F);
  return _mm_unpacklo_epi8(_mm_and_si128(b, mask), _mm_and_si128(_mm_srli_epi16(b, 4), mask));
}

void decode_row_avx512(const PackedRow& row, float* out) {
  const __m512 lut = _mm512_loadu_ps(row.lut);
  const int64_t nb = row.kp / row.block;
  for (int64_t b = 0; b < nb; ++b) {
    const __m512 s = _mm512_set1_ps(row.scales[b]);
    for (int64_t g = 0; g < row.block; g += 16) {
      const int64_t k = b * row.block + g;
      const __m512 w = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(codes16(row.packed + k / 2)), lut);
      _mm512_storeu_ps(out + k, _mm512_mul_ps(w, s));
    }
  }
}

// ---- split-pairs order (fp4_linear) -------------------------------------------------------

// Chunk c (32 elements, packed bytes 16c..16c+15) decoded and scaled: lo = elements 32c + 2j,
// hi = elements 32c + 2j + 1 for j < 16. A last chunk of only 16 elements (kp % 32 == 16,
// nvfp4 only) reads 8 bytes and gets scale 0 for its missing half.
struct Chunk {
  __m512 lo, hi;
};

inline Chunk decode_chunk(const PackedRow& row, int64_t c, __m512 lut) {
  const bool full = 32 * c + 32 <= row.kp;
  const uint8_t* p = row.packed + 16 * c;
  const __m128i bytes = full ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(p))
                             : _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  const __m512i v = _mm512_cvtepu8_epi32(bytes);
  __m512 s;
  if (row.block == 16) {  // lanes 0-7: block 2c, lanes 8-15: block 2c + 1
    const float s1 = full ? row.scales[2 * c + 1] : 0.0f;
    s = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(row.scales[2 * c]), _mm512_set1_ps(s1));
  } else {
    s = _mm512_set1_ps(row.scales[32 * c / row.block]);
  }
  return {_mm512_mul_ps(_mm512_permutexvar_ps(v, lut), s),
          _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut), s)};
}

void decode_row_linear_avx512(const PackedRow& row, float* out) {
  const __m512 lut = _mm512_loadu_ps(row.lut);
  for (int64_t c = 0; c < (row.kp + 31) / 32; ++c) {
    const Chunk w = decode_chunk(row, c, lut);
    _mm512_storeu_ps(out + 32 * c, w.lo);
    _mm512_storeu_ps(out + 32 * c + 16, w.hi);
  }
}

// MT x rows at once; U independent accumulator pairs per row (over alternating chunks) hide
// the FMA latency when MT is small.
template <int MT, int U>
void dot_rows_t(const PackedRow& row, const float* x, int64_t ldx, float* out) {
  __m512 acc[MT][U][2];
  for (int m = 0; m < MT; ++m)
    for (int u = 0; u < U; ++u) acc[m][u][0] = acc[m][u][1] = _mm512_setzero_ps();
  const __m512 lut = _mm512_loadu_ps(row.lut);
  const int64_t nc = (row.kp + 31) / 32;
  auto chunk = [&](int64_t c, int u) {
    const Chunk w = decode_chunk(row, c, lut);
    for (int m = 0; m < MT; ++m) {
      const float* xm = x + m * ldx + 32 * c;
      acc[m][u][0] = _mm512_fmadd_ps(w.lo, _mm512_loadu_ps(xm), acc[m][u][0]);
      acc[m][u][1] = _mm512_fmadd_ps(w.hi, _mm512_loadu_ps(xm + 16), acc[m][u][1]);
    }
  };
  int64_t c = 0;
  for (; c + U <= nc; c += U)
    for (int u = 0; u < U; ++u) chunk(c + u, u);
  for (; c < nc; ++c) chunk(c, 0);
  for (int m = 0; m < MT; ++m) {
    __m512 a = _mm512_add_ps(acc[m][0][0], acc[m][0][1]);
    for (int u = 1; u < U; ++u) a = _mm512_add_ps(a, _mm512_add_ps(acc[m][u][0], acc[m][u][1]));
    out[m] = _mm512_reduce_add_ps(a);
  }
}

// Each weight chunk is decoded once for all mrows (<= 3) rows. (Keeping up to 8 rows'
// accumulators in registers was measured slower than the gemm4 path from 4 rows up.)
void dot_rows_avx512(const PackedRow& row, const float* x, int64_t ldx, int64_t mrows, float* out) {
  if (mrows >= 3) dot_rows_t<3, 1>(row, x, ldx, out);
  else if (mrows == 2) dot_rows_t<2, 2>(row, x, ldx, out);
  else dot_rows_t<1, 2>(row, x, ldx, out);
}

// MT x rows against the 4 decoded weight rows: 4*MT accumulators, one x load per 4 FMAs.
template <int MT>
void gemm4_t(const float* w, int64_t len, const float* x, int64_t ldx, float* out, int64_t ldo) {
  __m512 acc[MT][4];
  for (int m = 0; m < MT; ++m)
    for (int r = 0; r < 4; ++r) acc[m][r] = _mm512_setzero_ps();
  for (int64_t k = 0; k < len; k += 16) {
    __m512 wr[4];
    for (int r = 0; r < 4; ++r) wr[r] = _mm512_loadu_ps(w + r * len + k);
    for (int m = 0; m < MT; ++m) {
      const __m512 xv = _mm512_loadu_ps(x + m * ldx + k);
      for (int r = 0; r < 4; ++r) acc[m][r] = _mm512_fmadd_ps(wr[r], xv, acc[m][r]);
    }
  }
  for (int m = 0; m < MT; ++m)
    for (int r = 0; r < 4; ++r) out[m * ldo + r] += _mm512_reduce_add_ps(acc[m][r]);
}

void gemm4_avx512(const float* w, int64_t len, const float* x, int64_t ldx, int64_t mrows, float* out,
                  int64_t ldo) {
  int64_t m = 0;
  for (; m + 4 <= mrows; m += 4) gemm4_t<4>(w, len, x + m * ldx, ldx, out + m * ldo, ldo);
  if (m + 2 <= mrows) { gemm4_t<2>(w, len, x + m * ldx, ldx, out + m * ldo, ldo); m += 2; }
  if (m < mrows) gemm4_t<1>(w, len, x + m * ldx, ldx, out + m * ldo, ldo);
}

}  // namespace

// Scale bytes are decoded by the AVX2 code (this path requires the AVX2 flags too).
CpuKernels avx512_kernels() {
  return {"avx512",          KOrder::kSplitPairs,        avx2_kernels().decode_scales, &decode_row_avx512,
          &decode_row_linear_avx512, &dot_rows_avx512, &gemm4_avx512};
}

}  // namespace apt::fp4
