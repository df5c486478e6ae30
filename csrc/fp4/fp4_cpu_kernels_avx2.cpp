// AVX2 row kernels of the FP4 CPU ops (compiled with the avx2 path's flags of cpu_isa.h; called
// only when cpu_isa.h selects that path).
//
// Decoding is a byte-shuffle lookup: 32 packed bytes (64 codes) are split into low and high
// nibbles, and vpshufb looks up 32 codes per instruction in a 16-entry byte table. A float32
// code value has four bytes, so there is one table per byte ("byte planes"); E2M1 values are
// exact bfloat16 (their two low bytes are zero), so nvfp4 and mxfp4 take two lookups per 32
// codes and nf4 four. Unpacks, shifts and blends inside 128-bit lanes then assemble the
// float32 lanes, giving the 64 values in the k order KOrder::kPlanes64 (fp4_cpu_kernels.h).
// Dot products sum each chunk's unscaled products and apply the block scales once per chunk
// (fp32 FMA throughout). fp4_dequantize's natural order uses two vpermps over the LUT halves.
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <type_traits>

#include "fp4/fp4_cpu_kernels.h"
#include "fp4/fp4_cpu_tiled_layout.h"

namespace apt::fp4 {
namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// ---- scale bytes -------------------------------------------------------------------------

// mxfp4: 8 exponent bytes e -> 2^(e - 127), built bit by bit (a table gather is slower here):
// bits e << 23, except e = 0 (2^-127, the subnormal 0x00400000).
inline __m256 mx_scales8(const uint8_t* bytes) {
  const __m256i e = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(bytes)));
  const __m256i zero = _mm256_cmpeq_epi32(e, _mm256_setzero_si256());
  return _mm256_castsi256_ps(_mm256_blendv_epi8(_mm256_slli_epi32(e, 23), _mm256_set1_epi32(0x00400000), zero));
}

// A vpshufb table (in both 128-bit lanes) with the first entries v, the rest 0.
inline __m256i bytes16(std::initializer_list<int> v) {
  alignas(16) int8_t b[16] = {};
  int i = 0;
  for (int x : v) b[i++] = static_cast<int8_t>(x);
  return _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(b)));
}

// nvfp4: 32 e4m3 bytes s.EEEE.mmm -> their float32 values in out[0..3] (in order), exactly. Every
// e4m3 value is a bfloat16; its two bytes come from nibble lookups (vpshufb, 32 per instruction):
// a normal value's high byte is s | ((E >> 1) + 60), a function of the high nibble, and its low byte
// is the low nibble << 4; E = 0 (m * 2^-9) and NaN (s.1111.111) are blended in.
inline void e4m3_scales32(const uint8_t* bytes, __m256* out) {
  // Dwords ordered [0, 2, 4, 6 | 1, 3, 5, 7] so that the in-lane unpacks below give bytes 0-7,
  // 8-15, 16-23, 24-31 in out[0..3].
  const __m256i b = _mm256_permutevar8x32_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(bytes)),
                                                _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
  const __m256i e3e2e1 = _mm256_and_si256(_mm256_srli_epi16(b, 4), _mm256_set1_epi8(0x07));
  const __m256i l = _mm256_and_si256(b, _mm256_set1_epi8(0x0F));  // E0.mmm
  const __m256i sign = _mm256_and_si256(b, _mm256_set1_epi8(static_cast<char>(0x80)));
  __m256i hi = _mm256_shuffle_epi8(bytes16({0x3C, 0x3D, 0x3E, 0x3F, 0x40, 0x41, 0x42, 0x43}), e3e2e1);
  __m256i lo = _mm256_slli_epi16(l, 4);  // bytes below 16: nothing crosses into the next byte
  const __m256i e_zero =
      _mm256_cmpeq_epi8(_mm256_and_si256(b, _mm256_set1_epi8(0x78)), _mm256_setzero_si256());
  // m * 2^-9 for m = 0..7 as bfloat16 high / low bytes (0: zero).
  hi = _mm256_blendv_epi8(hi, _mm256_shuffle_epi8(bytes16({0, 0x3B, 0x3B, 0x3B, 0x3C, 0x3C, 0x3C, 0x3C}), l), e_zero);
  lo = _mm256_blendv_epi8(lo, _mm256_shuffle_epi8(bytes16({0, 0, 0x80, 0xC0, 0, 0x20, 0x40, 0x60}), l), e_zero);
  const __m256i nan = _mm256_cmpeq_epi8(_mm256_and_si256(b, _mm256_set1_epi8(0x7F)), _mm256_set1_epi8(0x7F));
  hi = _mm256_or_si256(_mm256_blendv_epi8(hi, _mm256_set1_epi8(0x7F), nan), sign);
  lo = _mm256_blendv_epi8(lo, _mm256_set1_epi8(static_cast<char>(0xC0)), nan);
  const __m256i w0 = _mm256_unpacklo_epi8(lo, hi), w1 = _mm256_unpackhi_epi8(lo, hi);  // bfloat16 words
  const __m256i z = _mm256_setzero_si256();
  out[0] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(z, w0));
  out[1] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(z, w0));
  out[2] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(z, w1));
  out[3] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(z, w1));
}

void decode_scales_avx2(const uint8_t* bytes, Format f, float tensor_scale, int64_t nb, float* dst) {
  int64_t b = 0;
  if (f == Format::NVFP4) {
    const __m256 ts = _mm256_set1_ps(tensor_scale);
    __m256 v[4];
    for (; b + 32 <= nb; b += 32) {
      e4m3_scales32(bytes + b, v);
      for (int i = 0; i < 4; ++i) _mm256_storeu_ps(dst + b + 8 * i, _mm256_mul_ps(v[i], ts));
    }
  } else {
    for (; b + 8 <= nb; b += 8) _mm256_storeu_ps(dst + b, mx_scales8(bytes + b));
  }
  scalar_kernels().decode_scales(bytes + b, f, tensor_scale, nb - b, dst + b);  // the rest
}

// ---- natural order (fp4_dequantize) -------------------------------------------------------

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

// ---- planes-64 order (fp4_linear) ---------------------------------------------------------

// Byte j of the float32 value of every code, as a vpshufb table in both 128-bit lanes.
struct Planes {
  __m256i byte[4];
};

inline Planes make_planes(const float* lut) {
  // Each group of 4 values -> [byte 0 of the 4 | byte 1 | byte 2 | byte 3], then a 4x4 transpose.
  const __m128i gather = _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  __m128i q[4];
  for (int i = 0; i < 4; ++i)
    q[i] = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(lut + 4 * i)), gather);
  const __m128i b01a = _mm_unpacklo_epi32(q[0], q[1]), b01b = _mm_unpacklo_epi32(q[2], q[3]);
  const __m128i b23a = _mm_unpackhi_epi32(q[0], q[1]), b23b = _mm_unpackhi_epi32(q[2], q[3]);
  return {{_mm256_broadcastsi128_si256(_mm_unpacklo_epi64(b01a, b01b)),
           _mm256_broadcastsi128_si256(_mm_unpackhi_epi64(b01a, b01b)),
           _mm256_broadcastsi128_si256(_mm_unpacklo_epi64(b23a, b23b)),
           _mm256_broadcastsi128_si256(_mm_unpackhi_epi64(b23a, b23b))}};
}

// True when every value is exact bfloat16 (bytes 0 and 1 zero): E2M1.
inline bool bf16_values(const Planes& t) {
  return _mm256_testz_si256(_mm256_or_si256(t.byte[0], t.byte[1]), _mm256_set1_epi8(-1)) != 0;
}

// 32 codes (one per byte, values 0..15) -> w[0..3]: w[2u + h] lane d = the value of the code in
// byte 16 (d / 4) + 8u + 2 (d % 4) + h.
template <bool kBf16>
inline void decode32(__m256i codes, const Planes& t, __m256* w) {
  const __m256i b2 = _mm256_shuffle_epi8(t.byte[2], codes), b3 = _mm256_shuffle_epi8(t.byte[3], codes);
  // High 16 bits of the values of bytes 0-7 (and 8-15) of each lane, one per 16-bit word.
  const __m256i hi0 = _mm256_unpacklo_epi8(b2, b3), hi1 = _mm256_unpackhi_epi8(b2, b3);
  if constexpr (kBf16) {
    const __m256i top = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
    w[0] = _mm256_castsi256_ps(_mm256_slli_epi32(hi0, 16));
    w[1] = _mm256_castsi256_ps(_mm256_and_si256(hi0, top));
    w[2] = _mm256_castsi256_ps(_mm256_slli_epi32(hi1, 16));
    w[3] = _mm256_castsi256_ps(_mm256_and_si256(hi1, top));
  } else {
    const __m256i b0 = _mm256_shuffle_epi8(t.byte[0], codes), b1 = _mm256_shuffle_epi8(t.byte[1], codes);
    const __m256i lo0 = _mm256_unpacklo_epi8(b0, b1), lo1 = _mm256_unpackhi_epi8(b0, b1);
    w[0] = _mm256_castsi256_ps(_mm256_blend_epi16(lo0, _mm256_slli_epi32(hi0, 16), 0xAA));
    w[1] = _mm256_castsi256_ps(_mm256_blend_epi16(_mm256_srli_epi32(lo0, 16), hi0, 0xAA));
    w[2] = _mm256_castsi256_ps(_mm256_blend_epi16(lo1, _mm256_slli_epi32(hi1, 16), 0xAA));
    w[3] = _mm256_castsi256_ps(_mm256_blend_epi16(_mm256_srli_epi32(lo1, 16), hi1, 0xAA));
  }
}

// The 64 codes of 32 packed bytes, unscaled, in KOrder::kPlanes64: w[4s + 2u + h].
template <bool kBf16>
inline void decode64(const uint8_t* p, const Planes& t, __m256* w) {
  const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i mask = _mm256_set1_epi8(0x0F);
  decode32<kBf16>(_mm256_and_si256(bytes, mask), t, w);
  decode32<kBf16>(_mm256_and_si256(_mm256_srli_epi16(bytes, 4), mask), t, w + 4);
}

// The block scales of a chunk for the vectors with u = 0 (sv[0]) and u = 1 (sv[1]), from the
// chunk's first scale s: lane d holds element 32 (d / 4) + 16u + ..., so blocks of 16 change
// with u and d / 4, blocks of 32 with d / 4 only, blocks of 64 not at all.
template <int kBlock>
inline void chunk_scales(const float* s, __m256* sv) {
  if constexpr (kBlock == 64) {
    sv[0] = sv[1] = _mm256_broadcast_ss(s);
  } else if constexpr (kBlock == 32) {
    sv[0] = sv[1] = _mm256_set_m128(_mm_broadcast_ss(s + 1), _mm_broadcast_ss(s));
  } else {
    static_assert(kBlock == 16, "blocks of 16, 32 or 64");
    sv[0] = _mm256_set_m128(_mm_broadcast_ss(s + 2), _mm_broadcast_ss(s));
    sv[1] = _mm256_set_m128(_mm_broadcast_ss(s + 3), _mm_broadcast_ss(s + 1));
  }
}

constexpr int64_t kPrefetchBytes = 2048;  // one nvfp4 row of K = 4096 ahead

// Calls fn(w, sv, c) for every chunk c of the row with its 64 decoded, unscaled values and its
// scale vectors. The last chunk of a K that is not a multiple of 64 is read from a zero-padded
// copy (never past the row); its scales past kp / block are the zeros PackedRow promises.
template <int kBlock, bool kBf16, class Fn>
inline void for_each_chunk(const PackedRow& row, const Planes& t, const Fn& fn) {
  const int64_t full = row.kp / 64;
  const float* s = row.scales;
  __m256 w[8], sv[2];
  for (int64_t c = 0; c < full; ++c, s += 64 / kBlock) {
    // Rows are read once, front to back: fetch kPrefetchBytes ahead (into the next row at the end).
    if (c % 2 == 0) _mm_prefetch(reinterpret_cast<const char*>(row.packed + 32 * c + kPrefetchBytes), _MM_HINT_T0);
    decode64<kBf16>(row.packed + 32 * c, t, w);
    chunk_scales<kBlock>(s, sv);
    fn(w, sv, c);
  }
  if (row.kp > 64 * full) {
    alignas(32) uint8_t tail[32] = {};
    std::memcpy(tail, row.packed + 32 * full, static_cast<size_t>((row.kp - 64 * full) / 2));
    decode64<kBf16>(tail, t, w);
    chunk_scales<kBlock>(s, sv);
    fn(w, sv, full);
  }
}

// Calls fn(block, bf16) with the row's block size and value kind as compile-time constants.
template <class Fn>
inline void with_layout(const PackedRow& row, const Planes& t, const Fn& fn) {
  using std::integral_constant;
  const bool bf16 = bf16_values(t);
  auto kind = [&](auto block) {
    if (bf16) fn(block, std::true_type{});
    else fn(block, std::false_type{});
  };
  if (row.block == 16) kind(integral_constant<int, 16>{});
  else if (row.block == 32) kind(integral_constant<int, 32>{});
  else kind(integral_constant<int, 64>{});
}

void decode_row_linear_avx2(const PackedRow& row, float* out) {
  const Planes t = make_planes(row.lut);
  with_layout(row, t, [&](auto block, auto bf16) {
    for_each_chunk<block.value, bf16.value>(row, t, [&](const __m256* w, const __m256* sv, int64_t c) {
      for (int v = 0; v < 8; ++v) _mm256_storeu_ps(out + 64 * c + 8 * v, _mm256_mul_ps(w[v], sv[(v >> 1) & 1]));
    });
  });
}

// MT x rows at once: per chunk and x row, the 4 vectors of each u are summed unscaled (two
// independent chains), then scaled into two accumulators.
template <int MT, int kBlock, bool kBf16>
void dot_rows_t(const PackedRow& row, const Planes& t, const float* x, int64_t ldx, float* out) {
  __m256 acc[MT][2];
  for (int m = 0; m < MT; ++m) acc[m][0] = acc[m][1] = _mm256_setzero_ps();
  for_each_chunk<kBlock, kBf16>(row, t, [&](const __m256* w, const __m256* sv, int64_t c) {
    for (int m = 0; m < MT; ++m) {
      const float* xm = x + m * ldx + 64 * c;
      __m256 p0 = _mm256_mul_ps(w[0], _mm256_loadu_ps(xm));
      __m256 p1 = _mm256_mul_ps(w[2], _mm256_loadu_ps(xm + 16));
      p0 = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(xm + 8), p0);
      p1 = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(xm + 24), p1);
      p0 = _mm256_fmadd_ps(w[4], _mm256_loadu_ps(xm + 32), p0);
      p1 = _mm256_fmadd_ps(w[6], _mm256_loadu_ps(xm + 48), p1);
      p0 = _mm256_fmadd_ps(w[5], _mm256_loadu_ps(xm + 40), p0);
      p1 = _mm256_fmadd_ps(w[7], _mm256_loadu_ps(xm + 56), p1);
      acc[m][0] = _mm256_fmadd_ps(p0, sv[0], acc[m][0]);
      acc[m][1] = _mm256_fmadd_ps(p1, sv[1], acc[m][1]);
    }
  });
  for (int m = 0; m < MT; ++m) out[m] = hsum(_mm256_add_ps(acc[m][0], acc[m][1]));
}

void dot_rows_avx2(const PackedRow& row, const float* x, int64_t ldx, int64_t mrows, float* out) {
  const Planes t = make_planes(row.lut);
  with_layout(row, t, [&](auto block, auto bf16) {
    int64_t m = 0;
    for (; m + 2 <= mrows; m += 2) dot_rows_t<2, block.value, bf16.value>(row, t, x + m * ldx, ldx, out + m);
    if (m < mrows) dot_rows_t<1, block.value, bf16.value>(row, t, x + m * ldx, ldx, out + m);
  });
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

// ---- the CPU tiled layout (fp4_cpu_tiled_layout.h) -----------------------------------------
// A tile's word row is 64 bytes: two ymm of 8 rows each. Code e of a word is decoded by a shift
// and vpermps, which reads the low 3 index bits: E2M1 (nvfp4, mxfp4) looks up the magnitude and
// takes the sign from code bit 3 (E2M1 codes 8..15 are the negatives of 0..7); nf4 looks up both
// table halves and blends on bit 3.

template <bool kNf4>
inline __m256 tiled_decode(__m256i idx, __m256 lut_lo, __m256 lut_hi) {
  const __m256 bit3 = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));  // code bit 3 -> bit 31
  if constexpr (kNf4) {
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lut_lo, idx), _mm256_permutevar8x32_ps(lut_hi, idx), bit3);
  } else {
    return _mm256_xor_ps(_mm256_permutevar8x32_ps(lut_lo, idx),
                         _mm256_and_ps(bit3, _mm256_castsi256_ps(_mm256_set1_epi32(INT32_MIN))));
  }
}

// Rows 8h..8h+7 of block b's scales as float32.
template <int kBlock>
inline __m256 tiled_scales8(const TiledSlice& t, int64_t b, int h) {
  if constexpr (kBlock == 64) {
    return _mm256_loadu_ps(static_cast<const float*>(t.scales) + b * 16 + 8 * h);
  } else {
    constexpr int kShift = cpu_tiled::scale_shift(kBlock);
    constexpr uint32_t kBias = cpu_tiled::scale_bias(kBlock);
    const __m256i bytes = _mm256_cvtepu8_epi32(
        _mm_loadl_epi64(reinterpret_cast<const __m128i*>(static_cast<const uint8_t*>(t.scales) + b * 16 + 8 * h)));
    return _mm256_castsi256_ps(
        _mm256_add_epi32(_mm256_slli_epi32(bytes, kShift), _mm256_set1_epi32(static_cast<int>(kBias))));
  }
}

// MT (1 or 2) rows of x against one tile: 2 x MT partial sums per block (the two row halves),
// scaled once per block.
template <int MT, int kBlock>
void tiled_dot_t(const TiledSlice& t, const float* x, int64_t ldx, float* out, int64_t ldo) {
  constexpr bool kNf4 = kBlock == 64;
  constexpr int kWords = kBlock / 8;
  const __m256 lut_lo = _mm256_loadu_ps(t.lut), lut_hi = _mm256_loadu_ps(t.lut + 8);
  __m256 acc[MT][2];
  for (int m = 0; m < MT; ++m) acc[m][0] = acc[m][1] = _mm256_setzero_ps();
  const int64_t nb = t.kp / kBlock;
  for (int64_t b = 0; b < nb; ++b) {
    __m256 part[MT][2];
    for (int m = 0; m < MT; ++m) part[m][0] = part[m][1] = _mm256_setzero_ps();
    for (int j = 0; j < kWords; ++j) {
      const int64_t w = b * kWords + j;
      _mm_prefetch(reinterpret_cast<const char*>(t.words + (w + cpu_tiled::kPrefetchWords) * 16), _MM_HINT_T0);
      const __m256i v[2] = {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.words + w * 16)),
                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t.words + w * 16 + 8))};
      for (int e = 0; e < 8; ++e)
        for (int h = 0; h < 2; ++h) {
          const __m256 wv = tiled_decode<kNf4>(e == 0 ? v[h] : _mm256_srli_epi32(v[h], 4 * e), lut_lo, lut_hi);
          for (int m = 0; m < MT; ++m)
            part[m][h] = _mm256_fmadd_ps(wv, _mm256_set1_ps(x[m * ldx + 8 * w + e]), part[m][h]);
        }
    }
    for (int h = 0; h < 2; ++h) {
      const __m256 s = tiled_scales8<kBlock>(t, b, h);
      for (int m = 0; m < MT; ++m) acc[m][h] = _mm256_fmadd_ps(part[m][h], s, acc[m][h]);
    }
  }
  for (int m = 0; m < MT; ++m)
    for (int h = 0; h < 2; ++h) _mm256_storeu_ps(out + m * ldo + 8 * h, acc[m][h]);
}

template <int kBlock>
void tiled_dot_block(const TiledSlice& t, const float* x, int64_t ldx, int64_t mrows, float* out, int64_t ldo) {
  int64_t m = 0;
  for (; m + 2 <= mrows; m += 2) tiled_dot_t<2, kBlock>(t, x + m * ldx, ldx, out + m * ldo, ldo);
  if (m < mrows) tiled_dot_t<1, kBlock>(t, x + m * ldx, ldx, out + m * ldo, ldo);
}

void tiled_dot_avx2(const TiledSlice& t, const float* x, int64_t ldx, int64_t mrows, float* out, int64_t ldo) {
  if (t.block == 16) tiled_dot_block<16>(t, x, ldx, mrows, out, ldo);
  else if (t.block == 32) tiled_dot_block<32>(t, x, ldx, mrows, out, ldo);
  else tiled_dot_block<64>(t, x, ldx, mrows, out, ldo);
}

}  // namespace

CpuKernels avx2_kernels() {
  return {"avx2",         KOrder::kPlanes64,       &decode_scales_avx2, &decode_row_avx2,
          scalar_kernels().decode_row_bf16, &decode_row_linear_avx2, &dot_rows_avx2, &gemm4_avx2,
          &tiled_dot_avx2};
}

}  // namespace apt::fp4
