// AVX-512 row kernels of the FP4 CPU ops (compiled with -mavx512f/bw/vl/dq; called only after
// the run-time check in fp4_cpu_kernels.cpp). Codes are looked up with vpermps in the
// 16-entry float LUT (E2M1 or NF4; vpermps only reads the low 4 index bits, so a byte widened
// to a dword indexes its low nibble directly and its high nibble after one shift).
// The linear kernels work in KOrder::kSplitPairs: 16 packed bytes -> one vpmovzxbd, two
// vpermps -> 32 weights (16 low nibbles, 16 high nibbles). decode_row_linear scales them (gemm4
// reuses the row for every x row); dot_rows sums a block's products unscaled and scales the sum
// once (fp32 FMA accumulation).
#include <immintrin.h>

#include "fp4/fp4_cpu_kernels.h"
#include "fp4/fp4_cpu_tiled_layout.h"

namespace apt::fp4 {
namespace {

// ---- natural order (fp4_dequantize) -------------------------------------------------------

// 8 packed bytes -> 16 codes in element order (low nibble first).
inline __m128i codes16(const uint8_t* p) {
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  const __m128i mask = _mm_set1_epi8(0x0F);
  return _mm_unpacklo_epi8(_mm_and_si128(b, mask), _mm_and_si128(_mm_srli_epi16(b, 4), mask));
}

// Calls store(k, values k..k+15) for every 16 decoded, scaled values of the row.
template <class Store>
inline void decode_row_each16(const PackedRow& row, const Store& store) {
  const __m512 lut = _mm512_loadu_ps(row.lut);
  const int64_t nb = row.kp / row.block;
  for (int64_t b = 0; b < nb; ++b) {
    const __m512 s = _mm512_set1_ps(row.scales[b]);
    for (int64_t g = 0; g < row.block; g += 16) {
      const int64_t k = b * row.block + g;
      store(k, _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_cvtepu8_epi32(codes16(row.packed + k / 2)), lut), s));
    }
  }
}

void decode_row_avx512(const PackedRow& row, float* out) {
  decode_row_each16(row, [out](int64_t k, __m512 v) { _mm512_storeu_ps(out + k, v); });
}

// 16 float32 -> bfloat16, round to nearest even (NaN -> the quiet NaN 0x7FC0, as c10::BFloat16).
inline __m256i to_bf16(__m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
  r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC0));
  return _mm512_cvtepi32_epi16(r);
}

void decode_row_bf16_avx512(const PackedRow& row, c10::BFloat16* out) {
  decode_row_each16(row, [out](int64_t k, __m512 v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k), to_bf16(v));
  });
}

// ---- split-pairs order (fp4_linear) -------------------------------------------------------

// Chunk c (32 elements, packed bytes 16c..16c+15): lo = elements 32c + 2j, hi = elements
// 32c + 2j + 1 for j < 16.
struct Chunk {
  __m512 lo, hi;
};

// 32 codes of chunk c (16 packed bytes; a last chunk of only 16 elements, kp % 32 == 16 for
// nvfp4, reads 8 bytes and decodes zeros for its missing half), unscaled: lo = elements 2j,
// hi = elements 2j + 1 of the chunk.
inline Chunk codes_chunk(const PackedRow& row, int64_t c, __m512 lut) {
  const uint8_t* p = row.packed + 16 * c;
  const __m128i bytes = 32 * c + 32 <= row.kp ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(p))
                                              : _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  const __m512i v = _mm512_cvtepu8_epi32(bytes);
  return {_mm512_permutexvar_ps(v, lut), _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut)};
}

// The same, scaled. A last chunk of only 16 elements (nvfp4 only) gets scale 0 for its missing
// half.
inline Chunk decode_chunk(const PackedRow& row, int64_t c, __m512 lut) {
  const Chunk w = codes_chunk(row, c, lut);
  __m512 s;
  if (row.block == 16) {  // lanes 0-7: block 2c, lanes 8-15: block 2c + 1
    const float s1 = 32 * c + 32 <= row.kp ? row.scales[2 * c + 1] : 0.0f;
    s = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(row.scales[2 * c]), _mm512_set1_ps(s1));
  } else {
    s = _mm512_set1_ps(row.scales[row.block == 64 ? c / 2 : c]);  // blocks of 32 or 64 (no run-time division)
  }
  return {_mm512_mul_ps(w.lo, s), _mm512_mul_ps(w.hi, s)};
}

void decode_row_linear_avx512(const PackedRow& row, float* out) {
  const __m512 lut = _mm512_loadu_ps(row.lut);
  for (int64_t c = 0; c < (row.kp + 31) / 32; ++c) {
    const Chunk w = decode_chunk(row, c, lut);
    _mm512_storeu_ps(out + 32 * c, w.lo);
    _mm512_storeu_ps(out + 32 * c + 16, w.hi);
  }
}

constexpr int64_t kPrefetchBytes = 2048;  // one nvfp4 row of K = 4096 ahead

// MT x rows at once, blocks of kBlock: per block the products are summed unscaled (one multiply
// and one FMA per chunk and x row) and scaled once into the block's accumulator: U independent
// accumulators per row (over alternating blocks) hide the FMA latency. nvfp4 (blocks of 16):
// lanes 0-7 of a chunk are block 2c, lanes 8-15 block 2c + 1, so the scale is a two-valued
// vector. Scales past kp / block are the zeros PackedRow promises.
template <int MT, int U, int kBlock>
void dot_rows_t(const PackedRow& row, const float* x, int64_t ldx, float* out) {
  constexpr int kChunks = kBlock == 64 ? 2 : 1;  // chunks of 32 per scale step
  __m512 acc[MT][U];
  for (int m = 0; m < MT; ++m)
    for (int u = 0; u < U; ++u) acc[m][u] = _mm512_setzero_ps();
  const __m512 lut = _mm512_loadu_ps(row.lut);
  const int64_t nc = (row.kp + 31) / 32, steps = (nc + kChunks - 1) / kChunks;
  auto step = [&](int64_t i, int u) {
    __m512 part[MT];
    for (int h = 0; h < kChunks; ++h) {
      const int64_t c = i * kChunks + h;
      if (kChunks > 1 && c >= nc) break;
      if (c % 4 == 0) _mm_prefetch(reinterpret_cast<const char*>(row.packed + 16 * c + kPrefetchBytes), _MM_HINT_T0);
      const Chunk w = codes_chunk(row, c, lut);
      for (int m = 0; m < MT; ++m) {
        const float* xm = x + m * ldx + 32 * c;
        const __m512 lo = _mm512_mul_ps(w.lo, _mm512_loadu_ps(xm));
        part[m] = h == 0 ? _mm512_fmadd_ps(w.hi, _mm512_loadu_ps(xm + 16), lo)
                         : _mm512_add_ps(part[m], _mm512_fmadd_ps(w.hi, _mm512_loadu_ps(xm + 16), lo));
      }
    }
    __m512 sv;
    if constexpr (kBlock == 16) {
      sv = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(row.scales[2 * i]), _mm512_set1_ps(row.scales[2 * i + 1]));
    } else {
      sv = _mm512_set1_ps(row.scales[i]);  // step i = block i (one chunk of 32, or two of a block of 64)
    }
    for (int m = 0; m < MT; ++m) acc[m][u] = _mm512_fmadd_ps(part[m], sv, acc[m][u]);
  };
  int64_t i = 0;
  for (; i + U <= steps; i += U)
    for (int u = 0; u < U; ++u) step(i + u, u);
  for (; i < steps; ++i) step(i, 0);
  for (int m = 0; m < MT; ++m) {
    __m512 a = acc[m][0];
    for (int u = 1; u < U; ++u) a = _mm512_add_ps(a, acc[m][u]);
    out[m] = _mm512_reduce_add_ps(a);
  }
}

// Each weight chunk is decoded once for all mrows (<= 3) rows. (Keeping up to 8 rows'
// accumulators in registers was measured slower than the gemm4 path from 4 rows up.)
template <int kBlock>
void dot_rows_block(const PackedRow& row, const float* x, int64_t ldx, int64_t mrows, float* out) {
  if (mrows >= 3) dot_rows_t<3, 2, kBlock>(row, x, ldx, out);
  else if (mrows == 2) dot_rows_t<2, 2, kBlock>(row, x, ldx, out);
  else dot_rows_t<1, 4, kBlock>(row, x, ldx, out);
}

void dot_rows_avx512(const PackedRow& row, const float* x, int64_t ldx, int64_t mrows, float* out) {
  if (row.block == 16) dot_rows_block<16>(row, x, ldx, mrows, out);
  else if (row.block == 32) dot_rows_block<32>(row, x, ldx, mrows, out);
  else dot_rows_block<64>(row, x, ldx, mrows, out);
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

// ---- the CPU tiled layout (fp4_cpu_tiled_layout.h) -----------------------------------------

// The 16 rows' scales of block b as float32 (fp4_cpu_tiled_layout.h): nvfp4 (blocks of 16) and
// mxfp4 (32) bytes turned into float bits, nf4 (64) float32 as stored.
template <int kBlock>
inline __m512 tile_scales(const TiledSlice& t, int64_t b) {
  if constexpr (kBlock == 64) {
    return _mm512_loadu_ps(static_cast<const float*>(t.scales) + b * 16);
  } else {
    constexpr int kShift = cpu_tiled::scale_shift(kBlock);
    constexpr uint32_t kBias = cpu_tiled::scale_bias(kBlock);
    const __m512i bytes = _mm512_cvtepu8_epi32(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint8_t*>(t.scales) + b * 16)));
    return _mm512_castsi512_ps(
        _mm512_add_epi32(_mm512_slli_epi32(bytes, kShift), _mm512_set1_epi32(static_cast<int>(kBias))));
  }
}

// MT rows of x against one tile: per word index, one 64-byte load holds 8 codes of each of the
// 16 rows; code e (bits 4e..4e+3) is decoded by a shift and one vpermps, and an FMA with x's
// column (broadcast) adds it to the 16 row sums. NA independent partial sums per x row and block
// hide the FMA latency; each block's sums are scaled once.
template <int MT, int kBlock>
void tiled_dot_t(const TiledSlice& t, const float* x, int64_t ldx, float* out, int64_t ldo) {
  constexpr int kWords = kBlock / 8;
  constexpr int NA = MT == 1 ? 4 : (MT == 2 ? 2 : 1);
  const __m512 lut = _mm512_loadu_ps(t.lut);
  __m512 acc[MT];
  for (int m = 0; m < MT; ++m) acc[m] = _mm512_setzero_ps();
  const int64_t nb = t.kp / kBlock;
  for (int64_t b = 0; b < nb; ++b) {
    __m512 part[MT][NA];
    for (int m = 0; m < MT; ++m)
      for (int a = 0; a < NA; ++a) part[m][a] = _mm512_setzero_ps();
    for (int j = 0; j < kWords; ++j) {
      const int64_t w = b * kWords + j;
      _mm_prefetch(reinterpret_cast<const char*>(t.words + (w + cpu_tiled::kPrefetchWords) * 16), _MM_HINT_T0);
      const __m512i v = _mm512_loadu_si512(t.words + w * 16);
      for (int e = 0; e < 8; ++e) {
        const __m512 wv = _mm512_permutexvar_ps(e == 0 ? v : _mm512_srli_epi32(v, 4 * e), lut);
        for (int m = 0; m < MT; ++m)
          part[m][e % NA] = _mm512_fmadd_ps(wv, _mm512_set1_ps(x[m * ldx + 8 * w + e]), part[m][e % NA]);
      }
    }
    const __m512 s = tile_scales<kBlock>(t, b);
    for (int m = 0; m < MT; ++m) {
      __m512 sum = part[m][0];
      for (int a = 1; a < NA; ++a) sum = _mm512_add_ps(sum, part[m][a]);
      acc[m] = _mm512_fmadd_ps(sum, s, acc[m]);
    }
  }
  for (int m = 0; m < MT; ++m) _mm512_storeu_ps(out + m * ldo, acc[m]);
}

template <int kBlock>
void tiled_dot_block(const TiledSlice& t, const float* x, int64_t ldx, int64_t mrows, float* out, int64_t ldo) {
  switch (mrows) {
    case 1: tiled_dot_t<1, kBlock>(t, x, ldx, out, ldo); break;
    case 2: tiled_dot_t<2, kBlock>(t, x, ldx, out, ldo); break;
    case 3: tiled_dot_t<3, kBlock>(t, x, ldx, out, ldo); break;
    default: tiled_dot_t<4, kBlock>(t, x, ldx, out, ldo); break;
  }
}

void tiled_dot_avx512(const TiledSlice& t, const float* x, int64_t ldx, int64_t mrows, float* out, int64_t ldo) {
  if (t.block == 16) tiled_dot_block<16>(t, x, ldx, mrows, out, ldo);
  else if (t.block == 32) tiled_dot_block<32>(t, x, ldx, mrows, out, ldo);
  else tiled_dot_block<64>(t, x, ldx, mrows, out, ldo);
}

}  // namespace

// Scale bytes are decoded by the AVX2 code (this path requires the AVX2 flags too).
CpuKernels avx512_kernels() {
  return {"avx512",          KOrder::kSplitPairs,        avx2_kernels().decode_scales, &decode_row_avx512,
          &decode_row_bf16_avx512,   &decode_row_linear_avx512, &dot_rows_avx512, &gemm4_avx512,
          &tiled_dot_avx512};
}

}  // namespace apt::fp4
