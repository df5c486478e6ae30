// The CPU tiled FP4 weight layout: a private copy of a packed weight in the order the AVX-512
// GEMV (fp4_cpu_kernels_avx512.cpp, tiled_dot) reads it, made once by apt::fp4_cpu_tile
// (fp4_cpu_tile.cpp) from the canonical tensors of docs/contract.md §3, which stay the
// interchange format. (The CUDA GEMV has its own layout, fp4_tiled_layout.h.)
//
// A weight [N, Kp] (Kp = K padded to the block) is cut into tiles of 16 rows. A row's packed
// bytes are read as 32-bit words (word j = bytes 4j..4j+3 = codes 8j..8j+7, code 8j + e in bits
// 4e..4e+3, as in the canonical layout); a tile stores, for every word index j, the 16 rows'
// words j side by side:
//   tiles    uint8 [ceil(N/16), Kp/8, 64]: bytes [t, j, 4r..4r+3] = word j of row 16t + r
//                                          (rows past N hold zeros),
//   tile_scales     [ceil(N/16), Kp/block, 16]: [t, b, r] = the scale of block b of row 16t + r
//                   (0 past N), nvfp4 and mxfp4 one byte in the encodings of fp4_tile_scales.h
//                   (the CUDA layout's bytes), nf4 the float32 absmax as stored,
//   out_scale float32 []: applied once per output: nvfp4 the tensor scale, mxfp4 2^(126 - c)
//                   (c: the encoding's shift), nf4 1.
// nvfp4 byte (E + 9) << 3 | m reads as float32 bits (byte << 20) + (118 << 23) = 2^E (1 + m/8)
// (blocks whose scale is zero have their codes zeroed, as in the CUDA layout); mxfp4 byte e + c
// in [1, 127] as (byte + 1) << 23 = 2^(e + c - 126), which is 2^e for the usual c = 126. A zext,
// a shift and an add per 16 scales.
// So one 64-byte load holds code 8j + e of 16 rows in bits 4e..4e+3 of its 16 dword lanes:
// shifting by 4e and one 16-entry vpermps lookup (it reads the low 4 index bits) decode 16
// weights of one column, which an FMA with that column's x (broadcast) adds to 16 row sums; each
// block's sums are scaled once. Memory: as the canonical format (nvfp4 and nf4 4.5 bits per
// weight, mxfp4 4.25).
#pragma once
#include <cstdint>

#include "fp4/fp4_tiled_layout.h"

namespace apt::fp4::cpu_tiled {

constexpr int64_t kTileRows = 16;   // weight rows per tile: one zmm of float32
constexpr int64_t kWordCodes = 8;   // codes per 32-bit word
constexpr int64_t kTileWordBytes = kTileRows * 4;  // bytes of one word index of a tile

// Scale byte -> float32 bits: (byte << scale_shift(block)) + scale_bias(block), for nvfp4 (blocks
// of 16) and mxfp4 (blocks of 32); nf4 (blocks of 64) stores float32.
constexpr int scale_shift(int64_t block) { return block == 16 ? 20 : 23; }
constexpr uint32_t scale_bias(int64_t block) {
  return block == 16 ? static_cast<uint32_t>(127 + tiled::kNvfp4MinExp) << 23 : 1u << 23;
}

// Software prefetch distance of the tile stream: 64 word rows (4 KiB) ahead. unsourced: a hand
// A/B on the Intel Xeon VM (benchmarks/fp4_cpu.py --quick, cold caches, 2 threads, 4096 x 4096,
// M = 1, AVX-512): nvfp4 1.06-1.09 ms without, 0.83-0.90 ms at 2 KiB to 16 KiB ahead.
constexpr int64_t kPrefetchWords = 64;

// Rows of x one tiled_dot call handles (x is decoded once per tile for all of them).
constexpr int64_t kMaxRows = 4;  // (8 was measured slower at M = 8: 2.6 against 2.1 ms at 4096 x 4096)

}  // namespace apt::fp4::cpu_tiled
