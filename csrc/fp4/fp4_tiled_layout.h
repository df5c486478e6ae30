// The tiled FP4 weight layout: a private copy of a packed weight in the order the CUDA GEMV
// (fp4_gemv_kernel_cuda.h) reads it, made once by fp4_tile (fp4_tile.cpp) from the canonical tensors
// of docs/contract.md §3, which stay the interchange format. Host and device code include this file;
// the packer and the kernel share every constant below.
//
// A weight [N, K] is cut into tiles of 16 rows (one mma.m16n8k16 A operand) and steps of 128
// columns. Each (tile, step) is 1024 contiguous bytes that one warp reads with two fully
// coalesced 16-byte loads per lane: lane L = 4g + t owns bytes [16L, 16L + 16) (words 0..3) and
// [512 + 16L, 512 + 16L + 16) (words 4..7). Word j feeds the j-th mma of the step: its four
// bf16x2 A registers a0..a3 are the pairs p = h + 2q of rows 16*tile + g + 8h at columns
// 128*step + 32*(j >> 1) + 8t + 4*(j & 1) + 2q + {0, 1} (the lower column in the lower half). So
// a lane's columns of a step are four chunks of 8 (chunk c = j >> 1 at 32c + 8t), and one
// 16-byte load of 16-bit x by the warp reads 64 contiguous bytes of each of its rows of x (one
// L1 wavefront per row; 32 contiguous columns per lane would touch two lines per row).
//
// nvfp4/mxfp4 codes are stored with their bits pre-placed for a shift-and-mask decode: after
// rotating word left by mag_rot(p), the magnitude bits (e1 e0 m) of pair p's lower code sit at
// bits 8..6 and of its upper code at bits 24..22; after rotating by sign_rot(p), the two sign
// bits sit at 15 and 31. Those bits form (value * 2^-126) as two bfloat16 (E2M1 placed in the
// bottom of the exponent field, subnormals included); one bfloat16 multiply by the pair's scale
// word restores the magnitude exactly (see kNvfp4ScaleBias / kMxfp4ScaleBias), and the constant
// left over is applied once to the float32 sum (`out_scale`). nf4 codes keep plain nibbles: pair
// p's lower code in nibble 2p, its upper code in nibble 2p + 1.
//
// Scales, per (tile, step): entries of the lanes' blocks, [row half h][the lane's blocks in column
// order], lanes that use the same blocks sharing an entry (scale_entry), so the scales take the
// bytes of the canonical format (nvfp4 and nf4 4.5 bits per weight in all, mxfp4 4.25):
//  nvfp4: 16 entries of 8 bytes, entry 2g + (t >> 1): blocks 2c + (t >> 1) (c = chunk), each the
//         E4M3 scale 2^E * (1 + m/8), E in [-9, 8], re-encoded as (E + 9) << 3 | m
//         (E4M3 subnormals normalised), so that (byte << 4) + (kNvfp4ScaleBias << 7) is the
//         bfloat16 of scale * 2^118.
//  mxfp4: 8 entries of 8 bytes, entry g: blocks c: e + c' with the block exponent e and a
//         per-weight constant c' chosen so that every byte is in [1, 127]; (byte + 127) << 7 is
//         the bfloat16 2^(e + c').
//  nf4:   8 entries of 4 floats, entry g: the absmax of blocks c >> 1 (64 columns).
#pragma once
#include <cstdint>

namespace apt::fp4::tiled {

constexpr int kTileRows = 16;     // weight rows per tile
constexpr int kStepCols = 128;    // columns (codes) per step
constexpr int kStepBytes = 1024;  // packed bytes of one (tile, step)
constexpr int kLanes = 32;

// Column, within a step, of the value that k-slot kk (0..15) of word j's A operand holds: the
// mma.m16n8k16 A fragment puts k-slot 2t + 8q + e of lane 4g + t in register pair h + 2q, value e,
// and the layout above stores the column 32 (j >> 1) + 8t + 4 (j & 1) + 2q + e there. Every
// operand B that meets these A registers (the GEMV's and the GEMM's x fragments, the wgmma GEMM's
// shared-memory core matrices) must hold the same column in its k-slot kk.
constexpr int a_fragment_column(int j, int kk) {
  return 32 * (j >> 1) + 8 * ((kk & 7) >> 1) + 4 * (j & 1) + 2 * (kk >> 3) + (kk & 1);
}

// Rotation (left) that brings pair p's magnitude / sign bits of a word to their bfloat16 places
// (four translates that tile the 32 bits; none exists with one rotation per pair).
constexpr int mag_rot(int p) { return 3 * p; }
constexpr int sign_rot(int p) { return p == 0 ? 4 : (p == 3 ? 5 : 3 * p); }
constexpr uint32_t kMagMask = 0x01C001C0u;   // bits 6..8 and 22..24
constexpr uint32_t kSignMask = 0x80008000u;  // bits 15 and 31

// Scale words: nvfp4 gives bfloat16(scale * 2^kNvfp4Shift); the kernel's sum is multiplied by
// tensor_scale * 2^(126 - kNvfp4Shift) at the end.
constexpr int kNvfp4Shift = 118;
constexpr uint32_t kNvfp4ScaleBias = 127 + kNvfp4Shift - 9;  // bfloat16 exponent of E = -9
constexpr int kNvfp4MinExp = -9;                            // smallest E4M3 exponent (subnormal 2^-9)
constexpr uint32_t kMxfp4ExpBias = 127;

// Scale entries per (tile, step), elements per entry, and the entry of lane `lane` (format ids of
// fp4_format.h: 0 nvfp4, 1 mxfp4, 2 nf4).
constexpr int scale_entries_per_step(int format_id) { return format_id == 0 ? 16 : 8; }
constexpr int scale_entry_elems(int format_id) { return format_id == 2 ? 4 : 8; }
constexpr int scale_entry(int format_id, int lane) { return format_id == 0 ? lane >> 1 : lane >> 2; }

// Position, in the stored 32-bit word, of bit `b` (0..3: m, e0, e1, sign) of the code that is
// half `hi` (0 lower, 1 upper) of pair p: the inverse of the kernel's rotations.
constexpr int stored_bit(int p, int hi, int b) {
  const int target = (b == 3 ? 15 : 6 + b) + 16 * hi;
  const int rot = b == 3 ? sign_rot(p) : mag_rot(p);
  return (target - rot + 32) % 32;
}

}  // namespace apt::fp4::tiled
