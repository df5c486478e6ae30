// Row kernels of the FP4 CPU ops (decode and fused dot products), one implementation per
// instruction set: scalar (fp4_cpu_kernels.cpp), AVX2 (fp4_cpu_kernels_avx2.cpp) and AVX-512
// (fp4_cpu_kernels_avx512.cpp). `cpu_kernels()` picks the best one this CPU supports at run
// time; APT_FP4_CPU_ISA=scalar|avx2|avx512 forces one (tests use it to cover every path).
#pragma once
#include <cstdint>

#include "fp4/fp4_format.h"

namespace apt::fp4 {

// One packed weight row and its per-block decode scales (float32, already multiplied by the
// tensor scale / turned from exponents into powers of two).
struct PackedRow {
  const uint8_t* packed;  // [kp / 2], low nibble first
  const float* scales;    // [kp / block]
  int64_t kp;             // padded K: a multiple of block (and of 16)
  int64_t block;          // 16, 32 or 64
  const float* lut;       // [16] the value of each 4-bit code (E2M1 or NF4)
};

// out[k] = lut[code[k]] * scales[k / block] for k < kp (float32), in natural k order.
using DecodeRowFn = void (*)(const PackedRow& row, float* out);

// The k order the linear kernels work in. kNatural: as stored. kSplitPairs: K is cut into
// chunks of 32 (the last one zero-padded) and each chunk is reordered to its 16 even-index
// elements, then its 16 odd-index ones, i.e. low nibbles then high nibbles of 16 packed bytes.
// This lets AVX-512 decode 32 codes with one byte-to-dword widening and two LUT permutes.
// x is reordered the same way once per call (linear_order_x in fp4_linear_cpu.cpp); a dot
// product does not care about the order as long as both sides share it.
enum class KOrder { kNatural, kSplitPairs };

// Like DecodeRowFn but in the kernels' k order, writing row_len_x(kp) floats.
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

struct CpuKernels {
  const char* isa;
  KOrder order;
  DecodeRowFn decode_row;
  DecodeRowLinearFn decode_row_linear;
  DotRowsFn dot_rows;
  Gemm4Fn gemm4;

  // Length of a row of x (and of a decoded weight row) in this k order.
  int64_t row_len(int64_t kp) const { return order == KOrder::kSplitPairs ? (kp + 31) / 32 * 32 : kp; }
};

CpuKernels scalar_kernels();
#if defined(APT_X86)
CpuKernels avx2_kernels();
CpuKernels avx512_kernels();
#endif

// The kernels to use now (best supported ISA unless APT_FP4_CPU_ISA forces one).
CpuKernels cpu_kernels();

// Decode scales of row n: dst[b] = float32 decode scale of block b (docs/contract.md §3).
void row_decode_scales(const at::Tensor& scales, float tensor_scale, Format f, int64_t n, float* dst);

// The 16 code values of a format as float32.
inline const float* code_lut(Format f) { return f == Format::NF4 ? kNF4 : kE2M1; }

}  // namespace apt::fp4
