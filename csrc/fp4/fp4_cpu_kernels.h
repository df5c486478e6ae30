// Row kernels of the FP4 CPU ops (decode and fused dot products), one implementation per
// instruction set: scalar (fp4_cpu_kernels.cpp), AVX2 (fp4_cpu_kernels_avx2.cpp) and AVX-512
// (fp4_cpu_kernels_avx512.cpp). `cpu_kernels()` returns those of the path cpu_isa.h selects:
// the best this CPU supports, or the one APT_FP4_CPU_ISA=scalar|avx2|avx512 forces (tests use
// it to cover every path).
#pragma once
#include <c10/util/BFloat16.h>

#include <cstdint>

#include "fp4/fp4_format.h"

namespace apt::fp4 {

// One packed weight row and its per-block decode scales (float32, already multiplied by the
// tensor scale / turned from exponents into powers of two).
struct PackedRow {
  const uint8_t* packed;  // [kp / 2], low nibble first
  const float* scales;    // [kp / block]; the linear kernels may read up to row_len(kp) / block,
                          // so callers zero-fill that tail
  int64_t kp;             // padded K: a multiple of block (and of 16)
  int64_t block;          // 16, 32 or 64
  const float* lut;       // [16] the value of each 4-bit code (E2M1 or NF4)
};

// out[k] = lut[code[k]] * scales[k / block] for k < kp (float32), in natural k order.
using DecodeRowFn = void (*)(const PackedRow& row, float* out);

// Like DecodeRowFn, each value then rounded to bfloat16 (round to nearest even; NaN stays NaN).
using DecodeRowBf16Fn = void (*)(const PackedRow& row, c10::BFloat16* out);

// The k order the linear kernels work in; x is reordered the same way once per call
// (linear_order_x in fp4_linear_cpu.cpp): a dot product does not care about the order as long
// as both sides share it.
//  - kNatural: as stored.
//  - kSplitPairs (AVX-512): K is cut into chunks of 32 (the last one zero-padded) and each
//    chunk is reordered to its 16 even-index elements, then its 16 odd-index ones, i.e. low
//    nibbles then high nibbles of 16 packed bytes: one byte-to-dword widening and two LUT
//    permutes decode 32 codes.
//  - kPlanes64 (AVX2): chunks of 64 (the last one zero-padded); position 8v + d of a chunk
//    (v, d < 8) holds element 32 (d / 4) + 16 ((v / 2) % 2) + 4 (d % 4) + 2 (v % 2) + v / 4:
//    the order in which byte-shuffle lookups of 32 packed bytes assemble float32 lanes.
enum class KOrder { kNatural, kSplitPairs, kPlanes64 };

// The length of a chunk of the order (1 for kNatural).
inline constexpr int64_t chunk_of(KOrder order) {
  return order == KOrder::kPlanes64 ? 64 : order == KOrder::kSplitPairs ? 32 : 1;
}

// The element (index within its chunk) at position q of a chunk.
inline constexpr int64_t element_at(KOrder order, int64_t q) {
  switch (order) {
    case KOrder::kSplitPairs: return q < 16 ? 2 * q : 2 * (q - 16) + 1;
    case KOrder::kPlanes64: {
      const int64_t v = q / 8, d = q % 8;
      return 32 * (d / 4) + 16 * ((v / 2) % 2) + 4 * (d % 4) + 2 * (v % 2) + v / 4;
    }
    default: return q;
  }
}
// The AVX-512 kernels (not run where no AVX-512 CPU is available) read positions 0-15 of a chunk
// as its even elements and 16-31 as its odd ones.
static_assert(element_at(KOrder::kSplitPairs, 5) == 10 && element_at(KOrder::kSplitPairs, 21) == 11,
              "split pairs: 16 even elements, then the 16 odd ones");

// Like DecodeRowFn but in the kernels' k order, writing row_len(kp) floats.
using DecodeRowLinearFn = void (*)(const PackedRow& row, float* out);

// out[m] = sum_k decode(row)[k] * x[m * ldx + k] for m < mrows, in float32, with x's rows in
// the kernels' k order (ldx >= their length); mrows <= kMaxFusedRows.
using DotRowsFn = void (*)(const PackedRow& row, const float* x, int64_t ldx, int64_t mrows,
                           float* out);

// dot_rows serves GEMV-like calls; more x rows go through decode_row_linear + gemm4.
inline constexpr int64_t kMaxFusedRows = 3;

// Four already decoded weight rows w [4, len] against mrows rows of x [.., ldx]:
// out[m * ldo + r] += sum_k w[r * len + k] * x[m * ldx + k] for r < 4, m < mrows (float32);
// len is a multiple of 16.
using Gemm4Fn = void (*)(const float* w, int64_t len, const float* x, int64_t ldx, int64_t mrows, float* out,
                         int64_t ldo);

// dst[b] = the float32 decode scale of scale byte b < nb of an nvfp4 (float(e4m3) * tensor_scale)
// or mxfp4 (2^(e - 127)) weight row: scale_table(f)[bytes[b]], times tensor_scale for nvfp4.
using DecodeScalesFn = void (*)(const uint8_t* bytes, Format f, float tensor_scale, int64_t nb, float* dst);

// One tile (16 weight rows) of the CPU tiled layout (fp4_cpu_tiled_layout.h).
struct TiledSlice {
  const uint32_t* words;  // [kp / 8][16]: word j of the tile's 16 rows
  const void* scales;     // [kp / block][16]: bytes (nvfp4, mxfp4) or float32 (nf4)
  int64_t kp;             // padded K: a multiple of block
  int64_t block;          // 16 (nvfp4), 32 (mxfp4) or 64 (nf4): fixes the scale encoding
  const float* lut;       // [16] the value of each 4-bit code
};

// out[m * ldo + r] = sum_b scale(b, r) * sum_{k in block b} w[r][k] * x[m * ldx + k] for the
// tile's rows r < 16 and m < mrows <= cpu_tiled::kMaxRows (float32; x has kp columns, zero
// past the logical K).
using TiledDotFn = void (*)(const TiledSlice& t, const float* x, int64_t ldx, int64_t mrows, float* out,
                            int64_t ldo);

struct CpuKernels {
  const char* isa;
  KOrder order;
  DecodeScalesFn decode_scales;
  DecodeRowFn decode_row;
  DecodeRowBf16Fn decode_row_bf16;
  DecodeRowLinearFn decode_row_linear;
  DotRowsFn dot_rows;
  Gemm4Fn gemm4;
  TiledDotFn tiled_dot;

  // Length of a row of x (and of a decoded weight row) in this k order: kp rounded up to the
  // order's chunk.
  int64_t row_len(int64_t kp) const { return (kp + chunk_of(order) - 1) / chunk_of(order) * chunk_of(order); }
};

CpuKernels scalar_kernels();
#if defined(APT_X86)
CpuKernels avx2_kernels();
CpuKernels avx512_kernels();
#endif

// Rows of bfloat16 x from which fp4_linear's CPU kernel uses torch's bf16 GEMM on weight slabs
// decoded to bfloat16 (fp4_linear_cpu.cpp): on the AVX-512 path of a CPU with AMX-BF16 or
// AVX512-BF16; 0 where that path is not taken.
int64_t bf16_gemm_min_rows();

// The kernels to use now (cpu_isa::selected(cpu_isa::kFp4Env)).
CpuKernels cpu_kernels();

// The float32 value of every scale byte of an nvfp4 (float(e4m3)) or mxfp4 (2^(e - 127)) weight.
const float* scale_table(Format f);

// Decode scales of row n: dst[b] = float32 decode scale of block b (docs/contract.md §3).
void row_decode_scales(const CpuKernels& kern, const at::Tensor& scales, float tensor_scale, Format f, int64_t n,
                       float* dst);

// The 16 code values of a format as float32.
inline const float* code_lut(Format f) { return f == Format::NF4 ? kNF4 : kE2M1; }

}  // namespace apt::fp4
