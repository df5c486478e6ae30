// CUDA kernel of apt::fp4_linear_tiled: out = x @ W.T * out_scale + bias for a weight in the
// tiled layout (fp4_tiled_layout.h), tuned for few rows of x (decoding: M <= 16 per launch
// row-block, any M by more blocks along x).
//
// The time of a small-M linear layer is the time to read its weight, so the kernel is built to
// keep many bytes in flight and spend few instructions per byte:
//  * each warp owns one tile (16 weight rows) and a contiguous range of its 128-column steps;
//    per step every lane loads 32 bytes of codes with two coalesced 16-byte loads (the warp reads
//    one contiguous KiB) plus its scales, S steps ahead of their use (a register ring);
//  * warps of a block share their k-range across RW tiles (x comes from L1 after the first) and
//    split K across KW warps, whose partial sums meet in shared memory: one launch, no atomics,
//    deterministic;
//  * nvfp4/mxfp4 codes decode with shift-and-mask into bfloat16 (value * 2^-126) and one paired
//    multiply by the scale word (exact); nf4 codes two at a time through a 256-entry table of
//    bfloat16 pairs in shared memory (one copy per lane: no bank conflicts) and one paired
//    multiply by the bfloat16 absmax; both feeding mma.m16n8k16 with the weights as A and 8 rows of x
//    as B; float16 / float32 x enter as 2 / 3 exact bfloat16 terms;
//  * x is read from global memory (L1) per step, double-buffered (or, a launch mode for tuning,
//    GemvConfig::xm, single-buffered for more blocks per multiprocessor); a lane's columns are
//    four chunks of 8 (fp4_tiled_layout.h), so each 16-byte x load of the warp reads 64
//    contiguous bytes per row of x.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <type_traits>

#include "fp4/fp4_decode_cuda.h"
#include "fp4/fp4_format.h"
#include "fp4/fp4_linear_cuda.h"
#include "fp4/fp4_mma_cuda.h"
#include "fp4/fp4_tiled_layout.h"

namespace apt::fp4::cuda {
namespace {

using namespace apt::fp4::tiled;

constexpr int kMaxWarps = 8;  // warps per block (RW * KW)
constexpr int kDefaultStages = 2;    // round-6 sweep: 2 stages as fast or faster than 4 at M = 1, 4, 16
constexpr int kMinStepsPerPart = 4;  // K parts keep at least this many steps each

// L2 eviction priority of the streamed weights and scales (GemvConfig::evict_first): a 64-bit
// cache policy (createpolicy) for the loads' L2::cache_hint. evict_first lets the weights, read
// once, replace each other in L2 instead of what else is there (a previous kernel's dirty output,
// activations, the KV cache), which would otherwise be written back or re-read.
__device__ __forceinline__ uint64_t l2_stream_policy(bool evict_first) {
  uint64_t policy;
  if (evict_first) {
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
  } else {
    asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(policy));
  }
  return policy;
}

// 16 bytes of streamed weights: read once, so they bypass L1. `volatile` keeps the load where the
// ring issues it (S steps before its use): the mma asm is volatile too, and without it the
// compiler may sink the load next to its first use, leaving one step's latency exposed.
__device__ __forceinline__ uint4 load_stream(const uint4* p, uint64_t policy) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(p), "l"(policy));
  return r;
}

// 16 bytes of x (kept in L1: the warps of a block read the same columns), issued in program order.
__device__ __forceinline__ uint4 load_x(const uint4* p) {
  uint4 r;
  asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
  return r;
}

// How a block reads x (GemvConfig::xm): 0 through L1, double-buffered half a step ahead; 1 the
// same with a single buffer loaded at each step, for more blocks per multiprocessor
// (min_blocks_per_sm).
constexpr int kXDoubleBuffer = 0, kXSingleBuffer = 1;

// A lane's scale entry of one step (fp4_tiled_layout.h), as loaded: nvfp4 / mxfp4 8 bytes (x: row
// g, y: row g + 8, byte c: the block of chunk c), nf4 four floats. (Issued in program order like
// load_stream.)
template <Format F>
struct LaneScales {
  uint2 raw;
  __device__ static LaneScales load(const void* base, int64_t idx, uint64_t policy) {
    uint2 r;
    asm volatile("ld.global.nc.L2::cache_hint.v2.u32 {%0, %1}, [%2], %3;"
                 : "=r"(r.x), "=r"(r.y)
                 : "l"(static_cast<const uint2*>(base) + idx), "l"(policy));
    return {r};
  }
};
template <>
struct LaneScales<Format::NF4> {
  float4 absmax;  // row g block 0, row g block 1, row g + 8 block 0, row g + 8 block 1
  __device__ static LaneScales load(const void* base, int64_t idx, uint64_t policy) {
    float4 r;
    asm volatile("ld.global.nc.L2::cache_hint.v4.f32 {%0, %1, %2, %3}, [%4], %5;"
                 : "=f"(r.x), "=f"(r.y), "=f"(r.z), "=f"(r.w)
                 : "l"(static_cast<const float4*>(base) + idx), "l"(policy));
    return {r};
  }
};

// bfloat16 pair (v, v) of scale byte `i` of `raw` (fp4_tiled_layout.h): nvfp4 scale * 2^118,
// mxfp4 2^(e + c'). The byte_perm and multiply-add of the four bytes of a row half are shared by
// the 8 words of a step (compile-time i).
template <Format F>
__device__ __forceinline__ uint32_t scale_word(uint32_t raw, int i) {
  const uint32_t v = __byte_perm(raw, 0u, 0x4040u | static_cast<uint32_t>(i) | (static_cast<uint32_t>(i) << 8));
  if constexpr (F == Format::NVFP4) {
    return v * 16u + (kNvfp4ScaleBias << 7) * 0x10001u;
  } else {
    return v * 128u + (kMxfp4ExpBias << 7) * 0x10001u;
  }
}

// Bits `M` of `w` rotated left by R. Where none of them wraps around (M has no bit below R) a plain
// shift does, which ptxas may issue on the FMA pipe (IMAD.SHL) rather than the ALU pipe (SHF): the
// decode's shifts and masks keep the ALU pipe the busiest (round-6 and round-7 ncu profiles).
template <int R, uint32_t M>
__device__ __forceinline__ uint32_t rot_masked(uint32_t w) {
  if constexpr (R == 0) {
    return w & M;
  } else if constexpr ((M & ((1u << R) - 1u)) == 0) {
    return (w << R) & M;
  } else {
    return __funnelshift_l(w, w, R) & M;
  }
}

// The bfloat16 pair (value * 2^-126) of pair P of a stored word.
template <int P>
__device__ __forceinline__ uint32_t pair_bits(uint32_t w) {
  constexpr int kMag = mag_rot(P), kSign = sign_rot(P);
  if constexpr (kMag == kSign) {
    return rot_masked<kMag, kMagMask | kSignMask>(w);
  } else {
    return rot_masked<kMag, kMagMask>(w) | rot_masked<kSign, kSignMask>(w);
  }
}

__device__ __forceinline__ uint32_t bf16_mul2(uint32_t a, uint32_t b) {
  const __nv_bfloat162 r =
      __hmul2(*reinterpret_cast<const __nv_bfloat162*>(&a), *reinterpret_cast<const __nv_bfloat162*>(&b));
  return *reinterpret_cast<const uint32_t*>(&r);
}

__device__ __forceinline__ uint32_t bf16_pack(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// x values of one step for one lane: its 32 columns (four chunks of 8, chunk c at column 32c + 8t
// of the step) of each of its MT rows, raw 16-byte loads. x rows are padded to whole steps and
// 16-byte aligned (the host sees to it), so every load is unconditional; a lane whose row is past
// M reads row M - 1: it only feeds output columns that are never written.
template <typename T, int MT>
struct XStep {
  static constexpr int kChunkLoads = static_cast<int>(sizeof(T)) / 2;  // 16-byte loads per chunk
  static constexpr int kLoads = 4 * kChunkLoads;
  uint4 v[MT][kLoads];
  // rows[i] + col0: the lane's first column (8t) of the step in row i.
  __device__ void load(const T* const (&rows)[MT], int64_t col0) {
#pragma unroll
    for (int i = 0; i < MT; ++i) {
      const uint4* p = reinterpret_cast<const uint4*>(rows[i] + col0);
#pragma unroll
      for (int c = 0; c < 4; ++c)
#pragma unroll
        for (int u = 0; u < kChunkLoads; ++u) v[i][c * kChunkLoads + u] = load_x(p + 2 * static_cast<int>(sizeof(T)) * c + u);
    }
  }
  // 32-bit word w (0..15 for 16-bit x: columns 2w, 2w+1 of the lane's; 0..31 for float32) of tile i.
  __device__ uint32_t word(int i, int w) const { return word_of(v[i][w / 4], w % 4); }
};

// acc[i] += A (decoded weights of mma j) x B (columns 4j .. 4j+3 of the lane's x block, tile i).
template <typename T, int MT>
__device__ __forceinline__ void mma_step(float (&acc)[MT][4], const uint32_t (&a)[4], const XStep<T, MT>& xs, int j) {
#pragma unroll
  for (int i = 0; i < MT; ++i) {
    if constexpr (std::is_same_v<T, at::BFloat16>) {
      MmaType<at::BFloat16>::mma(acc[i], a, xs.word(i, 2 * j), xs.word(i, 2 * j + 1));
    } else if constexpr (std::is_same_v<T, at::Half>) {
      uint32_t b0[2], b1[2];
      const uint32_t h0 = xs.word(i, 2 * j), h1 = xs.word(i, 2 * j + 1);
      const float2 f0 = __half22float2(*reinterpret_cast<const __half2*>(&h0));
      const float2 f1 = __half22float2(*reinterpret_cast<const __half2*>(&h1));
      split_bf16<2>(f0.x, f0.y, b0);
      split_bf16<2>(f1.x, f1.y, b1);
#pragma unroll
      for (int p = 0; p < 2; ++p) MmaType<at::BFloat16>::mma(acc[i], a, b0[p], b1[p]);
    } else {
      uint32_t b0[3], b1[3];
      split_bf16<3>(__uint_as_float(xs.word(i, 4 * j)), __uint_as_float(xs.word(i, 4 * j + 1)), b0);
      split_bf16<3>(__uint_as_float(xs.word(i, 4 * j + 2)), __uint_as_float(xs.word(i, 4 * j + 3)), b1);
#pragma unroll
      for (int p = 0; p < 3; ++p) MmaType<at::BFloat16>::mma(acc[i], a, b0[p], b1[p]);
    }
  }
}

// nf4's pair table in shared memory: entry b (a byte of two codes, low nibble first) is the
// bfloat16 pair (NF4[b & 15], NF4[b >> 4]); each lane has its own copy (entry b of lane l at word
// 32 b + l, in bank l), so a warp's 32 lookups never conflict.
constexpr int kNf4PairTableBytes = 256 * 32 * 4;
template <Format F>
constexpr int nf4_table_bytes() { return F == Format::NF4 ? kNf4PairTableBytes : 0; }

// All 8 mma of one step: words 0..3 in c0, 4..7 in c1 (fp4_tiled_layout.h). nf4_lane: this lane's
// copy of the nf4 pair table (nf4 only).
template <Format F, typename T, int MT>
__device__ __forceinline__ void step_math(const uint4& c0, const uint4& c1, const LaneScales<F>& sc,
                                          const XStep<T, MT>& xs, const uint32_t* nf4_lane, float (&acc)[MT][4]) {
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const uint32_t w = word_of(j < 4 ? c0 : c1, j & 3);
    uint32_t a[4];
    if constexpr (F == Format::NF4) {
      // Byte p holds pair p's two codes; pairs 0, 2 are row g, 1, 3 row g + 8; words 0..3 (chunks
      // 0, 1) use block 0, words 4..7 block 1.
      const float lo = j < 4 ? sc.absmax.x : sc.absmax.y, hi = j < 4 ? sc.absmax.z : sc.absmax.w;
      const uint32_t s_lo = bf16_pack(lo, lo), s_hi = bf16_pack(hi, hi);
#pragma unroll
      for (int p = 0; p < 4; ++p) {
        const uint32_t b = __byte_perm(w, 0u, 0x4440u | static_cast<uint32_t>(p));
        a[p] = bf16_mul2(nf4_lane[32 * b], (p & 1) ? s_hi : s_lo);
      }
    } else {
      // Pairs 0, 2 are row g, pairs 1, 3 row g + 8; word j is in chunk j >> 1, whose block's scale
      // is byte j >> 1 of each row half.
      const uint32_t s_lo = scale_word<F>(sc.raw.x, j >> 1), s_hi = scale_word<F>(sc.raw.y, j >> 1);
      a[0] = bf16_mul2(pair_bits<0>(w), s_lo);
      a[1] = bf16_mul2(pair_bits<1>(w), s_hi);
      a[2] = bf16_mul2(pair_bits<2>(w), s_lo);
      a[3] = bf16_mul2(pair_bits<3>(w), s_hi);
    }
    mma_step<T, MT>(acc, a, xs, j);
  }
}

template <typename T>
__device__ __forceinline__ float load_bias(const void* bias, int bias_type, int64_t row) {
  if (bias_type == 0) return __ldg(static_cast<const float*>(bias) + row);
  if (bias_type == 1) return __bfloat162float(static_cast<const __nv_bfloat16*>(bias)[row]);
  return __half2float(static_cast<const __half*>(bias)[row]);
}

struct GemvArgs {
  const void* x;       // [m, x_stride], x_stride = steps * 128 columns (zero past k), 16-byte aligned
  int64_t m, x_stride;
  const uint4* tiles;  // (tile, step) at tiles + tile * tile_stride + step * step_stride (16-byte units)
  int64_t tile_stride, step_stride;
  const void* scales;  // a lane's scales of (tile, step) at entry tile * sc_tile_stride + step * sc_step_stride +
                       // scale_entry(format, lane) (fp4_tiled_layout.h)
  int64_t sc_tile_stride, sc_step_stride;
  const float* out_scale;
  const void* bias;  // nullptr, or [n] of bias_type (0 float32, 1 bfloat16, 2 float16)
  int bias_type;
  void* out;
  int64_t n, n_tiles, steps, steps_per_part;
  int rw, kw;  // tiles per block, K parts per tile (warps per block = rw * kw)
  int m_blocks;  // blocks along x (8 * MT rows each)
  bool evict_first;  // weights and scales loaded with L2 evict_first (l2_stream_policy)
};

// Blocks per multiprocessor the registers must allow (__launch_bounds__): 2 for 8 rows of 16-bit
// x (128 registers), 3 with one x buffer (80); 16 rows: 2 with one x buffer.
template <typename T, int MT, int XM>
constexpr int min_blocks_per_sm() {
  if (sizeof(T) != 2) return 1;
  if (MT == 1) return XM == kXSingleBuffer ? 3 : 2;
  return XM == kXSingleBuffer ? 2 : 1;
}

// Grid ceil(n_tiles / rw) * m_blocks (m_blocks = ceil(m / (8 MT)), the x block varying fastest,
// so blocks that share weights run side by side and the later ones read them from L2), block
// 32 * rw * kw threads, dynamic shared memory nf4_table_bytes<F>() + (kw - 1) * rw *
// 32 * 4 * MT floats.
// Warp w: tile (blockIdx.x / m_blocks) * rw + w % rw, K part w / rw.
template <Format F, typename T, int MT, int S, int XM, bool kGelu>
__global__ void __launch_bounds__(kMaxWarps * 32, (min_blocks_per_sm<T, MT, XM>()))
    gemv_tiled_kernel(const GemvArgs args) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int rt = warp % args.rw, part = warp / args.rw;
  const int64_t m_block = blockIdx.x % args.m_blocks;
  const int64_t tile = static_cast<int64_t>(blockIdx.x / args.m_blocks) * args.rw + rt;
  // This warp's steps: [s_begin, s_begin + n_steps).
  const int64_t s_begin = part * args.steps_per_part;
  const int64_t n_steps =
      tile >= args.n_tiles || s_begin >= args.steps ? 0 : min(args.steps - s_begin, args.steps_per_part);
  const int64_t row_first = m_block * 8 * MT;  // the block's first row of x
  const int rows_here = static_cast<int>(min(static_cast<int64_t>(8 * MT), args.m - row_first));
  const T* xrows[MT];  // this lane's first column (8t) of its rows of x, at the warp's first step
#pragma unroll
  for (int i = 0; i < MT; ++i) {
    xrows[i] = static_cast<const T*>(args.x) + (row_first + min(g + 8 * i, rows_here - 1)) * args.x_stride + 8 * t;
  }
  // Dynamic shared memory: [nf4 pair table][K-part sums].
  extern __shared__ __align__(16) unsigned char dyn_smem[];
  const uint32_t* nf4_lane = reinterpret_cast<const uint32_t*>(dyn_smem) + lane;
  if constexpr (F == Format::NF4) {
    __shared__ float lut[16];
    load_nf4_lut(lut);
    __syncthreads();
    // 16-byte stores: the 32 lanes' copies of entry b are 8 consecutive uint4 of the same word.
    uint4* table = reinterpret_cast<uint4*>(dyn_smem);
    for (int i = threadIdx.x; i < kNf4PairTableBytes / 16; i += blockDim.x) {
      const int b = i >> 3;
      const uint32_t v = bf16_pack(lut[b & 15], lut[b >> 4]);
      table[i] = make_uint4(v, v, v, v);
    }
    __syncthreads();
  }

  float acc[MT][4];
#pragma unroll
  for (int i = 0; i < MT; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;

  // Running pointers: the next step to load (weights, scales) and this lane's x columns.
  static_assert(S % 2 == 0, "the x double buffer alternates with the step's parity");
  const uint4* wp = args.tiles + tile * args.tile_stride + s_begin * args.step_stride + lane;
  int64_t sp = tile * args.sc_tile_stride + s_begin * args.sc_step_stride + scale_entry(static_cast<int>(F), lane);
#pragma unroll
  for (int i = 0; i < MT; ++i) xrows[i] += s_begin * kStepCols;
  const uint64_t policy = l2_stream_policy(args.evict_first);
  uint4 c0[S], c1[S];
  LaneScales<F> sc[S];
#pragma unroll
  for (int i = 0; i < S; ++i) {
    if (i < n_steps) {
      c0[i] = load_stream(wp, policy);
      c1[i] = load_stream(wp + 32, policy);
      sc[i] = LaneScales<F>::load(args.scales, sp, policy);
    }
    wp += args.step_stride;
    sp += args.sc_step_stride;
  }

  // Step s of this warp's range uses ring slot i (= s % S). kChecked: s may be among the last
  // 2 S steps, so the next x and the ring refill are bounds-checked; other steps skip the tests.
  constexpr bool kXDouble = XM == kXDoubleBuffer;
  XStep<T, MT> xb[kXDouble ? 2 : 1];
  if (kXDouble && n_steps > 0) xb[0].load(xrows, 0);
  auto step = [&](auto checked, int i, int64_t s) {
    constexpr bool kChecked = decltype(checked)::value;
    if constexpr (kXDouble) {
      if (!kChecked || s + 1 < n_steps) xb[(i + 1) & 1].load(xrows, (s + 1) * kStepCols);
      step_math<F, T, MT>(c0[i], c1[i], sc[i], xb[i & 1], nf4_lane, acc);
    } else {
      xb[0].load(xrows, s * kStepCols);
      step_math<F, T, MT>(c0[i], c1[i], sc[i], xb[0], nf4_lane, acc);
    }
    if (!kChecked || s + S < n_steps) {
      c0[i] = load_stream(wp, policy);
      c1[i] = load_stream(wp + 32, policy);
      sc[i] = LaneScales<F>::load(args.scales, sp, policy);
    }
    wp += args.step_stride;
    sp += args.sc_step_stride;
  };
  int64_t base = 0;
  for (; base + 2 * S <= n_steps; base += S) {
#pragma unroll
    for (int i = 0; i < S; ++i) step(std::false_type{}, i, base + i);
  }
  for (; base < n_steps; base += S) {
#pragma unroll
    for (int i = 0; i < S; ++i) {
      if (base + i >= n_steps) break;
      step(std::true_type{}, i, base + i);
    }
  }

  // K parts 1.. hand their sums to part 0 through shared memory, in a fixed order.
  if (args.kw > 1) {
    // [(kw - 1) * rw][4 * MT][32], after the nf4 table
    float* partial = reinterpret_cast<float*>(dyn_smem + nf4_table_bytes<F>());
    if (part > 0) {
      float* dst = partial + ((part - 1) * args.rw + rt) * (4 * MT * 32) + lane;
#pragma unroll
      for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) dst[(4 * i + e) * 32] = acc[i][e];
    }
    __syncthreads();
    if (part == 0) {
      for (int p = 1; p < args.kw; ++p) {
        const float* src = partial + ((p - 1) * args.rw + rt) * (4 * MT * 32) + lane;
#pragma unroll
        for (int i = 0; i < MT; ++i)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[i][e] += src[(4 * i + e) * 32];
      }
    }
  }
  if (part != 0 || tile >= args.n_tiles) return;

  // C fragment: acc[i][0..1] = (row g, x rows 2t, 2t+1 of tile i), acc[i][2..3] = (row g + 8, same).
  const float scale = __ldg(args.out_scale);
#pragma unroll
  for (int i = 0; i < MT; ++i) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t row = tile * kTileRows + g + 8 * (e >> 1);
      const int64_t col = row_first + 8 * i + 2 * t + (e & 1);
      if (row >= args.n || col >= args.m) continue;
      float v = acc[i][e] * scale;
      if (args.bias != nullptr) v += load_bias<T>(args.bias, args.bias_type, row);
      if constexpr (kGelu) v = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
      static_cast<T*>(args.out)[col * args.n + row] = static_cast<T>(v);
    }
  }
}

// Launch shape: tiles per block (rw), K parts (kw), pipeline stages (s), x rows per block as
// tiles of 8 (mt: 1, 2, or 0 = 1 up to 8 rows of x, else 2), how x is read (xm: kXDoubleBuffer,
// kXSingleBuffer, or -1 = the heuristic's: single for 16-row blocks, else double).
struct GemvConfig {
  int rw, kw, s, mt, xm;
  bool balance;      // tiles per block chosen so the blocks spread evenly over the multiprocessors
  bool evict_first;  // weights and scales loaded with L2 evict_first (l2_stream_policy)
};

// APT_FP4_GEMV="rw,kw,stages[,mt[,xm[,balance[,evict_first]]]]" (read once) overrides the
// heuristic: for tuning sweeps. rw = kw = 0 keeps the heuristic's tiles per block and K parts
// (and its mt when mt is 0); xm -1 (the default) is the heuristic's; balance and evict_first
// default to 1. Stages
// other than the default, and xm = 1 with 8-row blocks, apply to nvfp4 with bfloat16 x only;
// other formats and x dtypes keep the defaults (launch_gemv).
bool env_config(GemvConfig& cfg) {
  static const char* env = std::getenv("APT_FP4_GEMV");
  if (env == nullptr || *env == '\0') return false;
  int rw = 0, kw = 0, s = 0, mt = 0, xm = -1, balance = 1, evict_first = 1;
  const int got = std::sscanf(env, "%d,%d,%d,%d,%d,%d,%d", &rw, &kw, &s, &mt, &xm, &balance, &evict_first);
  const bool shape_ok = (rw == 0 && kw == 0) || (rw >= 1 && kw >= 1 && rw * kw <= kMaxWarps);
  TORCH_CHECK_VALUE(got >= 3 && shape_ok && mt >= 0 && mt <= 2 &&
                        (xm == -1 || xm == kXDoubleBuffer || xm == kXSingleBuffer),
                    "APT_FP4_GEMV: expected 'rw,kw,stages[,mt[,xm[,balance[,evict_first]]]]' with rw * kw <= 8 "
                    "(or both 0), mt in 0..2 and xm -1, 0 or 1, got '", env, "'");
  cfg = {rw, kw, s, mt, xm, balance != 0, evict_first != 0};
  return true;
}

// Rows of x per block for GemvConfig::mt (float32 x always takes 8).
constexpr int x_rows_per_block(int mt, int64_t m) { return mt == 1 || (mt == 0 && m <= 8) ? 8 : 16; }

// About 16 warps per multiprocessor (each with a pipeline of loads in flight): K split only as far
// as each part keeps one pipeline's worth of steps. More than 8 rows of x: blocks of 16 rows (each
// weight decoded once for 16 rows) with one x buffer, so that two blocks of 8 warps fit a
// multiprocessor's registers (round-7 sweeps: at M = 16 the largest shape took 65.0 us this way,
// fp4_gemv_sweep_NVIDIA_H200_round7b.json, against 84.9 us with two 8-row blocks per tile,
// round7a).
GemvConfig choose_config(Format f, int64_t m, int64_t n_tiles, int64_t steps, int sms) {
  // nf4 fills its 32 KB pair table once per block: it keeps blocks of 8 warps (with balance, the
  // 2-warp blocks of 14336 x 4096 ran nf4 at 1.21x bf16 against nvfp4's 2.22x in
  // fp4_linear_NVIDIA_H200.json of the round-6 session, and at 1.55x against 2.23x unbalanced in
  // fp4_gemv_sweep_NVIDIA_H200_round8a.json).
  GemvConfig cfg{0, 0, kDefaultStages, 0, -1, f != Format::NF4, true};
  const bool from_env = env_config(cfg);
  const int64_t rows = x_rows_per_block(cfg.mt, m), m_blocks = (m + rows - 1) / rows;
  if (cfg.xm < 0) cfg.xm = rows == 16 ? kXSingleBuffer : kXDoubleBuffer;
  if (from_env && cfg.rw > 0) return cfg;
  const int64_t max_kw = std::max<int64_t>(1, std::min<int64_t>(steps / kMinStepsPerPart, kMaxWarps));
  // K parts: the largest power of two up to the warps wanted per tile (round 2's sweep: e.g.
  // 896 tiles -> kw 2 beat kw 3 or 4).
  const int64_t want = (int64_t{16} * sms + n_tiles * m_blocks - 1) / (n_tiles * m_blocks);
  cfg.kw = 1;
  while (cfg.kw * 2 <= want && cfg.kw * 2 <= max_kw) cfg.kw *= 2;
  cfg.rw = kMaxWarps / cfg.kw;
  // On by default: on the round-6 sweep (fp4_gemv_sweep_NVIDIA_H200_round6.json) it took the
  // largest shape at M = 1 from 50.4 to 45.6 us and changed the others by at most a few percent.
  if (cfg.balance) {
    // The busiest multiprocessor gets ceil(blocks / sms) blocks of rw tiles each: take the rw
    // that gives it the fewest tiles (ties: the larger block). E.g. 1792 tiles on 132 SMs:
    // rw 8 -> 2 blocks of 8 = 16 tiles, rw 7 -> 2 blocks of 7 = 14 (the even share is 13.6).
    int64_t best = std::numeric_limits<int64_t>::max();
    for (int rw = kMaxWarps / cfg.kw; rw >= 1; --rw) {
      const int64_t blocks = (n_tiles + rw - 1) / rw * m_blocks;
      const int64_t busiest = (blocks + sms - 1) / sms * rw;
      if (busiest < best) {
        best = busiest;
        cfg.rw = rw;
      }
    }
  }
  return cfg;
}

template <Format F, typename T, int MT, bool kGelu>
void launch_gemv(GemvArgs args, GemvConfig cfg, dim3 grid, cudaStream_t stream) {
  const int threads = 32 * cfg.rw * cfg.kw;
  const int64_t partial_bytes = cfg.kw > 1 ? sizeof(float) * (cfg.kw - 1) * cfg.rw * 32 * 4 * MT : 0;
  // Launch modes other than the defaults (2 stages; 8-row blocks double-buffered, 16-row blocks
  // either) are built for the tuning sweep of nvfp4 / bfloat16 only.
  constexpr bool kSweep = F == Format::NVFP4 && std::is_same_v<T, at::BFloat16> && !kGelu;
  if (!kSweep) {
    if (MT == 1) cfg.xm = kXDoubleBuffer;
    cfg.s = kDefaultStages;
  }
  const size_t smem = static_cast<size_t>(nf4_table_bytes<F>() + partial_bytes);
  auto go = [&](auto kernel) {
    if (smem > 48 * 1024) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    }
    kernel<<<grid, threads, smem, stream>>>(args);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (cfg.s == kDefaultStages && cfg.xm == kXDoubleBuffer) {
    go(gemv_tiled_kernel<F, T, MT, kDefaultStages, kXDoubleBuffer, kGelu>);
    return;
  }
  if constexpr (MT == 2) {
    if (cfg.s == kDefaultStages) {
      go(gemv_tiled_kernel<F, T, MT, kDefaultStages, kXSingleBuffer, kGelu>);
      return;
    }
  }
  if constexpr (kSweep) {
    auto with_xm = [&](auto s_c) {
      constexpr int S = decltype(s_c)::value;
      if (cfg.xm == kXDoubleBuffer) {
        go(gemv_tiled_kernel<F, T, MT, S, kXDoubleBuffer, kGelu>);
      } else {
        go(gemv_tiled_kernel<F, T, MT, S, kXSingleBuffer, kGelu>);
      }
    };
    if (cfg.s == 2) {
      with_xm(std::integral_constant<int, 2>{});
      return;
    }
    if (cfg.s == 4) {
      with_xm(std::integral_constant<int, 4>{});
      return;
    }
  }
  TORCH_CHECK_VALUE(false, "APT_FP4_GEMV: stages must be 2 or 4");
}

at::Tensor fp4_linear_tiled_cuda(const at::Tensor& x, const at::Tensor& tiles_in, const at::Tensor& scales_in,
                                 const at::Tensor& out_scale, const c10::optional<at::Tensor>& bias,
                                 const std::string& fmt, int64_t n, int64_t k, bool gelu) {
  const Format f = check_tiled_weight(tiles_in, scales_in, out_scale, fmt, n, k);
  check_tiled_linear_args(x, tiles_in, bias, n, k);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor x2 = x.reshape({-1, k}).contiguous();
  const int64_t m = x2.size(0);
  auto out_sizes = x.sizes().vec();
  out_sizes.back() = n;
  at::Tensor out = at::empty({m, n}, x.options());
  if (m == 0) return out.view(out_sizes);
  // The kernel reads x in whole 16-byte-aligned steps of 128 columns: pad a K that is not a
  // multiple of 128 with zeros (one small copy; common layer widths need none).
  const int64_t x_stride = tiles_in.size(1) * kStepCols;
  if (x_stride != k || reinterpret_cast<uintptr_t>(x2.const_data_ptr()) % 16 != 0) {
    at::Tensor padded = at::zeros({m, x_stride}, x2.options());
    padded.narrow(1, 0, k).copy_(x2);
    x2 = padded;
  }
  // Tiles and scales may be any view whose per-(tile, step) block is contiguous (fp4_tile makes
  // them tile-major; a step-major copy is read in its own order).
  const int64_t entry_elems = scales_in.size(3);
  const bool inner_dense = tiles_in.stride(2) == 1 && scales_in.stride(3) == 1 &&
                           scales_in.stride(2) == entry_elems && tiles_in.stride(0) % 16 == 0 &&
                           tiles_in.stride(1) % 16 == 0 && scales_in.stride(0) % entry_elems == 0 &&
                           scales_in.stride(1) % entry_elems == 0;
  const at::Tensor tiles = inner_dense ? tiles_in : tiles_in.contiguous();
  const at::Tensor scales = inner_dense ? scales_in : scales_in.contiguous();
  at::Tensor bias_c;
  if (bias.has_value()) bias_c = bias->contiguous();

  GemvArgs args{};
  args.x = x2.const_data_ptr();
  args.m = m;
  args.x_stride = x_stride;
  args.tiles = static_cast<const uint4*>(tiles.const_data_ptr());
  args.tile_stride = tiles.stride(0) / 16;
  args.step_stride = tiles.stride(1) / 16;
  args.scales = scales.const_data_ptr();
  args.sc_tile_stride = scales.stride(0) / entry_elems;
  args.sc_step_stride = scales.stride(1) / entry_elems;
  args.out_scale = out_scale.const_data_ptr<float>();
  args.bias = bias.has_value() ? bias_c.const_data_ptr() : nullptr;
  args.bias_type = !bias.has_value() || bias_c.scalar_type() == at::kFloat ? 0
                   : (bias_c.scalar_type() == at::kBFloat16 ? 1 : 2);
  args.out = out.mutable_data_ptr();
  args.n = n;
  args.n_tiles = tiles.size(0);
  args.steps = tiles.size(1);

  const GemvConfig cfg = choose_config(f, m, args.n_tiles, args.steps, sm_count(x.get_device()));
  args.rw = cfg.rw;
  args.kw = cfg.kw;
  args.evict_first = cfg.evict_first;
  args.steps_per_part = (args.steps + cfg.kw - 1) / cfg.kw;
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t tile_blocks = (args.n_tiles + cfg.rw - 1) / cfg.rw;

  dispatch_format(f, [&](auto fc) {
    constexpr Format F = decltype(fc)::value;
    auto by_rows = [&](auto t_c) {
      using T = decltype(t_c);
      auto go = [&](auto mt_c) {
        constexpr int MT = decltype(mt_c)::value;
        args.m_blocks = static_cast<int>((m + 8 * MT - 1) / (8 * MT));
        TORCH_CHECK_VALUE(tile_blocks * args.m_blocks < (int64_t{1} << 31),
                          "fp4_linear_tiled: too many rows of x for one launch; split x");
        const dim3 grid(static_cast<unsigned>(tile_blocks * args.m_blocks));
        gelu ? launch_gemv<F, T, MT, true>(args, cfg, grid, stream)
             : launch_gemv<F, T, MT, false>(args, cfg, grid, stream);
      };
      if constexpr (std::is_same_v<T, float>) {  // float32 x: 8 rows per block (registers)
        go(std::integral_constant<int, 1>{});
      } else if (x_rows_per_block(cfg.mt, m) == 8) {
        go(std::integral_constant<int, 1>{});
      } else {
        go(std::integral_constant<int, 2>{});
      }
    };
    if (x.scalar_type() == at::kBFloat16) {
      by_rows(at::BFloat16{});
    } else if (x.scalar_type() == at::kHalf) {
      by_rows(at::Half{});
    } else {
      by_rows(float{});
    }
  });
  return out.view(out_sizes);
}

}  // namespace

TORCH_LIBRARY_IMPL(apt, CUDA, m) { m.impl("fp4_linear_tiled", &fp4_linear_tiled_cuda); }

}  // namespace apt::fp4::cuda
